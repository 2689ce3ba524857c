"""Console entry points of the jobs, safe on any install: a missing extra is one line, not a traceback."""

from __future__ import annotations

from collections.abc import Sequence

from kdaliens.sdk.extras import run_tool


def quickstart(argv: Sequence[str] | None = None) -> int:
    """``kdaliens-quickstart``: :func:`kdaliens.jobs.quickstart.main` once its extras are importable."""

    def _main() -> int:
        import sys

        from kdaliens.training.quiet import quiet_third_party

        args = sys.argv[1:] if argv is None else list(argv)
        if "--verbose" not in args and "-v" not in args:
            quiet_third_party()
        from .quickstart import main

        return main(argv)

    return run_tool("kdaliens-quickstart", "all", ("torch", "pandas", "matplotlib", "executorch", "onnxruntime"),
                    _main)
