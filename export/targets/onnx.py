"""ONNX target: lower the device student to ``model.onnx`` (fp32 or int8) for onnxruntime.

Flow: ``torch.onnx.export(dynamo=True)`` with one dynamic dimension (the candidate count,
dim 1 of every ``cand_*`` input; the history keeps its fixed, masked length), then
``onnx.checker``, then for int8 ``quant_pre_process`` and one of two onnxruntime
quantization methods:

* ``"dynamic"``: ``quantize_dynamic`` with int8 per-channel weights. Linear layers become
  ``MatMulInteger`` with activations quantized on the fly. Embedding tables are not left
  to it (it quantizes a table per tensor, uint8 with a zero point, even with
  ``per_channel=True``): they go into the graph as QAT's int8 codes with per-row scales
  (:class:`~kdaliens.export.exportable.RowQuantEmbedding`; 4-bit codes one per byte, as
  opset 18 has no 4-bit type). The attention ``bmm`` between two activations stays fp32.
* ``"qdq"``: ``quantize_static`` in QDQ format with int8 per-channel weights and int8
  activations whose ranges come from calibration requests (real requests when the caller
  passes them, else valid random ones).

Why ``"dynamic"`` is the default: on the default student it keeps the ranking of the fp32
model (Spearman >= 0.998, top-10 agreement >= 0.99) at fp32 speed in a file 2.8x smaller,
while ``"qdq"`` is slower (QuantizeLinear/DequantizeLinear around ops without int8 kernels)
and its per-tensor activation ranges cost ranking quality. ``benchmarks/onnx_int8_choice.py``
measures both against fp32 on a run; the README has the figures. Re-run it on the target
device before relying on them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.names import BackendName, Quantization, TargetName
from kdaliens.sdk.signature import Role

from ..check import feeds, random_requests
from ..exportable import Exportable, row_quantized
from .base import ExportConfig, LoweredModel

METHODS = ("dynamic", "qdq")
DEFAULT_METHOD = "dynamic"
# torch 2.13 exports opset 20 by default; 18 (onnxruntime >= 1.14) also runs on older device
# runtimes, and this graph needs no newer operator.
OPSET = 18

# What each method stores, for the manifest (checked against the files onnxruntime 1.32 writes).
_SCHEMES = {
    "dynamic": "onnxruntime quantize_dynamic: linear layers int8 per-channel symmetric weights with activations "
               "quantized at run time (MatMulInteger); embedding tables as QAT's codes, int8 one per byte, "
               "with per-row scales (Gather codes and scales, then Mul); attention matmuls fp32",
    "qdq": "onnxruntime quantize_static, QDQ: int8 per-channel weights, int8 activations calibrated (min-max)",
}

# ------------------------------------------------------------------------------ helpers
def ort_session(path: Path | str, threads: int = 1):
    """An onnxruntime CPU session set up like the SDK backend (sequential, all optimizations).

    Args:
        path: an ``.onnx`` or ``.ort`` file.
        threads: intra-op threads.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ lowering
def _fp32_layers(exp: Exportable) -> tuple[str, ...]:
    """Student layers onnxruntime's int8 leaves in fp32: the output layer (as QAT and the
    ExecuTorch bundle do) and ``user_proj``, whose input concatenates user fields with
    history means of very different ranges: one dynamic uint8 scale per request for all
    of them cost 0.004 AUC on the tiny test model (QAT's static ranges do not transfer)."""
    head = exp.student.head
    return (f"head.{len(head) - 1}", "user_proj")


