"""What to install for each part of kdaliens, and the one line a tool prints when it is missing.

kdaliens is installed from a clone of its repository (it is not on PyPI): the device SDK
needs numpy only, and every other part is an extra of ``pyproject.toml``. Errors about a
missing package name the command that installs it; :func:`run_tool` keeps a server tool
on a device-only install to that one line (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence

#: torch's CPU wheels; without this index pip picks the CUDA build on Linux (several GB).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

#: Extras whose packages include torch.
_TORCH_EXTRAS = frozenset({"train", "export", "executorch", "all"})

#: The extra that installs each optional top-level module.
EXTRA_OF = {
    "torch": "train", "torchao": "train", "pandas": "train", "pyarrow": "train", "tqdm": "train",
    "matplotlib": "train", "executorch": "export", "onnx": "export", "onnxscript": "export",
    "onnxruntime": "onnxruntime", "ai_edge_litert": "litert", "tflite_runtime": "litert",
    "ai_edge_quantizer": "export", "litert_torch": "export", "nacl": "signing",
}


def install_command(extra: str) -> str:
    """The command that installs ``extra`` from a clone of the repository (CPU torch where it needs torch)."""
    cmd = f'pip install -e ".[{extra}]"'
    if extra in _TORCH_EXTRAS:
        cmd += f" --extra-index-url {TORCH_CPU_INDEX}"
    return cmd + " (in a clone of the kdaliens repository; README: Install)"


def missing_line(prog: str, module: str, extra: str | None = None) -> str:
    """One line: ``module`` is missing and the command that installs it."""
    extra = extra or EXTRA_OF.get(module, "all")
    return f"{prog}: error: {module} is not installed, and {prog} needs the [{extra}] extra: {install_command(extra)}"


def run_tool(prog: str, extra: str, needs: Sequence[str], main: Callable[[], int]) -> int:
    """Run a server tool's ``main``, or print one line and return 2 when a package it needs is missing.

    ``needs`` are checked first without importing them; a module of an extra that is
    missing deeper down (an exporter's runtime) is caught as it is imported.
    """
    for module in needs:
        if importlib.util.find_spec(module) is None:
            print(missing_line(prog, module, extra), file=sys.stderr)
            return 2
    try:
        return main()
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        print(missing_line(prog, top), file=sys.stderr)
        return 2


def help_text(doc: str | None, stop: str | None = None) -> str:
    """A module docstring as ``--help`` text: reST markup dropped (````x```` -> x, ``:func:`a.b``` -> b,
    ``**x**`` -> x), and cut before the line starting with ``stop``."""
    import re

    text = doc or ""
    if stop is not None and stop in text:
        text = text[:text.index(stop)]
    text = re.sub(r":\w+:`~?([\w.]+\.)?([\w]+)`", r"\2", text)
    text = text.replace("``", "").replace("**", "")
    return text.rstrip() + "\n"
