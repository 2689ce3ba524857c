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

Why ``"dynamic"`` is the default, measured with ``benchmarks/onnx_int8_choice.py`` on this
project's build machine (AMD EPYC with AVX-512 VNNI, 2 shared cores, onnxruntime 1.32.0, one
intra-op thread, one request of 100 candidates, p50/p99 wall time over 5000 runs taken in
turns; parity against the fp32 torch module on 32 valid random requests of 100 candidates).
Student of the default config (d=16, history 30, MLP 64-32), trained on MovieLens-100K with
QAT; fp32 torch scores have a per-request standard deviation of 1.6:

========  ========  ========  =============  ===========  ======  =======
method    p50 (us)  p99 (us)  max |d score|  min Spearman top-10  size KB
========  ========  ========  =============  ===========  ======  =======
fp32      104.5     236.7     1.4e-06        1.0000       1.000   153.5
dynamic   104.1     250.1     0.10           0.9989       0.991   55.2
qdq       163.3     364.5     2.89           0.9770       0.916   73.9
========  ========  ========  =============  ===========  ======  =======

On the run's real CTR test split (9,596 requests; ``--auc``, QDQ calibrated on 256 of them as
``kdaliens-export`` does), click AUC: torch fp32 0.81223, ONNX fp32 0.81223, dynamic 0.81227,
qdq 0.81022 (max |d score| 0.28 for dynamic, 5.0 for qdq).
The ``--tiny`` student (d=8, history 6) gives the same picture: p50 78.9 / 82.9 / 124.7 us,
max |d score| 1e-06 / 0.063 / 0.95, min Spearman 1.0 / 0.9992 / 0.9878, 72.9 / 32.2 / 51.7 KB.

So: dynamic keeps the ranking (Spearman >= 0.998, top-10 >= 0.99) at fp32 speed in a file
2.8x smaller. QDQ is about 55% slower (an onnxruntime profile puts half its kernel time in
QuantizeLinear/DequantizeLinear around ops that have no int8 kernel) and its per-tensor
activation ranges cost ranking quality (max error 1.8 standard deviations, top-10 agreement
0.92). Neither int8 form is faster than fp32 here: one request is about 0.7 M multiply-adds,
and the profile puts the matmuls under 10% of fp32 kernel time; gathers, reductions,
element-wise ops and per-node overhead take the rest. Choose ``quantize="none"`` where size
does not matter, and re-run the benchmark on the target device before relying on these numbers.

