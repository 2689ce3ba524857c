"""The ``kdaliens-profile`` command."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import BackendUnavailable, BundleError, InputError
from ..ranker import BACKEND_NAMES
from .measure import DEFAULT_CANDIDATES, DEFAULT_RUNS, DEFAULT_WARMUP, profile_bundle
from .plot import PlotError, plot_profile
from .report import format_profile


def _parse_candidates(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}")
    return counts


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kdaliens-profile",
        description="Latency (SDK rerank and bare model, p50/p90/p99), cold load time, peak memory, size and, "
                    "for ExecuTorch, a per-operator breakdown of a kdaliens bundle on this device.")
    ap.add_argument("bundle", type=Path, metavar="BUNDLE_DIR", help="a bundle folder written by kdaliens-export")
    ap.add_argument("--backend", default="auto", choices=BACKEND_NAMES, help="runtime (default: the bundle's own)")
    ap.add_argument("--candidates", type=_parse_candidates, default=DEFAULT_CANDIDATES,
                    help="candidate counts, comma-separated (default: 10,100,500)")
    ap.add_argument("--history-len", type=int, default=None,
                    help="events in each synthetic history (default: 3 x the bundle's history length)")
    ap.add_argument("--threads", type=int, default=1, help="runtime threads (default: 1)")
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per row (default: {DEFAULT_RUNS})")
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                    help=f"untimed runs before them (default: {DEFAULT_WARMUP})")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every number as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE.png", help="latency against candidates (needs matplotlib)")
    return ap


def _writable(path: Path | None) -> str | None:
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"{path}: folder {parent} does not exist"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``kdaliens-profile`` command; returns the exit code."""
    ap = _build_parser()
    args = ap.parse_args(argv)
    for what, p in (("--json", args.json), ("--plot", args.plot)):
        problem = _writable(p)
        if problem:
            print(f"kdaliens-profile: {what} {problem}", file=sys.stderr)
            return 2
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        print("kdaliens-profile: warning: --plot needs matplotlib, which is not installed (pip install matplotlib); "
              "profiling anyway", file=sys.stderr)
    try:
        result = profile_bundle(args.bundle, backend=args.backend, candidates=args.candidates,
                                history_len=args.history_len, threads=args.threads, runs=args.runs,
                                warmup=args.warmup, progress=True)
    except (BundleError, BackendUnavailable, InputError) as e:
        print(f"kdaliens-profile: error: {e}", file=sys.stderr)
        return 2
    print(format_profile(result), flush=True)
    code = 0
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    if args.plot is not None:
        try:
            plot_profile(result, args.plot)
            print(f"wrote {args.plot}")
        except PlotError as e:
            print(f"kdaliens-profile: --plot skipped: {e}", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
