"""The small interface every runtime backend implements, and the backend registry."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from ..extras import install_command
from ..names import BackendName
from ..signature import Role

# backend name -> (module, class, the extra that installs its runtime)
BACKENDS: dict[BackendName, tuple[str, str, str]] = {
    BackendName.EXECUTORCH: ("executorch", "ExecuTorchBackend", "executorch"),
    BackendName.ONNXRUNTIME: ("onnxruntime", "OnnxRuntimeBackend", "onnxruntime"),
    BackendName.LITERT: ("litert", "LiteRTBackend", "litert"),
}


def backend_for_target(target: str) -> BackendName:
    """The backend that runs bundles of ``target`` (``tflite`` is read as ``litert``)."""
    return BackendName.for_target(target)


class Backend:
    """Runs one exported model.

    Args:
        model_path: the model file inside the bundle (named in errors; read only when
            ``model_bytes`` is not given).
        manifest: the bundle manifest (signature, candidate limits or buckets).
        threads: intra-op threads.
        model_bytes: the model, already read and verified (``Bundle.model_bytes``). When
            omitted, the file is read once here (a regular file only) and checked against
            the manifest's sha256 when the manifest lists it. The runtime loads these
            bytes, never the file, so a file changed on disk afterwards cannot run.

    Subclasses implement :meth:`_run` on arrays already in the manifest's dtypes, with
    at most :attr:`max_candidates` candidates.

    Thread safety: :meth:`run` may be called from any number of threads. A runtime whose
    calls share state (LiteRT's interpreter tensors, an ExecuTorch method's buffers) runs
    one call at a time under a lock; one that is safe to call concurrently
    (onnxruntime's ``InferenceSession.run``) says so with ``concurrent_runs = True``.
    """

    name = "base"
    concurrent_runs = False
    #: The runtime package that runs the model and its version, e.g. ``"ai-edge-litert 2.3.0"``
    #: (``Ranker.rerank`` reports it in ``meta["runtime"]``).
    runtime = ""

    def __init__(self, model_path: Path, manifest: Mapping[str, Any], threads: int = 1,
                 model_bytes: bytes | None = None):
        self.model_path = Path(model_path)
        self.model_bytes = model_bytes if model_bytes is not None else _read_model(self.model_path, manifest)
        self.manifest = manifest
        self.threads = int(threads)
        sig = manifest["signature"]
        self.input_names: list[str] = [i["name"] for i in sig["inputs"]]
        self.input_dtypes: dict[str, np.dtype] = {i["name"]: np.dtype(i["dtype"]) for i in sig["inputs"]}
        # The inputs of dimension (1, N, ...): every candidate field (ModelSignature's roles).
        self.candidate_names: list[str] = [i["name"] for i in sig["inputs"] if i.get("role") == Role.CANDIDATE]
        self.max_candidates: int = int(sig["max_candidates"])
        self._run_lock = threading.Lock()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score one request. ``inputs`` holds every signature input; candidates (1, N)."""
        arrays = {n: np.ascontiguousarray(inputs[n], dtype=self.input_dtypes[n]) for n in self.input_names}
        if self.concurrent_runs:
            return self._run(arrays)
        with self._run_lock:
            return self._run(arrays)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


def _read_model(path: Path, manifest: Mapping[str, Any]) -> bytes:
    """The model file's bytes, checked against the manifest's sha256 when it lists the file."""
    from ..bundle import read_artifact

    return read_artifact(path, (manifest.get("artifacts") or {}).get(path.name), "model file")


def dist_version(dist: str) -> str:
    """``"<dist> <version>"`` of an installed distribution (just the name when unknown)."""
    try:
        from importlib.metadata import version

        return f"{dist} {version(dist)}"
    except Exception:
        return dist


def get_backend(name: str) -> type[Backend]:
    """The backend class; raises BackendUnavailable naming the extra when its runtime is missing."""
    module, cls, _ = BACKENDS[BackendName.parse(name, "backend")]
    # Our backend modules import their runtime lazily, in the constructor.
    mod = importlib.import_module(f"{__package__}.{module}")
    return getattr(mod, cls)


def unavailable(name: str, err: BaseException) -> BackendUnavailable:
    """The error a backend raises when its runtime cannot be imported."""
    extra = BACKENDS[BackendName.parse(name)][2]
    return BackendUnavailable(f"backend {name!r} needs a runtime that is not installed ({err}); "
                              f"install it with: {install_command(extra)}")