The same numbers are in :data:`MEASURED` and in the ``quantization`` block that
:func:`export_to_onnx` returns (next to this export's own parity check).
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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdaliens.sdk.errors import InputError

from .exportable import Exportable, row_quantized

METHODS = ("dynamic", "qdq")
DEFAULT_METHOD = "dynamic"
OUTPUT_NAMES = ["score", "click"]
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

# What benchmarks/onnx_int8_choice.py measured when DEFAULT_METHOD was chosen (see the
# module docstring for the set-up).
MEASURED: dict[str, Any] = {
    "setup": "benchmarks/onnx_int8_choice.py; AMD EPYC (AVX-512 VNNI), onnxruntime 1.32.0, 1 intra-op thread, "
             "100 candidates, p50/p99 over 5000 runs; parity vs the fp32 torch module on 32 random valid requests",
    "student": "default config (d=16, history 30, MLP 64-32), MovieLens-100K, QAT weights",
    "fp32": {"p50_us": 104.5, "p99_us": 236.7, "max_abs_score_diff": 1.4e-06, "min_spearman": 1.0,
             "top10_agreement": 1.0, "size_kb": 153.5},
    "dynamic": {"p50_us": 104.1, "p99_us": 250.1, "max_abs_score_diff": 0.102, "min_spearman": 0.9989,
                "top10_agreement": 0.991, "size_kb": 55.2},
    "qdq": {"p50_us": 163.3, "p99_us": 364.5, "max_abs_score_diff": 2.89, "min_spearman": 0.9770,
            "top10_agreement": 0.916, "size_kb": 73.9},
    "ctr_test_auc": {"requests": 9596, "torch_fp32": 0.81223, "fp32": 0.81223, "dynamic": 0.81227, "qdq": 0.81022},
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


def _feeds(exp: Exportable, request: dict[str, Any]) -> dict[str, np.ndarray]:
    """One request as contiguous arrays in the signature's dtypes (ids int64, mask float32)."""
    dtypes = {s["name"]: np.dtype(s["dtype"]) for s in exp.input_specs("n_cand")}
    missing = [n for n in exp.input_names if n not in request]
    if missing:
        raise InputError(f"calibration request lacks inputs {missing}")
    return {n: np.ascontiguousarray(np.asarray(request[n]), dtype=dtypes[n]) for n in exp.input_names}


def example_requests(exp: Exportable, n: int = 16, n_cand: int | Sequence[int] = (2, 200), seed: int = 0
                     ) -> list[dict[str, np.ndarray]]:
    """Valid random requests (ids within each field's cardinality, a half-full history).

    Args:
        exp: the model to feed.
        n: how many requests.
        n_cand: a fixed candidate count, or a ``(low, high)`` range to draw counts from.
        seed: makes the requests reproducible.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(n_cand) if isinstance(n_cand, int) else int(rng.integers(n_cand[0], n_cand[1] + 1))
        tensors = exp.example_inputs(k, seed=seed * 100_003 + i)
        out.append(_feeds(exp, {name: t.numpy() for name, t in zip(exp.input_names, tensors)}))
    return out


def torch_scores(exp: Exportable, request: dict[str, np.ndarray]) -> np.ndarray:
    """The fp32 torch module's ``score`` (1, N) for one request (input name -> array)."""
    with torch.no_grad():
        score, _ = exp.module(*(torch.from_numpy(request[n]) for n in exp.input_names))
    return score.numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score vectors (1.0 for fewer than two items)."""
    if a.size < 2:
        return 1.0
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 1.0


def score_parity(exp: Exportable, session, requests: Iterable[dict[str, np.ndarray]], k: int = 10
                 ) -> dict[str, float]:
    """Exported vs fp32 torch scores on the same requests.

    Args:
        exp: the reference (its fp32 torch module).
        session: an onnxruntime session of the exported model.
        requests: input name -> array, one dict per request.
        k: the cut-off of the top-k agreement.

    Returns:
        ``max_abs_score_diff`` (over all candidates), ``min_spearman`` and ``mean_spearman``
        (rank correlation per request), ``topk_agreement`` (mean overlap of the top ``k``)
        and ``ref_score_std`` (mean spread of the reference scores, to read the diff against).
    """
    max_diff, rhos, overlaps, stds = 0.0, [], [], []
    for req in requests:
        ref = torch_scores(exp, req).ravel()
        stds.append(float(ref.std()))
        got = session.run(["score"], req)[0].ravel()
        max_diff = max(max_diff, float(np.abs(got - ref).max()))
        rhos.append(spearman(got, ref))
        kk = min(k, ref.size)
        overlaps.append(len(set(np.argsort(-ref)[:kk]) & set(np.argsort(-got)[:kk])) / kk)
    return {"max_abs_score_diff": max_diff, "min_spearman": float(min(rhos)), "mean_spearman": float(np.mean(rhos)),
            f"top{k}_agreement": float(np.mean(overlaps)), "ref_score_std": float(np.mean(stds))}


def time_runs(session, request: dict[str, np.ndarray], runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU nanoseconds of ``runs`` calls of ``session.run`` on one request.

    With one intra-op thread onnxruntime computes on the calling thread, so the CPU time
    leaves out the time the thread waited for a core (a busy, shared machine).
    """
    wall, cpu = np.empty(runs), np.empty(runs)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(runs):
        t0, c0 = clock(), cpu_clock()
        session.run(OUTPUT_NAMES, request)
        cpu[i] = cpu_clock() - c0
        wall[i] = clock() - t0
    return wall, cpu


def latency_us(session, request: dict[str, np.ndarray], runs: int = 2000, warmup: int = 100) -> dict[str, float]:
    """Latency of ``session.run`` on one request, in microseconds: wall p50/p99 and CPU p50."""
    time_runs(session, request, warmup)
    wall, cpu = time_runs(session, request, runs)
    return {"p50_us": float(np.percentile(wall, 50) / 1e3), "p99_us": float(np.percentile(wall, 99) / 1e3),
            "cpu_p50_us": float(np.percentile(cpu, 50) / 1e3)}


# ------------------------------------------------------------------------------ lowering
def _fp32_layers(exp: Exportable) -> tuple[str, ...]:
    """Student layers onnxruntime's int8 leaves in fp32: the output layer (as QAT and the
    ExecuTorch bundle do) and ``user_proj``, whose input concatenates user fields with
    history means of very different ranges: one dynamic uint8 scale per request for all
    of them cost 0.004 AUC on the tiny test model (QAT's static ranges do not transfer)."""
    head = exp.module.inner.student.head
    return (f"head.{len(head) - 1}", "user_proj")


def _torch_to_onnx(exp: Exportable, path: Path, max_candidates: int) -> list[str]:
    """Export; returns the names of the nodes of :func:`_fp32_layers` (kept fp32 in int8)."""
    import onnx
    from torch.export import Dim

    # A size-1 example would specialize the candidate dimension, so trace with >= 2.
    example = exp.example_inputs(min(4, max_candidates))
    n_cand = Dim("n_cand", min=1, max=max_candidates)
    shapes = tuple({1: n_cand} if name.startswith("cand_") else None for name in exp.input_names)
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
                              output_names=OUTPUT_NAMES, opset_version=OPSET, optimize=True, verbose=False)
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


def export_to_onnx(exp: Exportable, out_dir: Path, quantize: str = "int8", max_candidates: int = 512,
                   calibration: list[dict[str, np.ndarray]] | None = None, method: str | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
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
            random requests when None. The returned parity check always uses 16 held-out
            valid random requests of 100 candidates (the bundle's parity block is for real data).
        method: ``"dynamic"`` or ``"qdq"``; :data:`DEFAULT_METHOD` when None. Ignored for fp32.
        log: progress messages.

    Returns:
        ``model_file``, ``files``, ``signature`` (inputs, outputs, ``max_candidates``) and
        ``quantization`` (``method``, ``measured``: the benchmark behind the default, and
        ``parity``: this export against the fp32 torch module).

    Raises:
        InputError: bad ``quantize``, ``method``, ``max_candidates`` or calibration requests.
    """
    import onnx

    if quantize not in ("int8", "none"):
        raise InputError(f"quantize must be 'int8' or 'none', got {quantize!r}")
    if method is not None and method not in METHODS:
        raise InputError(f"ONNX int8 method must be one of {METHODS}, got {method!r}")
    if int(max_candidates) < 2:
        raise InputError(f"max_candidates must be at least 2, got {max_candidates}")
    max_candidates = int(max_candidates)
    method = (method or DEFAULT_METHOD) if quantize == "int8" else "none"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Validated up front whatever the method, so a bad request fails before minutes of work.
    requests = [_feeds(exp, r) for r in calibration] if calibration else None

    work = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out_dir))
    try:
        fp32 = work / "fp32.onnx"
        t0 = time.perf_counter()
        # int8: the tables go in as QAT's int8 codes and per-row scales; quantize_dynamic
        # would otherwise give each table one scale, off the grid QAT trained on.
        keep_fp32 = _torch_to_onnx(row_quantized(exp) if quantize == "int8" else exp, fp32, max_candidates)
        onnx.checker.check_model(str(fp32), full_check=True)
        log(f"[onnx] exported fp32 graph ({fp32.stat().st_size / 1024:.1f} KB, {time.perf_counter() - t0:.1f}s)")
        final = fp32
        if quantize == "int8":
            final = work / "int8.onnx"
            if not keep_fp32:
                raise RuntimeError(f"ONNX export: found none of the layers to keep fp32 ({', '.join(_fp32_layers(exp))}); "
                                   "the exporter's name scopes changed")
            _quantize(fp32, final, method, requests or example_requests(exp), work, keep_fp32)
            onnx.checker.check_model(str(final))
            log(f"[onnx] int8 ({method}): {final.stat().st_size / 1024:.1f} KB")
        # Held-out requests of the benchmark's shape (the QDQ calibration never saw them).
        parity = score_parity(exp, ort_session(final), example_requests(exp, n=16, n_cand=100, seed=1))
        log(f"[onnx] parity vs torch fp32: max |score diff| {parity['max_abs_score_diff']:.2e}, "
            f"min Spearman {parity['min_spearman']:.4f}")
        os.replace(final, out_dir / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    outputs = [{"name": n, "dtype": "float32", "shape": [1, "n_cand"]} for n in OUTPUT_NAMES]
    quant: dict[str, Any] = {"method": method, "parity": parity}
    if quantize == "int8":
        quant.update(scheme=_SCHEMES[method], default_method=DEFAULT_METHOD, measured=MEASURED)
    return {"model_file": "model.onnx", "files": ["model.onnx"],
            "signature": {"inputs": exp.input_specs("n_cand"), "outputs": outputs, "max_candidates": max_candidates},
            "quantization": quant}


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
