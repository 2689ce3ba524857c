"""Train the four models with N seeds and report mean ± std, and what distillation adds.

    python benchmarks/distill_seeds.py [--data movielens-100k] [--seeds 3 | --seeds 0,1,2 | --seeds 1,]
        [--out runs/seeds] [--preset default] [--set section.key=value ...] [--device auto]

Each seed is a full ``kdaliens-train`` run in ``OUT/seed<S>/`` (a rerun reuses finished
models, so an interrupted benchmark resumes). The report, ``OUT/seeds.md`` and
``OUT/seeds.json``, has per model and metric the mean ± sample std over the seeds
(CTR: AUC, GAUC, logloss; ranking against 100 sampled items and against the full
catalogue: HR@10, NDCG@10), and per seed the differences that matter:
``student_kd - student_plain`` (what distillation gives), ``teacher - student_plain``
(how far the teacher leads) and ``student_kd_int8 - student_kd`` (what int8 costs).
Test metrics are read once per run, after training; nothing here tunes anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

MODELS = ("teacher", "student_plain", "student_kd", "student_kd_int8")
METRICS = (("ctr", "auc"), ("ctr", "gauc"), ("ctr", "logloss"), ("ranking", "hr@10"), ("ranking", "ndcg@10"),
           ("ranking_full", "hr@10"), ("ranking_full", "ndcg@10"))
PAIRS = (("student_kd", "student_plain", "KD - plain"), ("teacher", "student_plain", "teacher - plain"),
         ("student_kd_int8", "student_kd", "int8 - KD"))
LABEL = {"ctr": "", "ranking": "", "ranking_full": "full "}


def _get(m: dict, block: str, key: str) -> float | None:
    v = m.get(block, {}).get(key)
    return None if v is None else float(v)


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(per_seed: dict[int, dict]) -> dict:
    """Mean/std per model and metric, and per-seed differences for :data:`PAIRS`."""
    out: dict = {"seeds": sorted(per_seed), "models": {}, "differences": {}}
    for model in MODELS:
        rows = {}
        for block, key in METRICS:
            xs = [v for s in sorted(per_seed) if (v := _get(per_seed[s].get(model, {}), block, key)) is not None]
            if xs:
                mean, std = _mean_std(xs)
                rows[f"{block}.{key}"] = {"mean": mean, "std": std, "values": xs}
        out["models"][model] = rows
    for a, b, label in PAIRS:
        d = {}
        for block, key in METRICS:
            diffs = []
            for s in sorted(per_seed):
                va, vb = _get(per_seed[s].get(a, {}), block, key), _get(per_seed[s].get(b, {}), block, key)
                if va is not None and vb is not None:
                    diffs.append(va - vb)
            if diffs:
                mean, std = _mean_std(diffs)
                better = [x < 0 if key == "logloss" else x > 0 for x in diffs]
                d[f"{block}.{key}"] = {"per_seed": diffs, "mean": mean, "std": std, "wins": sum(better),
                                       "of": len(diffs)}
        out["differences"][label] = d
    return out


def to_markdown(summary: dict, title: str) -> str:
    seeds = summary["seeds"]
    cols = [f"{LABEL[b]}{k.upper() if k != 'logloss' else 'logloss'}" for b, k in METRICS]
    lines = [f"## {title}", "", f"Seeds {', '.join(map(str, seeds))}; mean ± std over the seeds (test split).", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for model, rows in summary["models"].items():
        cells = []
        for block, key in METRICS:
            r = rows.get(f"{block}.{key}")
            cells.append(f"{r['mean']:.4f} ± {r['std']:.4f}" if r else "-")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for label, d in summary["differences"].items():
        lines += ["", f"**{label}**, per seed (mean ± std; seeds where the first is better):", "",
                  "| metric | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | better in |",
                  "|---|" + "---|" * (len(seeds) + 2)]
        for block, key in METRICS:
            r = d.get(f"{block}.{key}")
            if not r:
                continue
            name = f"{LABEL[block]}{key}"
            per = " | ".join(f"{x:+.4f}" for x in r["per_seed"])
            lines.append(f"| {name} | {per} | {r['mean']:+.4f} ± {r['std']:.4f} | {r['wins']}/{r['of']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="movielens-100k")
    ap.add_argument("--seeds", default="3",
                    help="a count N (seeds 0..N-1) or a comma list (0,1,2; one seed S: 'S,')")
    ap.add_argument("--out", default="runs/seeds")
    ap.add_argument("--preset", default="default", choices=("tiny", "default"))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    a = ap.parse_args(argv)
    from kdaliens.sdk.errors import KdaliensError
    from kdaliens.training.config import merge, preset
    from kdaliens.training.pipeline import run

    seeds = list(range(int(a.seeds))) if "," not in a.seeds and a.seeds.isdigit() else \
        [int(s) for s in a.seeds.split(",") if s.strip()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[int, dict] = {}
    timings: dict[int, float] = {}
    try:
        for s in seeds:
            sets = list(a.sets) + [f"train.seed={s}"] + ([f'train.device="{a.device}"'] if a.device else [])
            cfg = merge(preset(a.preset), None, sets)
            t0 = time.perf_counter()
            print(f"== seed {s} -> {out / f'seed{s}'}", flush=True)
            per_seed[s] = run(a.data, out / f"seed{s}", cfg)
            timings[s] = round(time.perf_counter() - t0, 1)
    except KdaliensError as e:
        print(f"distill_seeds: error: {e}", file=sys.stderr)
        return 2
    summary = summarize(per_seed)
    summary.update({"data": a.data, "preset": a.preset, "sets": a.sets, "seconds": timings})
    md = to_markdown(summary, f"{a.data}, preset {a.preset}" + (f", {' '.join(a.sets)}" if a.sets else ""))
    (out / "seeds.json").write_text(json.dumps(summary, indent=1))
    (out / "seeds.md").write_text(md)
    print(md)
    print(f"wrote {out / 'seeds.md'} and {out / 'seeds.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