def _torch_to_onnx(exp: Exportable, path: Path, max_candidates: int) -> list[str]:
    """Export; returns the names of the nodes of :func:`_fp32_layers` (kept fp32 in int8)."""
    import onnx
    from torch.export import Dim

    # A size-1 example would specialize the candidate dimension, so trace with >= 2.
    example = exp.example_inputs(min(4, max_candidates))
    n_cand = Dim("n_cand", min=1, max=max_candidates)
    shapes = tuple({1: n_cand} if i.role == Role.CANDIDATE else None for i in exp.signature.inputs)
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    with warnings.catch_warnings():
        # Known noise of torch 2.13's exporter: optional torchvision ops, a pytree deprecation,
        # and every cand_* input sharing the one n_cand dimension (which is what we want).
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*axis name: n_cand will not be used.*")
        registration_log.setLevel(logging.ERROR)
        try:
            # forward(*tensors): the varargs are one positional parameter, so the spec nests once.
            torch.onnx.export(exp.module.eval(), example, str(path), dynamo=True, external_data=False,
                              dynamic_shapes=(shapes,), input_names=list(exp.input_names),
                              output_names=exp.output_names, opset_version=OPSET, optimize=True, verbose=False)
        finally:
            registration_log.setLevel(level)
    # The exporter annotates every node with its FX node, module path and stack trace: about
    # half the file of a small student, and build-machine paths a device bundle should not carry.
    model = onnx.load(str(path))
    # Before the annotations go: the nodes of the layers int8 leaves in fp32.
    layers = _fp32_layers(exp)
    keep_fp32 = []
    for node in model.graph.node:
        scopes = " ".join(p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes")
        if node.op_type in ("MatMul", "Gemm") and any(layer in scopes for layer in layers):
            # quantize_dynamic first splits a Gemm into "<name>_MatMul" + "<name>_Add".
            keep_fp32 += [node.name, node.name + "_MatMul"] if node.op_type == "Gemm" else [node.name]
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))
    return keep_fp32


def _quantize(src: Path, dst: Path, method: str, calibration: list[dict[str, np.ndarray]], work: Path,
              keep_fp32: Sequence[str] = ()) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    # Shape inference + graph clean-up, so that the quantizer sees every tensor's type and shape.
    quant_pre_process(str(src), str(pre))
    if method == "dynamic":
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=list(keep_fp32))
        return

    class Reader(CalibrationDataReader):
        """Hands the calibration requests to the calibrator one at a time."""

        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    reader = Reader()
    quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(keep_fp32))


class OnnxTarget:
    """``model.onnx`` for onnxruntime (fp32, or int8 by :data:`DEFAULT_METHOD`)."""

    name = TargetName.ONNX
    backend = BackendName.ONNXRUNTIME
    id_dtype = "int64"

    def lower(self, exp: Exportable, config: ExportConfig, calibration: list[dict[str, np.ndarray]],
              out_dir: Path, log: Callable[[str], None] = print) -> LoweredModel:
        return export_to_onnx(exp, out_dir, config.quantize, config.max_candidates, calibration=calibration[:256],
                              method=config.onnx_method, log=log)


TARGET = OnnxTarget()


