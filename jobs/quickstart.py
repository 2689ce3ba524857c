"""``kdaliens-quickstart``: the main job on the embedded MovieLens-100K, end to end.

    kdaliens-quickstart [--out quickstart] [--force] [--users 3] [--runs 500] [--tiny]

Steps (each one's output is kept, so a rerun or a crash resumes where it stopped):

1. **train**: teacher, plain student, distilled student, int8 student
   (``kdaliens-train``; ``DIR/run/``).
2. **export**: the int8 student to ExecuTorch, ONNX and LiteRT, each through the
   parity gate (``kdaliens-export``; ``DIR/bundles/<target>/``).
3. **profile**: every bundle with ``kdaliens-profile`` on 10/100/500 candidates, one
   thread, SQLite stores; the teacher and the fp32 student in eager PyTorch on real
   requests of the same sizes (``DIR/profiles/*.json``).
4. **demo**: reranks the candidates of a few real users through the SDK (the
   ExecuTorch bundle, SQLite item cache and behaviour log) and prints them next to what
   each user did next (``DIR/demo.json``).
5. **report**: ``DIR/report.json``, ``DIR/report.md`` and the plots
   ``DIR/accuracy.png``, ``DIR/latency.png``, ``DIR/training.png``.

A step is reused when its inputs did not change (same run metrics, same bundle hash);
timings are reused only all together (when any must be redone, every row is timed
again, so ratios in the report come from one sitting); ``--force`` redoes everything. Exit codes: 0 done; 1 a step failed (the others still
ran, the report says which); 2 bad arguments or a bad environment.

``report.json`` (``schema`` ``"kdaliens-quickstart/1"``)::

    schema, created, command, data, device {platform, machine, python, cpu_count},
    versions {kdaliens, torch, executorch, onnxruntime, ai_edge_litert},
    metrics {model: {ctr {auc, gauc, logloss}, ranking {hr@10, ndcg@10},
                     ranking_full {hr@10, ndcg@10, users}, params, size_bytes}},
    bundles {target: {path, quantization, model_file, model_bytes, bundle_bytes,
                      parity {max_abs_diff, auc_reference, auc_exported, ...}}},
    latency: [{model ("teacher"|"student"), backend ("torch"|"executorch"|"onnxruntime"|"litert"),
               quantization ("none"|"int8"), candidates, p50_us, p99_us,
               sdk_p50_us, sdk_p99_us (bundles only: the whole Ranker.rerank path)}],
    speedup_at_100 {backend: teacher p50 / student p50},
    checks: [{name, value, target, met}],
    demo: [{user, n_history, next {item_id, title, rating}, next_rank, n_candidates, top [...]}],
    steps {name: {seconds, reused}}, failures: [{step, error}]

``p50_us``/``p99_us`` are the model call alone (inputs already encoded): the number to
compare across models. ``sdk_*`` adds the store reads, encoding and sort.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdaliens.sdk.bundle import Bundle, sha256_file
from kdaliens.sdk.errors import KdaliensError
from kdaliens.sdk.extras import help_text
from kdaliens.training.pipeline import MODELS, write_json
from kdaliens.training.quiet import add_output_flags, tool_log

from .plots import plot_accuracy, plot_latency, plot_training
from .report import _fmt, bundle_summary, checks, format_demo, format_report_md, latency_rows

SCHEMA = "kdaliens-quickstart/1"
DATA = "movielens-100k"
TARGETS = ("executorch", "onnx", "litert")
CANDIDATES = (10, 100, 500)
DEFAULT_OUT = "quickstart"
DEFAULT_RUNS = 500
DEFAULT_USERS = 3
TEACHER_REPEATS = 200


# ------------------------------------------------------------------------------ helpers
def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _stored(path: Path, key: dict, force: bool) -> Any:
    """The JSON at ``path`` when it was made from the same inputs (``key``), else None."""
    if force:
        return None
    try:
        d = _read(path)
    except (OSError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) and d.get("quickstart_key") == key else None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("kdaliens", "torch", "executorch", "onnxruntime", "ai-edge-litert"):
        try:
            out[name.replace("-", "_")] = version(name)
        except PackageNotFoundError:
            out[name.replace("-", "_")] = None
    return out


def _device() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}


class Steps:
    """Runs the named steps, times them, and keeps going after a failure."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.total, self.log = total, log
        self.timings: dict[str, dict[str, Any]] = {}
        self.failures: list[dict[str, str]] = []

    def run(self, stage: int, name: str, fn: Callable[[], tuple[Any, bool]], title: str) -> Any:
        self.log(f"\n[quickstart {stage}/{self.total}] {title}")
        t0 = time.perf_counter()
        try:
            value, reused = fn()
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one failed step must not lose the others' work
            self.failures.append({"step": name, "error": f"{type(e).__name__}: {e}"})
            self.log(f"[quickstart] {name} FAILED: {type(e).__name__}: {e}")
            if not isinstance(e, KdaliensError):
                self.log(traceback.format_exc())
            value, reused = None, False
        self.timings[name] = {"seconds": round(time.perf_counter() - t0, 1), "reused": reused}
        return value


