"""ExecuTorch backend: runs a bundle's ``.pte`` with the ExecuTorch runtime (XNNPACK).

The Python bindings import torch; on phones the Java/C++ runtime needs none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from .base import Backend, unavailable


class ExecuTorchBackend(Backend):
    """``model.pte`` through ``executorch.runtime`` (quantized kernels registered first)."""

    name = "executorch"

    def __init__(self, model_path: Path, manifest: Mapping[str, Any], threads: int = 1):
        super().__init__(model_path, manifest, threads)
        try:
            # Registers embedding_byte & co. before a quantized program is loaded.
            import executorch.kernels.quantized  # noqa: F401
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as e:
            raise unavailable("executorch", e) from e
        self._torch = torch
        try:
            # XNNPACK's threadpool is process-wide; size it for this ranker.
            portable_lib._unsafe_reset_threadpool(max(1, self.threads))
        except Exception:  # older runtimes lack it: keep their default
            pass
        try:
            program = Runtime.get().load_program(str(self.model_path))
            self._method = program.load_method(manifest["signature"].get("method", "forward"))
        except Exception as e:  # the runtime raises RuntimeError/ValueError on bad files
            raise BundleError(f"{self.model_path}: ExecuTorch could not load the program ({e})") from e
        self._program = program

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t = self._torch
        out = self._method.execute([t.from_numpy(inputs[n]) for n in self.input_names])
        return {"score": out[0].numpy(), "click": out[1].numpy()}
