"""Which onnxruntime int8 method should the ONNX target use? Dynamic vs static QDQ, measured.

For one run directory it exports the student to ONNX in fp32, int8 ``dynamic``
(``quantize_dynamic``, per-channel) and int8 ``qdq`` (``quantize_static``, QDQ, per-channel,
calibrated on valid random requests), then prints one row per form: latency of one request
of ``--candidates`` candidates on ``--threads`` intra-op threads (p50/p99 wall time and
p50 thread-CPU time over ``--runs`` timed runs, the forms taking turns in chunks of 100), and parity against the fp32 torch module on ``--requests`` requests (max
|score diff|, Spearman rank correlation, top-10 agreement) and the file size.

It reports; it does not pass or fail. Usage::

    python benchmarks/onnx_int8_choice.py --run RUN_DIR [--candidates 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kdaliens.export.check import random_requests, score_agreement
from kdaliens.export.exportable import load_exportable
from kdaliens.export.latency import time_runs
from kdaliens.export.targets.onnx import METHODS, export_to_onnx, ort_session
from kdaliens.training import metrics as M


def _runner(session):
    """One onnxruntime session as a request -> {"score", "click"} callable."""

    def run(request):
        score, click = session.run(["score", "click"], request)
        return {"score": score, "click": click}

    return run


def _auc(session, real) -> float:
    click = [float(session.run(["click"], r)[0].reshape(-1)[0]) for r in real.inputs]
    return M.auc(np.asarray(real.labels), np.asarray(click))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run directory (kdaliens-train --out)")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3000, help="timed runs per form")
    ap.add_argument("--requests", type=int, default=32, help="requests for the parity columns")
    ap.add_argument("--auc", action="store_true",
                    help="also score the run's CTR test split (AUC of the click head, as the bundle parity gate "
                         "does) and calibrate qdq on its first 256 requests, as kdaliens-export does")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    exp = load_exportable(args.run, "int8")
    # Parity and timing requests differ from the calibration requests (other seed).
    checks = random_requests(exp, n=args.requests, n_cand=args.candidates, seed=1)
    real, calibration = None, None
    if args.auc:
        from kdaliens.export.parity import load_requests

        real = load_requests(args.run, exp, "test")
        calibration = real.inputs[:256]
    results: dict[str, dict[str, float]] = {}
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in ("fp32", *METHODS):
            out = Path(tmp) / form
            info = export_to_onnx(exp, out, quantize="none" if form == "fp32" else "int8", calibration=calibration,
                                  method=None if form == "fp32" else form, log=lambda s: None)
            session = sessions[form] = ort_session(out / info.model_file, threads=args.threads)
            results[form] = score_agreement(exp, _runner(session), checks)
            results[form]["size_kb"] = (out / info.model_file).stat().st_size / 1024
            if real is not None:
                results[form]["test_auc"] = _auc(sessions[form], real)
    if real is not None:
        import torch

        with torch.no_grad():
            click = [float(exp.module(*(torch.from_numpy(r[n]) for n in exp.input_names))[1]) for r in real.inputs]
        results["torch fp32"] = {"test_auc": M.auc(real.labels, np.asarray(click))}

    # Timing: the forms take turns in short chunks, so load from other processes on a shared
    # machine falls on all of them alike.
    req = checks[0]
    wall: dict[str, list[np.ndarray]] = {f: [] for f in sessions}
    cpu: dict[str, list[np.ndarray]] = {f: [] for f in sessions}
    runners = {form: _runner(sess) for form, sess in sessions.items()}
    for run in runners.values():
        time_runs(run, req, 200)  # warm-up
    chunk = 100
    for _ in range(max(1, args.runs // chunk)):
        for form, run in runners.items():
            w, c = time_runs(run, req, chunk)
            wall[form].append(w)
            cpu[form].append(c)
    for form in sessions:
        w, c = np.concatenate(wall[form]) / 1e3, np.concatenate(cpu[form]) / 1e3
        results[form].update(p50_us=float(np.percentile(w, 50)), p99_us=float(np.percentile(w, 99)),
                             cpu_p50_us=float(np.percentile(c, 50)))

    print(f"onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), {args.candidates} candidates, {args.runs} runs, {args.requests} requests")
    head = (f"{'method':<8} {'p50 us':>8} {'p99 us':>8} {'cpu p50':>8} {'max|d score|':>13} {'min rho':>8} "
            f"{'mean rho':>9} {'top-10':>7} {'KB':>7}")
    std = results["fp32"]["ref_score_std"]
    print(head)
    print("-" * len(head))
    for form, r in results.items():
        if "p50_us" not in r:
            continue
        print(f"{form:<8} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['cpu_p50_us']:8.1f} {r['max_abs_score_diff']:13.2e} "
              f"{r['min_spearman']:8.4f} {r['mean_spearman']:9.4f} {r['top10_agreement']:7.3f} {r['size_kb']:7.1f}")
    print(f"(fp32 torch scores: mean per-request std {std:.3f})")
    if real is not None:
        print(f"CTR test AUC on {len(real.inputs):,} requests: "
              + ", ".join(f"{form} {r['test_auc']:.5f}" for form, r in results.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