# ------------------------------------------------------------------------------ steps
def train_step(out: Path, config, force: bool, log: Callable[[str], None]) -> tuple[dict, bool]:
    from kdaliens.training.pipeline import run

    run_dir = out / "run"
    before = _read(run_dir / "metrics.json")
    metrics = run(DATA, run_dir, config, force=force, log=log)
    return metrics, before == metrics and all(m in metrics for m in MODELS)


def export_step(run_dir: Path, bundle_dir: Path, target: str, force: bool, parity_limit: int | None,
                log: Callable[[str], None]) -> tuple[dict, bool]:
    """Export one target, or reuse a verified bundle made from the same run."""
    from kdaliens.export.api import export_bundle

    metrics = _read(run_dir / "metrics.json")
    if not force and (bundle_dir / "manifest.json").exists():
        try:
            b = Bundle.load(bundle_dir)
            if b.manifest.get("source", {}).get("metrics") == metrics and b.manifest.get("quantization") == "int8":
                log(f"[export] reusing {bundle_dir} (verified; made from this run); --force re-exports")
                return b.manifest, True
        except KdaliensError as e:
            log(f"[export] {bundle_dir} is not reusable ({e}); exporting again")
    return export_bundle(run_dir, target, bundle_dir, quantize="int8", parity_limit=parity_limit, log=log,
                         debug=True), False


def _bundle_profile_key(bundle_dir: Path, candidates: Sequence[int], runs: int) -> dict:
    m = json.loads((bundle_dir / "manifest.json").read_text())
    return {"model_sha256": m["artifacts"][m["model_file"]], "candidates": list(candidates), "runs": runs}


def _torch_profile_key(run_dir: Path, candidates: Sequence[int], repeats: int) -> dict:
    return {"teacher_sha256": sha256_file(run_dir / "teacher.pt"), "student_sha256": sha256_file(run_dir / "student_kd.pt"),
            "candidates": list(candidates), "repeats": repeats}


def profiles_current(out: Path, targets: Sequence[str], candidates: Sequence[int], runs: int,
                     teacher_repeats: int) -> bool:
    """Whether every stored timing (each bundle's and eager torch's) is still current.

    The report compares latencies as ratios, so its rows must come from one sitting on
    this machine: when any of them has to be redone, all are.
    """
    prof = out / "profiles"
    try:
        keys = [(prof / f"{t}.json", _bundle_profile_key(out / "bundles" / t, candidates, runs)) for t in targets]
        keys.append((prof / "torch.json", _torch_profile_key(out / "run", candidates, teacher_repeats)))
    except (OSError, json.JSONDecodeError, KeyError):
        return False
    return all(_stored(path, key, False) is not None for path, key in keys)


