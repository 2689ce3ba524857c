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
from pathlib import Path

import torch

from kdaliens.export.exportable import load_exportable
from kdaliens.export.latency import eager_student_fn, run_prepared, student_requests_for, time_calls
from kdaliens.sdk.backends import backend_for_target, get_backend


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
    reqs = student_requests_for(run_prepared(args.run, exp.config), exp, args.candidates, n_req=64)
    rows = []

    rows.append({"model": "student fp32", "backend": "torch eager", "quantization": "none", "size_kb": None,
                 **time_calls(eager_student_fn(exp), reqs, args.repeats, warmup=200)})
    for b in args.bundles:
        m = json.loads((b / "manifest.json").read_text())
        backend = get_backend(backend_for_target(m["target"]))(b / m["model_file"], m, threads=1)
        rows.append({"model": f"student {m['quantization']}", "backend": backend.name, "quantization": m["quantization"],
                     "size_kb": round((b / m["model_file"]).stat().st_size / 1024, 1),
                     "parity_auc": [m["parity"]["auc_reference"], m["parity"]["auc_exported"]],
                     **time_calls(backend.run, reqs, args.repeats, warmup=200)})
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