def export_to_onnx(exp: Exportable, out_dir: Path, quantize: str = "int8", max_candidates: int = 512,
                   calibration: list[dict[str, np.ndarray]] | None = None, method: str | None = None,
                   log: Callable[[str], None] = print) -> LoweredModel:
    """Write ``out_dir/model.onnx`` and describe it for the bundle manifest.

    The file appears only when every step succeeded (it is built in a temporary folder inside
    ``out_dir`` and renamed into place).

    Args:
        exp: the student to lower (:func:`kdaliens.export.exportable.load_exportable`).
        out_dir: the bundle folder (created if missing).
        quantize: ``"int8"`` or ``"none"`` (fp32).
        max_candidates: the largest candidate count the bundle accepts. It bounds the traced
            dimension and goes into the signature; an ONNX file keeps no upper bound, so the
            SDK enforces it.
        calibration: real requests (input name -> array) for the ``qdq`` calibration; valid
            random requests when None.
        method: ``"dynamic"`` or ``"qdq"``; :data:`DEFAULT_METHOD` when None. Ignored for fp32.
        log: progress messages.

    Raises:
        InputError: bad ``quantize``, ``method``, ``max_candidates`` or calibration requests.
    """
    import onnx

    int8 = Quantization.parse(quantize, "quantize") == Quantization.INT8
    if method is not None and method not in METHODS:
        raise InputError(f"ONNX int8 method must be one of {METHODS}, got {method!r}")
    if int(max_candidates) < 2:
        raise InputError(f"max_candidates must be at least 2, got {max_candidates}")
    max_candidates = int(max_candidates)
    method = (method or DEFAULT_METHOD) if int8 else "none"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Validated up front whatever the method, so a bad request fails before minutes of work.
    requests = [feeds(exp, r) for r in calibration] if calibration else None

    work = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out_dir))
    try:
        fp32 = work / "fp32.onnx"
        t0 = time.perf_counter()
        # int8: the tables go in as QAT's int8 codes and per-row scales; quantize_dynamic
        # would otherwise give each table one scale, off the grid QAT trained on.
        keep_fp32 = _torch_to_onnx(row_quantized(exp) if int8 else exp, fp32, max_candidates)
        onnx.checker.check_model(str(fp32), full_check=True)
        log(f"[onnx] exported fp32 graph ({fp32.stat().st_size / 1024:.1f} KB, {time.perf_counter() - t0:.1f}s)")
        final = fp32
        if int8:
            final = work / "int8.onnx"
            if not keep_fp32:
                raise RuntimeError(f"ONNX export: found none of the layers to keep fp32 ({', '.join(_fp32_layers(exp))}); "
                                   "the exporter's name scopes changed")
            _quantize(fp32, final, method, requests or random_requests(exp), work, keep_fp32)
            onnx.checker.check_model(str(final))
            log(f"[onnx] int8 ({method}): {final.stat().st_size / 1024:.1f} KB")
        os.replace(final, out_dir / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    quant: dict[str, Any] = {"method": method}
    if int8:
        quant.update(scheme=_SCHEMES[method], default_method=DEFAULT_METHOD)
    return LoweredModel(model_file="model.onnx", files=["model.onnx"],
                        signature=exp.signature.to_manifest("int64", max_candidates), quantization=quant)


def to_ort_format(onnx_path: Path | str, target_platform: str = "arm") -> Path:
    """Convert ``model.onnx`` to the ``.ort`` format of onnxruntime's minimal (mobile) builds.

    Runs ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` with the ``Fixed``
    optimization style and writes ``<name>.ort`` (plus the tool's
    ``<name>.required_operators.config``, the operator list for a minimal build) next to the
    input.

    Args:
        onnx_path: the ``.onnx`` file.
        target_platform: ``"arm"`` (phones, Raspberry Pi) or ``"amd64"``; the optimizations
            baked into the file are chosen for it (an ``arm`` file still runs on x86).

    Returns:
        The path of the ``.ort`` file.

    Raises:
        InputError: the file is missing, the tool is not installed, or the conversion failed.
    """
    import importlib.util

    src = Path(onnx_path)
    if not src.is_file():
        raise InputError(f"{src}: no such ONNX model")
    if target_platform not in ("arm", "amd64"):
        raise InputError(f"target_platform must be 'arm' or 'amd64', got {target_platform!r}")
    try:
        tool = importlib.util.find_spec("onnxruntime.tools.convert_onnx_models_to_ort")
    except ImportError:  # onnxruntime itself is missing
        tool = None
    if tool is None:
        raise InputError("no onnxruntime.tools.convert_onnx_models_to_ort here; install the full onnxruntime "
                         "wheel (pip install onnxruntime) to write .ort files")
    cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src),
           "--output_dir", str(src.parent), "--optimization_style", "Fixed", "--target_platform", target_platform]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dst = src.with_suffix(".ort")
    if proc.returncode != 0 or not dst.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise InputError(f"{src}: .ort conversion failed (exit {proc.returncode}): " + " | ".join(tail))
    return dst
