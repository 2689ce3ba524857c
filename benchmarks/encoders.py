"""Every teacher sequence encoder, end to end: teacher, distilled int8 student, three exports.

    python benchmarks/encoders.py [--data movielens-100k] [--encoders transformer,sam,dumn,spnn]
        [--variant LABEL SECTION.KEY=VALUE ...] [--seeds 2] [--out runs/encoders]
        [--targets executorch,onnx,tflite] [--threads 1] [--set SECTION.KEY=VALUE ...]
        [--long-history USERS [--max-events N]] [--preset default|tiny]

Per encoder (``teacher.seq_encoder=NAME``, or a ``--variant``, e.g. ``--variant sam-L1000
teacher.seq_encoder=sam teacher.history_len=1000``) and seed, a full ``kdaliens-train`` run
into ``OUT/<label>/seed<S>/`` (default config plus ``--set``): teacher, plain student,
distilled student, int8 student. Then:

* the teacher's latency at 100 candidates (eager PyTorch, both heads, 1 thread, median
  and p99 over 200 real test requests);
* the int8 student exported to every ``--targets`` target through the parity gate
  (``kdaliens-export``'s check in the real runtime), into ``OUT/<label>/seed<S>/bundles/``.

The plain student has no teacher (its own seed, no teacher signal), so it is the same
model under every encoder: it is trained in the first label's run of each seed and
copied into the others, and it is reported once, as the reference row.

The report, ``OUT/encoders.md`` and ``OUT/encoders.json``: per encoder the teacher's
parameters, median seconds per training epoch and latency, then mean ± std over the
seeds of AUC, GAUC, HR@10 and NDCG@10 (100 sampled items, and the full catalogue) of the
teacher and of the int8 distilled student on the test split, and the exports that
passed. Runs, exports and latencies are reused on a rerun, so an interrupted benchmark
resumes where it stopped. ``--long-history USERS`` writes the seeded synthetic
long-history log (``kdaliens.training.data.long_history``, seed 0) to
``runs/long_history_data/`` and runs on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from runs_common import export_int8, mean_std, parse_seeds, share_models

METRICS = (("ctr", "auc"), ("ctr", "gauc"), ("ranking", "hr@10"), ("ranking", "ndcg@10"),
           ("ranking_full", "hr@10"), ("ranking_full", "ndcg@10"))
MODELS = ("teacher", "student_kd", "student_kd_int8")
TARGETS = ("executorch", "onnx", "tflite")


def _label_sets(args) -> list[tuple[str, list[str]]]:
    out = [(e, [f"teacher.seq_encoder={e}"]) for e in args.encoders.split(",") if e.strip()]
    for v in args.variant or []:
        out.append((v[0], list(v[1:])))
    return out


def _teacher_latency(run_dir: Path) -> dict:
    path = run_dir / "teacher_latency.json"
    if path.exists():
        return json.loads(path.read_text())
    from kdaliens.export.latency import time_teacher

    row = time_teacher(run_dir, [100], repeats=200, warmup=20)[0]
    path.write_text(json.dumps(row, indent=1))
    return row


def summarize(results: dict[str, dict[int, dict]]) -> dict:
    """Per label: per model and metric the per-seed values; cost figures; exports."""
    out = {}
    for label, per_seed in results.items():
        seeds = sorted(per_seed)
        row: dict = {"seeds": seeds, "models": {}}
        for model in MODELS + ("student_plain",):
            row["models"][model] = {f"{b}.{k}": [per_seed[s]["metrics"][model][b][k] for s in seeds
                                                 if model in per_seed[s]["metrics"]] for b, k in METRICS}
        t = [per_seed[s]["metrics"]["teacher"] for s in seeds]
        row["teacher_params"] = t[0]["params"]
        row["teacher_epoch_s"] = [x.get("epoch_seconds") for x in t]
        row["teacher_train_s"] = [x.get("train_seconds") for x in t]
        row["teacher_latency_us"] = [per_seed[s]["latency"] for s in seeds]
        row["exports"] = {s: per_seed[s]["exports"] for s in seeds}
        out[label] = row
    return out


def to_markdown(summary: dict, title: str) -> str:
    cols = ["AUC", "GAUC", "HR@10", "NDCG@10", "full HR@10", "full NDCG@10"]
    lines = [f"## {title}", "", "Test split; mean ± std over the seeds. Teacher latency: eager PyTorch, "
             "100 candidates, 1 thread (median / p99 µs).", "",
             "| encoder | params | s/epoch | latency µs | model | " + " | ".join(cols) + " | exports |",
             "|---|---|---|---|---|" + "---|" * len(cols) + "---|"]
    plain = None
    for label, row in summary.items():
        ep = [x for x in row["teacher_epoch_s"] if x is not None]
        lat = row["teacher_latency_us"]
        lat_s = f"{statistics.median(x['p50_us'] for x in lat):.0f} / {statistics.median(x['p99_us'] for x in lat):.0f}"
        exports = [e for per in row["exports"].values() for e in per.values()]
        ok = f"{sum(e['passed'] for e in exports)}/{len(exports)}"
        for i, model in enumerate(("teacher", "student_kd_int8")):
            cells = [mean_std(row["models"][model][f"{b}.{k}"]) for b, k in METRICS]
            head = (f"| {label} | {row['teacher_params']:,} | {statistics.median(ep):.1f} | {lat_s} "
                    if i == 0 else "| | | | ")
            lines.append(head + f"| {model} | " + " | ".join(cells) + f" | {ok if i else ''} |")
        if plain is None and row["models"]["student_plain"]["ranking.hr@10"]:
            plain = row["models"]["student_plain"]
    if plain:
        lines.append("| (no teacher) | | | | student_plain | "
                     + " | ".join(mean_std(plain[f"{b}.{k}"]) for b, k in METRICS) + " | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="movielens-100k")
    ap.add_argument("--encoders", default="transformer,sam,dumn,spnn")
    ap.add_argument("--variant", nargs="+", action="append", metavar=("LABEL", "SET"),
                    help="one more row: a label and its SECTION.KEY=VALUE settings")
    ap.add_argument("--seeds", default="2", help="a count N (seeds 0..N-1) or a comma list (one seed S: 'S,')")
    ap.add_argument("--out", default="runs/encoders")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and timing")
    ap.add_argument("--preset", default="default", choices=("tiny", "default"))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--long-history", type=int, metavar="USERS")
    ap.add_argument("--max-events", type=int, default=5000)
    a = ap.parse_args(argv)
    from kdaliens.sdk.errors import KdaliensError
    from kdaliens.training.config import merge, preset
    from kdaliens.training.pipeline import config_hash, run

    data = a.data
    if a.long_history:
        from kdaliens.training.data.long_history import data_folder

        data = str(data_folder(a.long_history, a.max_events))
    seeds = parse_seeds(a.seeds)
    if not seeds:
        ap.error(f"--seeds {a.seeds!r} gives no seed (a count N >= 1 runs seeds 0..N-1; seed 0 alone is '0,')")
    targets = [t for t in a.targets.split(",") if t.strip()]
    out = Path(a.out)
    results: dict[str, dict[int, dict]] = {}
    labels = _label_sets(a)
    try:
        for s in seeds:
            first = out / labels[0][0] / f"seed{s}"
            for label, sets in labels:
                cfg = merge(preset(a.preset), None, [*a.sets, *sets, f"train.seed={s}", f"train.threads={a.threads}"])
                run_dir = out / label / f"seed{s}"
                share_models(first, run_dir, ["student_plain"], config_hash(cfg, data))
                print(f"== {label} seed {s} -> {run_dir}", flush=True)
                t0 = time.perf_counter()
                metrics = run(data, run_dir, cfg)
                lat = _teacher_latency(run_dir)
                exports = {}
                for t in targets:
                    exports[t] = export_int8(run_dir, t)
                    print(f"   export {t}: {'passed' if exports[t]['passed'] else 'REFUSED'}", flush=True)
                results.setdefault(label, {})[s] = {"metrics": metrics, "latency": lat, "exports": exports,
                                                    "wall_s": round(time.perf_counter() - t0, 1)}
    except KdaliensError as e:
        print(f"encoders: error: {e}", file=sys.stderr)
        return 2
    summary = summarize(results)
    title = f"{data}: teacher sequence encoders" + (f" ({' '.join(a.sets)})" if a.sets else "")
    md = to_markdown(summary, title)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoders.json").write_text(json.dumps({"data": data, "sets": a.sets, "labels": dict(labels),
                                                   "threads": a.threads, "summary": summary}, indent=1))
    (out / "encoders.md").write_text(md)
    print(md)
    print(f"wrote {out / 'encoders.md'} and {out / 'encoders.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
