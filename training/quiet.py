"""Known-harmless third-party warnings and log lines, off for the server tools.

``kdaliens-train``, ``kdaliens-export`` and ``kdaliens-quickstart`` call :func:`quiet_third_party`
before they import torch and the runtimes. Each filter names one message we have checked:
it is about the libraries' own internals, not about anything a user can change. Our own
code raises no warnings; everything else still prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Callable

#: (category, message regex) of Python warnings checked to be harmless.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # torch deprecates its own LeafSpec check; raised while copying exported programs (PT2E).
    (FutureWarning, r".*isinstance\(treespec, LeafSpec\).*"),
    # executorch marks its Python bindings experimental on every import.
    (Warning, r"This API is experimental and subject to change.*"),
    # ONNX export notes that our dynamic candidate axis keeps its own name.
    (UserWarning, r".*axis name: n_cand will not be used.*"),
)

#: Loggers whose notes at import time are about the library, not the run (level: ERROR).
KNOWN_LOGGERS = (
    "torchao",  # "Failed to load .../_C_mxfp8...so": CUDA-only kernels on a machine without CUDA
    "torch.utils._pytree",  # torchao registers an Enum the way torch now deprecates
)


def quiet_third_party() -> None:
    """Filter the known-harmless warnings and log lines (idempotent; call before importing torch)."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in KNOWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # TensorFlow's C++ INFO lines when LiteRT converts (the op count); its oneDNN note is
    # printed at load whatever this says.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def tool_log(quiet: bool, keep: tuple[str, ...] = ()) -> Callable[[str], None]:
    """A tool's log function: ``print``, or with ``quiet`` only the lines that are results
    (those not starting with ``[``: tables, totals), start with one of ``keep`` or report a
    failure. Quiet also turns progress bars off (tqdm reads ``TQDM_DISABLE``)."""
    if not quiet:
        return print
    os.environ["TQDM_DISABLE"] = "1"

    def log(line: str) -> None:
        if not line.startswith("[") or line.startswith(keep) or "FAILED" in line:
            print(line)

    return log


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--verbose``, the same on every server tool."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", "-q", action="store_true",
                       help="print only results and errors: no progress lines or bars")
    group.add_argument("--verbose", "-v", action="store_true",
                       help="also show the third-party warnings that are filtered as known to be harmless")
