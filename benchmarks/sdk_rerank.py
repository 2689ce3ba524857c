"""The whole ``Ranker.rerank`` against the bare model call, by candidates and by log length.

    python benchmarks/sdk_rerank.py BUNDLE [BUNDLE ...] [--candidates 10,100,500,2000]
        [--events 10,100,636,1000,10000] [--runs 300] [--threads 1] [--json FILE]

For each bundle (its own backend) and each number of logged events per user, synthetic
users, items and events drawn from the bundle's vocabulary go into the SDK's SQLite
stores (an ItemCache and a BehaviorLog in one temporary file), and ``kdaliens-profile``'s
timer alternates the whole rerank (``sdk``: log read, encoding, model, sort) with the bare
model call on the same, already encoded request (``model``: every chunk of it). It
reports p50 and p99 of both and their ratio, all taken in one run, so compare ratios
rather than microseconds on a shared machine. 636 events is the longest log of a
MovieLens-100K user.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdaliens.sdk.profile import profile_bundle


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return vals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--candidates", type=_ints, default=(10, 100, 500, 2000))
    ap.add_argument("--events", type=_ints, default=(10, 100, 636, 1000, 10000),
                    help="logged events per user (default 10,100,636,1000,10000)")
    ap.add_argument("--runs", type=int, default=300, help="timed reranks per row (default 300)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write every row as JSON")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'bundle':<22}{'backend':<13}{'events':>7}{'cands':>7}{'sdk p50':>9}{'sdk p99':>9}"
          f"{'model p50':>11}{'model p99':>11}{'sdk/model':>11}")
    for bundle in args.bundles:
        for n_events in args.events:
            prof = profile_bundle(bundle, candidates=args.candidates, history_len=n_events, threads=args.threads,
                                  runs=args.runs, warmup=max(10, args.runs // 10), operators=False, store="sqlite")
            for r in prof["rows"]:
                row = {"bundle": str(bundle), "backend": prof["backend"], "events": n_events,
                       "candidates": r["candidates"], "sdk_p50_us": r["sdk_p50_us"], "sdk_p99_us": r["sdk_p99_us"],
                       "model_p50_us": r["model_p50_us"], "model_p99_us": r["model_p99_us"],
                       "ratio_p50": round(r["sdk_p50_us"] / r["model_p50_us"], 2)}
                rows.append(row)
                print(f"{bundle.name:<22}{row['backend']:<13}{n_events:>7}{r['candidates']:>7}"
                      f"{r['sdk_p50_us']:>9.0f}{r['sdk_p99_us']:>9.0f}{r['model_p50_us']:>11.0f}"
                      f"{r['model_p99_us']:>11.0f}{row['ratio_p50']:>10.2f}x", flush=True)
    by = {(r["bundle"], r["events"], r["candidates"]): r["sdk_p50_us"] for r in rows}
    lo, hi = min(args.events), max(args.events)
    print(f"\nlog growth: rerank p50 with {hi} events / with {lo} events, per bundle and candidate count")
    for bundle in args.bundles:
        for n in args.candidates:
            a, b = by.get((str(bundle), lo, n)), by.get((str(bundle), hi, n))
            if a and b:
                print(f"  {bundle.name:<22}{n:>6} candidates: {b / a:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
