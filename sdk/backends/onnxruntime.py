"""The onnxruntime backend: runs a bundle's ``model.onnx`` (or ``.ort``) on the CPU.

onnxruntime is imported in the constructor, so ``kdaliens.sdk`` imports with numpy only
and a device without onnxruntime gets :class:`~kdaliens.sdk.errors.BackendUnavailable`
(naming ``kdaliens[onnxruntime]``) only when it picks this backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from .base import Backend, dist_version, unavailable

OUTPUT_NAMES = ("score", "click")
# onnxruntime's type strings for the dtypes a signature may use.
_ORT_TYPES = {"tensor(int64)": np.dtype(np.int64), "tensor(int32)": np.dtype(np.int32),
              "tensor(float)": np.dtype(np.float32)}


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX student with onnxruntime's CPU execution provider.

    Args:
        model_path: ``model.onnx`` (or an ``.ort`` file) inside the bundle.
        manifest: the bundle manifest; its ``signature`` names the inputs.
        threads: intra-op threads (one request is small: 1 is usually fastest on a phone).

    Raises:
        BackendUnavailable: onnxruntime is not installed.
        BundleError: the model file is missing, corrupt or truncated, or its inputs and
            outputs differ from the manifest's signature.
    """

    name = "onnxruntime"
    concurrent_runs = True  # InferenceSession.run is safe to call from several threads

    def __init__(self, model_path: Path, manifest: Mapping[str, Any], threads: int = 1,
                 model_bytes: bytes | None = None):
        super().__init__(model_path, manifest, threads, model_bytes)
        try:
            import onnxruntime as ort
        except ImportError as e:  # also covers sys.modules["onnxruntime"] = None
            raise unavailable("onnxruntime", e) from e
        self.runtime = dist_version("onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(self.threads, 1)
        # One request at a time: no inter-op pool, nodes run in order.
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # warnings about unused initializers etc. are noise on a device
        try:
            # From the verified bytes: a model that names external data files cannot
            # load them from memory, so nothing outside the manifest's hashes runs.
            self._session = ort.InferenceSession(self.model_bytes, sess_options=so,
                                                 providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, InvalidGraph, ...)
            raise BundleError(f"{self.model_path}: onnxruntime cannot load this model, it may be corrupt or "
                              f"truncated ({type(e).__name__}: {e})") from e
        self._check_signature()
        # Built once: the per-call path is a single session.run.
        self._outputs = list(OUTPUT_NAMES)
        self._session_run = self._session.run

    def _check_signature(self) -> None:
        # A mismatch would otherwise surface as an opaque onnxruntime error on the first request.
        have_in = {i.name: i.type for i in self._session.get_inputs()}
        have_out = {o.name for o in self._session.get_outputs()}
        missing = [n for n in self.input_names if n not in have_in] + [n for n in OUTPUT_NAMES if n not in have_out]
        if missing:
            raise BundleError(f"{self.model_path}: the model lacks {missing} named in the manifest signature")
        extra = sorted(set(have_in) - set(self.input_names))
        if extra:
            raise BundleError(f"{self.model_path}: the model needs inputs {extra} the manifest signature lacks")
        wrong = [f"{n} is {have_in[n]}, manifest says {self.input_dtypes[n]}" for n in self.input_names
                 if _ORT_TYPES.get(have_in[n]) != self.input_dtypes[n]]
        if wrong:
            raise BundleError(f"{self.model_path}: input types differ from the manifest: {'; '.join(wrong)}")

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        score, click = self._session_run(self._outputs, inputs)
        # onnxruntime already returns float32; asarray makes that a contract without a copy.
        return {"score": np.asarray(score, dtype=np.float32), "click": np.asarray(click, dtype=np.float32)}