def profile_step(bundle_dir: Path, path: Path, candidates: Sequence[int], runs: int, force: bool,
                 log: Callable[[str], None]) -> tuple[dict, bool]:
    from kdaliens.sdk.profile import format_profile, profile_bundle

    key = _bundle_profile_key(bundle_dir, candidates, runs)
    old = _stored(path, key, force)
    if old is not None:
        log(f"[profile] reusing {path}")
        return old, True
    p = profile_bundle(bundle_dir, candidates=candidates, threads=1, runs=runs, store="sqlite", progress=True)
    log(format_profile(p, top=6))
    p["quickstart_key"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, p)
    return p, False


def torch_step(run_dir: Path, path: Path, candidates: Sequence[int], repeats: int, force: bool,
               log: Callable[[str], None]) -> tuple[dict, bool]:
    """Eager PyTorch: the teacher (as served on the server) and the fp32 student."""
    import torch

    from kdaliens.export.exportable import load_exportable
    from kdaliens.export.latency import eager_student_fn, run_prepared, student_requests_for, time_calls, time_teacher

    key = _torch_profile_key(run_dir, candidates, repeats)
    old = _stored(path, key, force)
    if old is not None:
        log(f"[profile] reusing {path}")
        return old, True
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from tqdm.auto import tqdm

        exp = load_exportable(run_dir, "none")
        prep = run_prepared(run_dir, exp.config)
        with tqdm(total=2 * len(candidates), desc="eager torch", unit="size", file=sys.stderr,
                  disable=not sys.stderr.isatty()) as bar:  # a bar in a log file is noise
            teacher = time_teacher(run_dir, candidates, repeats=repeats, prep=prep, progress=bar.update)
            student = []
            fn = eager_student_fn(exp)
            for n in candidates:
                reqs = student_requests_for(prep, exp, n)
                student.append({"candidates": int(n), **time_calls(fn, reqs, repeats, warmup=50)})
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
    res = {"threads": 1, "repeats": repeats, "teacher": teacher, "student": student, "quickstart_key": key}
    for name, rows in (("teacher", teacher), ("student fp32", student)):
        log(f"[profile] {name} eager torch: " + ", ".join(f"{r['candidates']} cands p50 {r['p50_us']:.0f} us"
                                                          for r in rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, res)
    return res, False


def demo_step(run_dir: Path, bundle_dir: Path, n_users: int, log: Callable[[str], None], k: int = 10,
              seed: int = 0) -> tuple[list[dict], bool]:
    """Rerank real users' candidates through the SDK; compare with what they did next.

    Candidates are the ranking protocol's: the item each user interacted with next (held
    out from training) among 100 items they never touched. The device state is built
    the way an app builds it: every item into an ``ItemCache``, the user's past
    events into a ``BehaviorLog``, both in one SQLite file.
    """
    from kdaliens.export.latency import run_prepared
    from kdaliens.sdk import BehaviorLog, ItemCache, Ranker
    from kdaliens.training.config import RunConfig
    from kdaliens.training.data import load_dataset
    from kdaliens.training.data.preprocess import event_tokens

    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    prep = run_prepared(run_dir, cfg)
    ds = load_dataset(DATA)
    r = prep.rank["test"]
    rng = np.random.default_rng(seed)
    # Users with some history, so the sampler has both a short and a long part to draw.
    pool = np.flatnonzero(r["n_past"] >= 40)
    rows = np.sort(rng.choice(pool if len(pool) >= n_users else np.arange(len(r["user"])),
                              size=min(n_users, len(r["user"])), replace=False))
    titles = movie_titles()

    def title(i: str) -> str:
        return titles.get(i, "")

    ranker = Ranker.load(bundle_dir)
    users = {str(u): rec for u, rec in zip(ds.users.user_id, ds.users.to_dict("records"))}
    inter = ds.interactions.assign(event=event_tokens(ds))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "device.db"
        cache, blog = ItemCache(db), BehaviorLog(db)
        cache.upsert(ds.items.to_dict("records"))
        for row in rows:
            uid = str(prep.user_ids[r["user"][row]])
            cands = [str(x) for x in prep.item_ids[r["items"][row]]]
            nxt, now = cands[0], float(r["ts"][row])
            mine = inter[inter.user_id == uid]
            blog.extend({"user_id": uid, "item_id": e.item_id, "event": e.event, "ts": float(e.timestamp)}
                        for e in mine.itertuples())
            feats = {c: v for c, v in users.get(uid, {}).items() if c != "user_id"}
            order = np.random.default_rng(seed + int(row)).permutation(len(cands))  # hide the answer's position
            shuffled = [cands[j] for j in order]
            ranked = ranker.rerank(uid, shuffled, cache=cache, log=blog, user_features=feats, now=now)
            ids = [i for i, _ in ranked]
            past = blog.events(uid, before=now)
            nxt_row = mine[(mine.item_id == nxt)]
            rating = nxt_row.rating.iloc[0] if len(nxt_row) else None
            out.append({
                "user": uid, "n_history": len(past), "now": now,
                "recent": [{"item_id": e["item_id"], "title": title(e["item_id"]), "event": e["event"]}
                           for e in past[-3:]],
                "next": {"item_id": nxt, "title": title(nxt),
                         "rating": None if rating is None or not np.isfinite(rating) else float(rating)},
                "next_rank": ids.index(nxt) + 1, "n_candidates": len(ids),
                "top": [{"item_id": i, "title": title(i), "score": round(s, 4)} for i, s in ranked[:k]],
                "latency_us": {x: round(ranked.meta[x], 1) for x in ("encode_us", "model_us", "total_us")},
                "backend": ranked.meta["backend"],
            })
            log(format_demo(out[-1]))
        cache.close()
        blog.close()
    return out, False


def movie_titles() -> dict[str, str]:
    """Item id -> title of the embedded MovieLens-100K (titles are not a model feature)."""
    from kdaliens.training.data.loaders import embedded_path, read_atomic

    df, _ = read_atomic(embedded_path(DATA) / "ml-100k.item")
    return dict(zip(df["item_id"].astype(str), df["movie_title"].astype(str)))


def run_quickstart(out: str | Path = DEFAULT_OUT, force: bool = False, config=None, n_users: int = DEFAULT_USERS,
                   runs: int = DEFAULT_RUNS, candidates: Sequence[int] = CANDIDATES,
                   teacher_repeats: int = TEACHER_REPEATS, parity_limit: int | None = None,
                   command: str = "kdaliens-quickstart", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole job into ``out`` and return the report (also written to disk)."""
    from kdaliens.training.config import RunConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    steps = Steps(5, log)
    run_dir = out / "run"
    metrics = steps.run(1, "train", lambda: train_step(out, config or RunConfig(), force, log),
                        f"train the teacher and three students on {DATA} -> {run_dir}") or {}
    manifests: dict[str, dict] = {}
    profiles: dict[str, dict] = {}
    torch_res = demo = None
    if all(m in metrics for m in MODELS):
        for t in TARGETS:
            m = steps.run(2, f"export {t}", lambda t=t: export_step(run_dir, out / "bundles" / t, t, force,
                                                                     parity_limit, log),
                          f"export the int8 student to {t} -> {out / 'bundles' / t}")
            if m:
                manifests[t] = m
        prof = out / "profiles"
        retime = force or not profiles_current(out, list(manifests), candidates, runs, teacher_repeats)
        for t in manifests:
            p = steps.run(3, f"profile {t}", lambda t=t: profile_step(out / "bundles" / t, prof / f"{t}.json",
                                                                       candidates, runs, retime, log),
                          f"profile the {t} bundle on {', '.join(map(str, candidates))} candidates")
            if p:
                profiles[t] = p
        torch_res = steps.run(3, "profile torch", lambda: torch_step(run_dir, prof / "torch.json", candidates,
                                                                      teacher_repeats, retime, log),
                              "time the teacher and the fp32 student in eager PyTorch")
        if "executorch" in manifests:
            demo = steps.run(4, "demo", lambda: demo_step(run_dir, out / "bundles" / "executorch", n_users, log),
                             "rerank real users' candidates through the SDK")
    else:
        log("[quickstart] training did not finish: nothing to export, profile or demo")
    rep: dict[str, Any] = {}

    def report() -> tuple[dict, bool]:
        rows = latency_rows(torch_res, profiles)
        bundles = bundle_summary(out, manifests)
        speedup, chk = checks(rows, bundles)
        rep.update({
            "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command, "data": DATA,
            "device": _device(), "versions": _versions(),
            "metrics": {k: {x: metrics[k][x] for x in ("ctr", "ranking", "ranking_full", "params", "size_bytes")
                                     if x in metrics[k]}
                        for k in MODELS if k in metrics},
            "bundles": bundles, "latency": rows, "speedup_at_100": speedup, "checks": chk, "demo": demo or [],
            "steps": steps.timings, "failures": steps.failures,
        })
        plots = []
        try:
            if rep["metrics"]:
                plots.append(plot_accuracy(rep["metrics"], out / "accuracy.png"))
            if rows:
                plots.append(plot_latency(rows, out / "latency.png"))
            hist = _read(run_dir / "history.json")
            if hist:
                plots.append(plot_training(hist, out / "training.png"))
        except ImportError as e:
            log(f"[report] no plots: matplotlib does not import ({e})")
        rep["plots"] = [p.name for p in plots]
        return rep, False

    steps.run(5, "report", report, f"write {out / 'report.json'}, report.md and the plots")
    if rep:
        # Written after the step so that the report holds its own step's time too.
        rep["steps"] = steps.timings
        rep["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(out / "report.json", rep)
        (out / "report.md").write_text(format_report_md(rep))
        log("")
        for c in rep["checks"]:
            log(f"[check] {'ok  ' if c['met'] else 'MISS'} {c['name']}: "
                f"{_fmt(c['value'], 5 if 'parity' in c['name'] else 1)} (target {c['target']})")
    log(f"[quickstart] done in {time.perf_counter() - t0:.0f}s: {out / 'report.md'}")
    return rep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdaliens-quickstart", description=help_text(__doc__, stop="``report.json`` (``schema``"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="redo every step, even those whose output is current")
    p.add_argument("--users", type=int, default=DEFAULT_USERS, help=f"users in the demo (default {DEFAULT_USERS})")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                   help=f"timed runs per candidate count when profiling bundles (default {DEFAULT_RUNS})")
    p.add_argument("--tiny", action="store_true",
                   help="a smoke run in a few minutes: tiny models, parity on 200 requests, fewer timed runs")
    add_output_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.users < 1 or args.runs < 1:
        print("kdaliens-quickstart: error: --users and --runs must be >= 1", file=sys.stderr)
        return 2
    from kdaliens.training.config import RunConfig, tiny_config

    cmd = "kdaliens-quickstart " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        rep = run_quickstart(args.out, force=args.force, config=tiny_config() if args.tiny else RunConfig(),
                             n_users=args.users, runs=min(args.runs, 50) if args.tiny else args.runs,
                             teacher_repeats=20 if args.tiny else TEACHER_REPEATS,
                             parity_limit=200 if args.tiny else None, command=cmd.strip(),
                             log=tool_log(args.quiet, keep=("[quickstart] done", "[check]")))
    except KdaliensError as e:
        print(f"kdaliens-quickstart: error: {e}", file=sys.stderr)
        return 2
    return 1 if not rep or rep["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
