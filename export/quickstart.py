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
from kdaliens.training.pipeline import MODELS, write_json

SCHEMA = "kdaliens-quickstart/1"
DATA = "movielens-100k"
TARGETS = ("executorch", "onnx", "tflite")
CANDIDATES = (10, 100, 500)
DEFAULT_OUT = "quickstart"
DEFAULT_RUNS = 500
DEFAULT_USERS = 3
TEACHER_REPEATS = 200
BAR_CANDIDATES = 100
BAR_SPEEDUP = 10.0
BAR_P50_US = 300.0


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
    return export_bundle(run_dir, target, bundle_dir, quantize="int8", parity_limit=parity_limit, log=log), False


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
        with tqdm(total=2 * len(candidates), desc="eager torch", unit="size", file=sys.stderr) as bar:
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
    from kdaliens.sdk import BehaviorLog, ItemCache, Ranker
    from kdaliens.training.config import RunConfig
    from kdaliens.training.data import load_dataset
    from kdaliens.training.data.preprocess import event_tokens

    from .latency import run_prepared

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


def format_demo(d: dict) -> str:
    lines = [f"user {d['user']} ({d['n_history']} past events; latest: "
             + "; ".join(e["title"] or e["item_id"] for e in d["recent"]) + ")"]
    for j, t in enumerate(d["top"], 1):
        mark = "  <- watched next" if t["item_id"] == d["next"]["item_id"] else ""
        lines.append(f"  {j:>2}. {t['title'] or t['item_id']:<48.48} {t['score']:>8.3f}{mark}")
    rating = d["next"]["rating"]
    lines.append(f"  what they did next: {d['next']['title'] or d['next']['item_id']}"
                 + (f" (rated {rating:g})" if rating is not None else "")
                 + f"; the model put it at {d['next_rank']} of {d['n_candidates']}"
                 + f"  [{d['backend']}, {d['latency_us']['total_us'] / 1e3:.2f} ms]")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ report
def latency_rows(torch_res: dict | None, profiles: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    if torch_res:
        for model, quant in (("teacher", "none"), ("student", "none")):
            for r in torch_res[model]:
                rows.append({"model": model, "backend": "torch", "quantization": quant, "candidates": r["candidates"],
                             "p50_us": round(r["p50_us"], 1), "p99_us": round(r["p99_us"], 1)})
    for p in profiles.values():
        for r in p["rows"]:
            rows.append({"model": "student", "backend": p["backend"], "quantization": p["quantization"],
                         "candidates": r["candidates"], "p50_us": round(r["model_p50_us"], 1),
                         "p99_us": round(r["model_p99_us"], 1), "sdk_p50_us": round(r["sdk_p50_us"], 1),
                         "sdk_p99_us": round(r["sdk_p99_us"], 1)})
    return rows


def _row(rows: list[dict], model: str, backend: str, n: int) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["backend"] == backend and r["candidates"] == n), None)


def checks(rows: list[dict], bundles: dict[str, dict]) -> tuple[dict[str, float], list[dict]]:
    teacher = _row(rows, "teacher", "torch", BAR_CANDIDATES)
    speedup = {}
    for r in rows:
        if r["model"] == "student" and r["candidates"] == BAR_CANDIDATES and teacher:
            speedup[r["backend"] if r["quantization"] == "int8" else f"{r['backend']} fp32"] = round(
                teacher["p50_us"] / r["p50_us"], 1)
    et = _row(rows, "student", "executorch", BAR_CANDIDATES)
    out = [
        {"name": f"teacher/torch and student/executorch timed at {BAR_CANDIDATES} candidates",
         "value": bool(teacher and et), "target": "both present", "met": bool(teacher and et)},
        {"name": f"student/executorch speed-up over teacher/torch at {BAR_CANDIDATES} candidates (p50)",
         "value": speedup.get("executorch"), "target": f">= {BAR_SPEEDUP:g}x",
         "met": bool(speedup.get("executorch") and speedup["executorch"] >= BAR_SPEEDUP)},
        {"name": f"student/executorch p50 at {BAR_CANDIDATES} candidates (us)", "value": et and et["p50_us"],
         "target": f"<= {BAR_P50_US:g}", "met": bool(et and et["p50_us"] <= BAR_P50_US)},
    ]
    for t, b in bundles.items():
        p = b.get("parity") or {}
        if "auc_exported" in p:
            d = abs(p["auc_exported"] - p["auc_reference"])
            out.append({"name": f"{t} int8 parity |AUC exported - reference|", "value": round(d, 5),
                        "target": "<= 0.002", "met": d <= 0.002})
    return speedup, out


