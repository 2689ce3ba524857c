"""``kdaliens-export``: lower a run's student to an ExecuTorch, ONNX or LiteRT bundle.

    kdaliens-export --target executorch|onnx|litert --run runs/ml100k --out bundles/executorch [--quantize int8|none]
                    [--model student_kd|student_plain|auto] [--sign keys/signing.key] [--bundle-version N]

``tflite`` is accepted as another name for ``litert``.
"""

from __future__ import annotations

import argparse
import sys

from kdaliens.sdk.errors import KdaliensError
from kdaliens.sdk.extras import help_text, run_tool
from kdaliens.sdk.names import Quantization, TargetName
from kdaliens.training.quiet import add_output_flags, quiet_third_party, tool_log


def _auc_points(text: str) -> float:
    """``--tolerance``: AUC points in [0, 1], checked before any work."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of AUC points (e.g. 0.002)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]: it is the largest AUC drop the bundle may have "
                                         "against the model you trained (default 0.002)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdaliens-export", description=help_text(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, choices=TargetName.choices(aliases=True),
                   help="where the bundle runs (tflite: another name for litert)")
    p.add_argument("--run", required=True, help="run directory written by kdaliens-train")
    p.add_argument("--out", required=True,
                   help="bundle directory to write; an existing bundle there is replaced atomically, a folder "
                        "holding anything else is refused unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it holds files kdaliens did not write")
    p.add_argument("--quantize", default="int8", choices=Quantization.choices(), help="default: int8")
    p.add_argument("--model", default="student_kd", choices=("student_kd", "student_plain", "auto"),
                   help="the student to export: student_kd (distilled, the default), student_plain (labels only), "
                        "or auto: the better of the two on validation (never test)")
    p.add_argument("--max-candidates", type=_positive_int, default=512,
                   help="most candidates per model call; the SDK chunks longer lists (default 512)")
    p.add_argument("--tolerance", type=_auc_points, default=0.002,
                   help="largest AUC drop against the reference before the bundle is refused (default 0.002)")
    p.add_argument("--parity-limit", type=_positive_int, default=None,
                   help="score only this many held-out requests in the parity gate (default: all)")
    p.add_argument("--sign", metavar="KEY",
                   help="sign the manifest (which lists every file's sha256) with this signing.key from "
                        "kdaliens-keygen; devices then load it with trusted_keys=[signing.pub]")
    p.add_argument("--bundle-version", type=int, default=None,
                   help="the version devices pin: a BundleStore refuses to install a lower one (default: the "
                        "time in seconds, above the version of a bundle already at --out)")
    p.add_argument("--debug", action="store_true",
                   help="also write debugging artifacts (ExecuTorch: model.etrecord, for kdaliens-profile's "
                        "per-operator names) to OUT.debug/ beside the bundle; devices never need them")
    add_output_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # On an install without the [export] extra: one line naming it, exit status 2.
    return run_tool("kdaliens-export", "export", ("torch", "pandas"), lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    if not args.verbose:
        quiet_third_party()
    from .api import export_bundle
    from .targets import ExportConfig

    try:
        config = ExportConfig(args.target, args.quantize, max_candidates=args.max_candidates,
                              tolerance=args.tolerance, parity_limit=args.parity_limit, debug=args.debug,
                              model=args.model)
        export_bundle(args.run, config, args.out, force=args.force, sign=args.sign,
                      bundle_version=args.bundle_version, log=tool_log(args.quiet, keep=("[export] wrote",)))
    except KdaliensError as e:
        print(f"kdaliens-export: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
