"""What the int8 step's table recipe costs: rerun it from finished runs with other settings.

    python benchmarks/table_bits.py RUN_DIR [RUN_DIR ...] \
        --variant base: \
        --variant 4bit:quant.large_table_bits=4 \
        --variant 4bit-ft:quant.large_table_bits=4,train.qat_lr=1e-4,train.qat_target=fp32 \
        [--split val|test] [--json FILE]

Each RUN_DIR is a finished ``kdaliens-train`` run (one seed each); the int8 step
(:meth:`StudentTrainer.quantize`) is rerun from its ``student_kd.pt`` once per variant,
with the run's own config plus the variant's ``--set`` items, and the converted int8
model is evaluated on ``--split`` (validation by default: choose there; read test once).
A variant with no items reproduces the run's own ``student_kd_int8`` (its test metrics
must match ``metrics.json``). Fine-tuning targets ``fp32`` (the distilled student) or
calibration only: no teacher is needed.

The report gives, per variant, the item-table bytes and, per metric (AUC, HR@10 and
NDCG@10 against 100 sampled items and against the full catalogue), each seed's value and
the mean ± std, and each seed's difference to the first variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

METRICS = (("ctr", "auc"), ("ranking", "hr@10"), ("ranking", "ndcg@10"), ("ranking_full", "hr@10"),
           ("ranking_full", "ndcg@10"))


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, items = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME:section.key=value,...")
    return name, [s for s in items.split(",") if s]


def run_variant(run_dir: Path, sets: list[str], split: str) -> dict:
    import torch

    from kdaliens.training.checkpoint import load_model
    from kdaliens.training.config import RunConfig, merge
    from kdaliens.training.data import load_prepared
    from kdaliens.training.loop import Context, DistEnv
    from kdaliens.training.quantize import table_bytes
    from kdaliens.training.student_loop import StudentTrainer, evaluate_student

    student, _, _, _ = load_model(run_dir / "student_kd.pt")
    cfg = merge(RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())), None, sets)
    if cfg.train.qat_lr > 0 and cfg.train.qat_target != "fp32":
        raise SystemExit("fine-tuning on the task targets needs the teacher: use train.qat_target=fp32")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = json.loads((run_dir / "run.json").read_text())["data"]
    ctx = Context(load_prepared(data, cfg.data, cfg.split, verbose=False), cfg, "cpu")
    t0 = time.perf_counter()
    res = StudentTrainer(ctx, DistEnv(), lambda msg: None).quantize(student)
    seconds = time.perf_counter() - t0
    metrics = evaluate_student(res.model, ctx, split, full=True)
    tables = {n: table_bytes(m.num_embeddings, m.embedding_dim, *cfg.quant.table(m.num_embeddings))
              for n, m in student.named_modules() if isinstance(m, torch.nn.Embedding)}
    return {"metrics": metrics, "table_bytes": sum(tables.values()), "largest_table_bytes": max(tables.values()),
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or ["base:"])]
    for r in args.runs:
        if not (r / "student_kd.pt").is_file():
            raise SystemExit(f"{r}: no student_kd.pt (run kdaliens-train first)")
    results: dict[str, dict[str, dict]] = {}
    for name, sets in variants:
        for r in args.runs:
            out = run_variant(r, sets, args.split)
            results.setdefault(name, {})[str(r)] = out
            m = out["metrics"]
            print(f"[{name}] {r}: " + "  ".join(f"{b[:4]}:{k} {m[b][k]:.4f}" for b, k in METRICS)
                  + f"  tables {out['table_bytes']:,} B  ({out['seconds']}s)", flush=True)
    base = variants[0][0]
    print(f"\n{args.split}: mean ± std over {len(args.runs)} run(s); (diff to {base} per run)")
    print("| variant | tables | " + " | ".join(f"{'full ' if b == 'ranking_full' else ''}{k}" for b, k in METRICS)
          + " |")
    print("|---" * (len(METRICS) + 2) + "|")
    for name, _ in variants:
        row = results[name]
        cells = []
        for b, k in METRICS:
            xs = [row[str(r)]["metrics"][b][k] for r in args.runs]
            ds = [x - results[base][str(r)]["metrics"][b][k] for x, r in zip(xs, args.runs)]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.fmean(xs):.4f} ± {sd:.4f}"
                         + ("" if name == base else " (" + " / ".join(f"{d:+.4f}" for d in ds) + ")"))
        tb = row[str(args.runs[0])]["table_bytes"]
        print(f"| {name} | {tb:,} B | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "variants": dict(variants), "results": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