def bundle_summary(out: Path, manifests: dict[str, dict]) -> dict[str, dict]:
    res = {}
    for t, m in manifests.items():
        d = out / "bundles" / t
        res[t] = {"path": str(d.relative_to(out)), "quantization": m["quantization"], "model_file": m["model_file"],
                  "model_bytes": (d / m["model_file"]).stat().st_size,
                  "bundle_bytes": sum(f.stat().st_size for f in d.iterdir() if f.is_file()),
                  "parity": {k: v for k, v in m["parity"].items() if not isinstance(v, (list, dict))}}
    return res


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def format_report_md(rep: dict) -> str:
    L = ["# kdaliens quickstart report", "",
         f"`{rep['command']}` on {rep['device']['cpu'] or rep['device']['machine']} "
         f"({rep['device']['cpu_count']} cores), {rep['created']}. Data: {rep['data']}.", ""]
    if rep["failures"]:
        L += ["**Failed steps:** " + "; ".join(f"{f['step']}: {f['error']}" for f in rep["failures"]), ""]
    if rep["metrics"]:
        L += ["## Accuracy (test split)", "",
              "| model | AUC | GAUC | logloss | HR@10 | NDCG@10 | full HR@10 | full NDCG@10 | params | size |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in rep["metrics"].items():
            f = m.get("ranking_full") or {}
            full = " | ".join(f"{f[k]:.4f}" if k in f else "-" for k in ("hr@10", "ndcg@10"))
            L.append(f"| {name} | {m['ctr']['auc']:.4f} | {m['ctr']['gauc']:.4f} | {m['ctr']['logloss']:.4f} | "
                     f"{m['ranking']['hr@10']:.4f} | {m['ranking']['ndcg@10']:.4f} | {full} | {m['params']:,} | "
                     f"{m['size_bytes'] / 1024:.1f} KB |")
        L += ["", "AUC/GAUC/logloss: click given interaction on the held-out last 10% of each user's ratings. "
              "HR@10/NDCG@10: each user's last item among 100 items they never touched; full HR@10/NDCG@10: "
              "the same item among every item the user never touched.", "",
              "![accuracy](accuracy.png)", ""]
    if rep["bundles"]:
        L += ["## Bundles (int8)", "", "Bundle = the folder: model, `manifest.json` and, for ExecuTorch, `model.etrecord` "
              "(a profiling aid for `kdaliens-profile`; an app ships only the `.pte` and the manifest). "
              "Parity: the held-out CTR test split scored by the target's runtime and by the PyTorch reference.", "",
              "| target | model file | bundle | AUC reference | AUC exported | max abs diff |",
              "|---|---|---|---|---|---|"]
        for t, b in rep["bundles"].items():
            p = b["parity"]
            L.append(f"| {t} | {b['model_file']} {b['model_bytes'] / 1024:.1f} KB | {b['bundle_bytes'] / 1024:.1f} KB | "
                     f"{_fmt(p.get('auc_reference'))} | {_fmt(p.get('auc_exported'))} | "
                     f"{_fmt(p.get('max_abs_diff'), 6)} |")
        L.append("")
    if rep["latency"]:
        L += ["## Latency (1 thread, model call; SDK = the whole `Ranker.rerank` with SQLite stores)", "",
              "| model | backend | quant | candidates | p50 us | p99 us | SDK p50 us | SDK p99 us |",
              "|---|---|---|---|---|---|---|---|"]
        for r in rep["latency"]:
            L.append(f"| {r['model']} | {r['backend']} | {r['quantization']} | {r['candidates']} | {r['p50_us']:.0f} | "
                     f"{r['p99_us']:.0f} | {_fmt(r.get('sdk_p50_us'), 0)} | {_fmt(r.get('sdk_p99_us'), 0)} |")
        if rep["speedup_at_100"]:
            L += ["", f"Speed-up over the eager teacher at {BAR_CANDIDATES} candidates (p50): "
                  + ", ".join(f"{k} {v:g}x" for k, v in rep["speedup_at_100"].items()) + "."]
        L += ["", "![latency](latency.png)", ""]
    if rep["checks"]:
        L += ["## Checks", "", "| check | value | target | met |", "|---|---|---|---|"]
        L += [f"| {c['name']} | {_fmt(c['value'], 5 if 'parity' in c['name'] else 1)} | {c['target']} | "
              f"{_fmt(c['met'])} |" for c in rep["checks"]]
        L.append("")
    if rep["demo"]:
        L += ["## Reranking real users on the device path", "",
              "Candidates: the item each user interacted with next, among 100 items they never touched, "
              "shuffled; reranked by the ExecuTorch bundle through `kdaliens.sdk`.", "", "```"]
        L += [format_demo(d) for d in rep["demo"]]
        L += ["```", ""]
    L += ["## Steps", "", "| step | seconds | reused |", "|---|---|---|"]
    L += [f"| {k} | {v['seconds']:.1f} | {_fmt(v['reused'])} |" for k, v in rep["steps"].items()]
    L += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if v) + ".", ""]
    return "\n".join(L)


