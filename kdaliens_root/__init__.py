"""kdaliens: on-device ranking. A server trains a KD-ALIENS teacher and distills it into a
small int8 student (:mod:`kdaliens.training`), the student is lowered to ExecuTorch, ONNX
Runtime or LiteRT (:mod:`kdaliens.export`), and a numpy-only runtime reranks on the
device (:mod:`kdaliens.sdk`). This module only names the version; importing it imports
nothing else.

This folder is the package ``kdaliens`` itself (``pyproject.toml`` maps it); it is not
named ``kdaliens/`` so that a checkout's root never shadows an installed kdaliens.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("kdaliens")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
