"""Single-thread latency of exported bundles next to the eager PyTorch student.

    python benchmarks/export_latency.py --run runs/ml100k --bundles bundles/executorch bundles/onnx ...
        [--candidates 100] [--repeats 2000] [--json out.json]

Every model scores the same real requests (users from the ranking test split, N
candidates each), one call at a time, through the SDK backend of its bundle. Timings
are the model call only (inputs already encoded); medians and p99 over ``--repeats``
calls after a warm-up, all taken in one process so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kdaliens.export.exportable import load_exportable
from kdaliens.sdk.backends import backend_for_target, get_backend
from kdaliens.sdk.features import FeatureEncoder
from kdaliens.training.batches import student_requests
from kdaliens.training.data import SplitConfig, load_prepared


def requests_with_candidates(run_dir: Path, exp, n_cand: int, n_req: int = 64) -> list[dict[str, np.ndarray]]:
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    prep = load_prepared(info.get("data", "movielens-100k"), exp.config.data, SplitConfig(**exp.config.split))
    r = prep.rank["test"]
    rng = np.random.default_rng(0)
    rows = rng.choice(len(r["user"]), size=min(n_req, len(r["user"])), replace=False)
    cands = rng.integers(0, prep.n_items, size=(len(rows), n_cand))
    batch = student_requests(prep, FeatureEncoder(exp.spec), r["user"][rows], r["start"][rows], r["n_past"][rows],
                             r["ts"][rows], cands)
    batch["hist_mask"] = batch["hist_mask"].astype(np.float32)
    return [{n: batch[n][b:b + 1] for n in exp.input_names} for b in range(len(rows))]


def time_calls(fn, reqs, repeats: int, warmup: int = 200) -> dict[str, float]:
    for i in range(warmup):
        fn(reqs[i % len(reqs)])
    ts = np.empty(repeats)
    for i in range(repeats):
        r = reqs[i % len(reqs)]
        t0 = time.perf_counter_ns()
        fn(r)
        ts[i] = time.perf_counter_ns() - t0
    return {"p50_us": float(np.percentile(ts, 50) / 1e3), "p99_us": float(np.percentile(ts, 99) / 1e3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--bundles", nargs="+", type=Path, required=True)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    exp = load_exportable(args.run, "none")
    reqs = requests_with_candidates(args.run, exp, args.candidates)
    rows = []

    def eager(r):
        with torch.no_grad():
            return exp.module(*[torch.from_numpy(r[n]) for n in exp.input_names])

    rows.append({"model": "student fp32", "backend": "torch eager", "quantization": "none", "size_kb": None,
                 **time_calls(eager, reqs, args.repeats)})
    for b in args.bundles:
        m = json.loads((b / "manifest.json").read_text())
        backend = get_backend(backend_for_target(m["target"]))(b / m["model_file"], m, threads=1)
        rows.append({"model": f"student {m['quantization']}", "backend": backend.name, "quantization": m["quantization"],
                     "size_kb": round((b / m["model_file"]).stat().st_size / 1024, 1),
                     "parity_auc": [m["parity"]["auc_reference"], m["parity"]["auc_exported"]],
                     **time_calls(backend.run, reqs, args.repeats)})
    base = rows[0]["p50_us"]
    print(f"{args.candidates} candidates, 1 thread, {args.repeats} calls")
    print(f"{'backend':<14}{'quant':<7}{'p50 us':>9}{'p99 us':>9}{'vs eager':>10}{'size KB':>9}")
    for r in rows:
        size = f"{r['size_kb']:.1f}" if r["size_kb"] else "-"
        print(f"{r['backend']:<14}{r['quantization']:<7}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}"
              f"{base / r['p50_us']:>9.1f}x{size:>9}")
    if args.json:
        args.json.write_text(json.dumps({"candidates": args.candidates, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