# ------------------------------------------------------------------------------ plots
COLORS = {"teacher/torch": "#444444", "student/torch": "#8c564b", "student/executorch": "#1f77b4",
          "student/onnxruntime": "#d62728", "student/litert": "#2ca02c"}


MODEL_COLORS = {"teacher": "#444444", "student_plain": "#8c564b", "student_kd": "#1f77b4", "student_kd_int8": "#17becf"}


def plot_accuracy(metrics: dict[str, dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    names = list(metrics)
    panels = [("ctr", "auc", "AUC (CTR protocol)", 0.7), ("ranking", "hr@10", "HR@10 (1 + 100 unobserved)", 0.4)]
    if all("ranking_full" in metrics[n] for n in names):
        panels.append(("ranking_full", "hr@10", "HR@10 (full catalogue)", 0.0))
    fig = Figure(figsize=(4 * len(panels), 3.6), dpi=120)
    for k, (block, key, label, base) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        vals = [metrics[n][block][key] for n in names]
        bars = ax.bar(range(len(names)), vals, color=[MODEL_COLORS.get(n, "#888888") for n in names])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.4f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("student_", "") for n in names], fontsize=8)
        ax.set_ylim(min(base, min(vals) - 0.02), max(vals) + 0.03)
        ax.set_title(label, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("test accuracy per model (student_kd_int8 measured on the converted int8 model)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_latency(rows: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=120)
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(f"{r['model']}/{r['backend']}", []).append(r)
    for k, (part, title) in enumerate((("", "model call"), ("sdk_", "whole SDK rerank (SQLite stores)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for name, rs in series.items():
            rs = sorted((r for r in rs if r.get(f"{part}p50_us") is not None), key=lambda r: r["candidates"])
            if not rs:
                continue
            x = [r["candidates"] for r in rs]
            quant = rs[0]["quantization"]
            c = COLORS.get(name, None)
            ax.plot(x, [r[f"{part}p50_us"] for r in rs], "-o", color=c, markersize=4, label=f"{name} {quant} p50")
            ax.plot(x, [r[f"{part}p99_us"] for r in rs], ":", color=c, linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({r["candidates"] for r in rows})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("candidates per request")
        ax.set_ylabel("us (solid p50, dotted p99)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("latency on one thread", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_training(history: dict[str, list], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=120)
    for k, (block, key, label) in enumerate((("ctr", "auc", "validation AUC"), ("ranking", "hr@10", "validation HR@10"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for name in sorted(history, key=lambda n: MODELS.index(n) if n in MODELS else len(MODELS)):
            # An ensemble teacher has one curve per member; the first stands for them.
            pts = [(h["epoch"], h["val"][block][key]) for h in history[name] if h.get("val") and not h.get("member")]
            if pts:
                ax.plot(*zip(*pts), "-o", markersize=3, color=MODEL_COLORS.get(name), label=name)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


# ------------------------------------------------------------------------------ main job
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
    p = argparse.ArgumentParser(prog="kdaliens-quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="redo every step, even those whose output is current")
    p.add_argument("--users", type=int, default=DEFAULT_USERS, help=f"users in the demo (default {DEFAULT_USERS})")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                   help=f"timed runs per candidate count when profiling bundles (default {DEFAULT_RUNS})")
    p.add_argument("--tiny", action="store_true",
                   help="a smoke run in a few minutes: tiny models, parity on 200 requests, fewer timed runs")
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
                             parity_limit=200 if args.tiny else None, command=cmd.strip())
    except KdaliensError as e:
        print(f"kdaliens-quickstart: error: {e}", file=sys.stderr)
        return 2
    return 1 if not rep or rep["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
