"""LiteRT (TFLite) target: the student as one ``model.tflite`` with a signature per bucket.

Recipe (see ../shared/RUNTIMES.md for why each step is there):

1. Conversion with ``litert_torch``. Dynamic shapes fail in conversion, so the candidate
   count is fixed per *bucket* (16/64/256/512 by default): one signature per bucket
   (``n16``, ``n64``, ...) in one file; the SDK pads a request up to the smallest bucket
   that holds it. The weights are stored once and shared by every signature.
2. Ids are int32 (the converter turns int64 into int32 anyway); ``hist_mask`` is float32.
   The module is traced with keyword inputs and a dict output, so the converter names the
   signature inputs and outputs after ours (``user_age``, ..., ``score``, ``click``); with
   positional inputs it would name them ``args_<i>`` / ``output_<i>``. The name map found
   in the converted file is recorded in ``signature["tensor_names"]`` all the same.
3. int8: the fp32 flatbuffer goes through ai-edge-quantizer with its weight-only recipe
   (:data:`INT8_RECIPE`).
4. The flatbuffer is compacted: the converter names every tensor after its full module
   path (about 80 KB of strings for the tiny student), and the quantizer writes a copy of
   each per-channel scale/zero-point table into every signature's subgraph (one scale per
   embedding row, four times). Tensors get short names, identical quantization tables are
   written once, and buffers stay 16-byte aligned.
5. The result is loaded with ai-edge-litert and every signature's inputs are checked
   against the model's signature; only then is ``model.tflite`` renamed into place. The
   export's shared self-check then runs one request per bucket (:mod:`kdaliens.export.check`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.extras import install_command
from kdaliens.sdk.fileio import atomic_write
from kdaliens.sdk.names import BackendName, Quantization, TargetName

from ..exportable import Exportable
from .base import ExportConfig, LoweredModel

DEFAULT_BUCKETS: tuple[int, ...] = (16, 64, 128, 256, 512)
MODEL_FILE = "model.tflite"

#: The ai-edge-quantizer recipe behind ``quantize="int8"``.
#:
#: ``weight_only_wi8_afp32``: int8 symmetric per-channel weights (one scale per embedding
#: row, per output channel of each linear layer), DEQUANTIZE ops in front of the
#: consumers, float32 compute. TFLite dequantizes constant weights once, when the
#: interpreter prepares the graph, so each call runs the same float kernels (XNNPACK) as
#: the fp32 model. ``dynamic_wi8_afp32`` keeps the weights int8 at run time and quantizes
#: the linear layers' activations on the fly (hybrid kernels); on this student it gave
#: 2.5x the score error and was slower (README, "int8 recipes"). Its one advantage, tables
#: staying int8 in RAM, matters only for catalogs of millions of items.
INT8_RECIPE = "weight_only_wi8_afp32"

def signature_key(bucket: int) -> str:
    """The signature name of a candidate bucket (``n64`` holds 64 candidates)."""
    return f"n{int(bucket)}"


class _NamedIO(nn.Module):
    """Keyword inputs and a dict output, so the converter keeps our names in the signature."""

    def __init__(self, inner: nn.Module, input_names: Sequence[str], output_names: Sequence[str]):
        super().__init__()
        self.inner = inner
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.inner(*(inputs[n] for n in self.input_names))
        return dict(zip(self.output_names, outs))


def _check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(b) for b in buckets}))
    except (TypeError, ValueError) as e:
        raise InputError(f"candidate buckets must be integers, got {buckets!r}") from e
    if not out or out[0] < 1:
        raise InputError(f"candidate buckets must be positive integers, got {buckets!r}")
    return out


def _convert(exp: Exportable, buckets: tuple[int, ...]) -> bytes:
    """fp32 flatbuffer with one fixed-shape signature per bucket."""
    try:
        import litert_torch
    except ImportError as e:
        raise ModuleNotFoundError(f"the LiteRT target needs litert-torch ({e}); install it with: "
                                  f"{install_command('export')}", name="litert_torch") from e

    module = _NamedIO(exp.module, exp.input_names, exp.output_names).eval()
    converter = litert_torch.Converter()
    for b in buckets:
        example = exp.example_inputs(n_cand=b, id_dtype=torch.int32)
        converter.signature(signature_key(b), module, sample_kwargs=dict(zip(exp.input_names, example)))
    # litert-torch prints a progress line per step; we log a summary instead, unless the
    # user asked for its progress explicitly.
    quiet = "LITERT_TORCH_SHOW_PROGRESS" not in os.environ
    if quiet:
        os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with torch.no_grad():
            model = converter.convert()
        return bytes(model.model_content())
    finally:
        if quiet:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)


def _int8_recipe(name: str):
    from ai_edge_quantizer import recipe

    return getattr(recipe, name)()


def _quantize(fp32: bytes, recipe_name: str = INT8_RECIPE) -> bytes:
    """int8 weights through ai-edge-quantizer (see :data:`INT8_RECIPE`)."""
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(bytearray(fp32))
    q.load_quantization_recipe(_int8_recipe(recipe_name))
    result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def compact_flatbuffer(data: bytes) -> bytes:
    """Short tensor names, one copy of each quantization table, 16-byte aligned buffers.

    The graph and the weights are unchanged; only what the interpreter ignores (tensor
    names) or reads through a reference (quantization tables) is rewritten.

    Args:
        data: a ``.tflite`` flatbuffer.

    Returns:
        The rewritten flatbuffer.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    packed: dict[tuple, int] = {}

    class SharedQuantization(schema.QuantizationParametersT):
        # A table already written is referenced again; flatbuffers allow shared offsets.
        def Pack(self, builder):  # noqa: N802 (flatbuffers API)
            if self.details is not None:
                return super().Pack(builder)
            key = tuple(None if v is None else (np.asarray(v).dtype.str, np.asarray(v).tobytes())
                        for v in (self.min, self.max, self.scale, self.zeroPoint))
            key += (self.quantizedDimension, self.detailsType)
            if key not in packed:
                packed[key] = super().Pack(builder)
            return packed[key]

    class AlignedBuffer(schema.BufferT):
        # The schema asks for ``force_align: 16``, which the Python object API ignores.
        def Pack(self, builder):  # noqa: N802 (flatbuffers API)
            if self.data is None or len(self.data) == 0:
                return super().Pack(builder)
            raw = np.ascontiguousarray(self.data, dtype=np.uint8).ravel()
            builder.StartVector(1, raw.size, 16)
            builder.head -= raw.size
            builder.Bytes[builder.head:builder.head + raw.size] = raw.tobytes()
            vec = builder.EndVector()
            schema.BufferStart(builder)
            schema.BufferAddData(builder, vec)
            return schema.BufferEnd(builder)

    for sg in model.subgraphs:
        io = set(sg.inputs or []) | set(sg.outputs or [])
        for i, t in enumerate(sg.tensors):
            if i not in io:  # input/output tensors keep their (short) converter names
                t.name = f"t{i}"
            if t.quantization is not None:
                t.quantization.__class__ = SharedQuantization
    for b in model.buffers:
        b.__class__ = AlignedBuffer
    builder = flatbuffers.Builder(max(1024, len(data)))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _io_names(interpreter, exp: Exportable, key: str) -> dict[str, dict[str, str]]:
    """Our input/output names -> the names the signature uses in the file."""
    sig = interpreter.get_signature_list()[key]
    file_in, file_out = list(sig["inputs"]), list(sig["outputs"])
    if set(exp.input_names) <= set(file_in):
        inputs = {n: n for n in exp.input_names}
    else:  # positional tracing: args_<i> in our input order
        inputs = {n: f"args_{i}" for i, n in enumerate(exp.input_names)}
    if set(exp.output_names) <= set(file_out):
        outputs = {n: n for n in exp.output_names}
    else:
        outputs = {n: f"output_{i}" for i, n in enumerate(exp.output_names)}
    missing = sorted(set(inputs.values()) - set(file_in)) + sorted(set(outputs.values()) - set(file_out))
    if missing or len(file_in) != len(inputs):
        raise RuntimeError(f"signature {key!r} of the converted model has inputs {file_in} and outputs {file_out}; "
                           f"cannot map them onto {exp.input_names} -> {exp.output_names}")
    return {"inputs": inputs, "outputs": outputs}


def _check(data: bytes, exp: Exportable, buckets: tuple[int, ...]) -> dict[str, dict[str, str]]:
    """Load the model with ai-edge-litert; every bucket's signature must take our inputs.

    Returns our input/output names -> the names the signatures use in the file.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=1)
    sigs = interpreter.get_signature_list()
    missing = [signature_key(b) for b in buckets if signature_key(b) not in sigs]
    if missing:
        raise RuntimeError(f"converted model lacks signatures {missing}; it has {sorted(sigs)}")
    names = _io_names(interpreter, exp, signature_key(buckets[0]))
    sig = exp.signature
    for b in buckets:
        details = interpreter.get_signature_runner(signature_key(b)).get_input_details()
        for spec, shape in zip(sig.inputs, sig.shapes(b)):
            d = details[names["inputs"][spec.name]]
            dtype = spec.dtype("int32")
            if tuple(d["shape"]) != tuple(shape) or np.dtype(d["dtype"]) != np.dtype(dtype):
                raise RuntimeError(f"signature {signature_key(b)!r}: input {spec.name} is "
                                   f"{np.dtype(d['dtype'])}{list(d['shape'])}, expected {dtype}{list(shape)}")
    return names


class LiteRTTarget:
    """``model.tflite`` for LiteRT, one fixed-shape signature per candidate bucket."""

    name = TargetName.LITERT
    backend = BackendName.LITERT
    id_dtype = "int32"

    def lower(self, exp: Exportable, config: ExportConfig, calibration: list[dict[str, np.ndarray]],
              out_dir: Path, log: Callable[[str], None] = print) -> LoweredModel:
        buckets = tuple(b for b in (config.buckets or DEFAULT_BUCKETS) if b <= config.max_candidates)
        return export_to_litert(exp, out_dir, config.quantize, buckets=buckets or (config.max_candidates,), log=log)


TARGET = LiteRTTarget()


def export_to_litert(exp: Exportable, out_dir: Path, quantize: str = "int8",
                     buckets: tuple[int, ...] = DEFAULT_BUCKETS,
                     log: Callable[[str], None] = print) -> LoweredModel:
    """Write ``out_dir/model.tflite`` and describe it for the bundle manifest.

    The file appears only when conversion, quantization and the signature check all
    succeeded (it is written to a temporary file in ``out_dir`` and renamed into place).

    Args:
        exp: the student to lower (:func:`kdaliens.export.exportable.load_exportable`).
        out_dir: the bundle folder (created if missing).
        quantize: ``"int8"`` (weight-only int8, see :data:`INT8_RECIPE`) or ``"none"``.
        buckets: candidate counts, one signature each; a request is padded up to the
            smallest bucket that holds it, and the largest is ``max_candidates``.
        log: progress messages.

    Returns:
        The lowered model; its signature adds ``candidate_buckets``, ``signature_keys``
        (bucket -> signature name) and ``tensor_names`` (our input/output names -> the
        names in the file); ``check_candidates`` asks the self-check to run every bucket.

    Raises:
        InputError: bad ``quantize`` or ``buckets``.
        RuntimeError: the converted model does not load or lacks a signature.
    """
    int8 = Quantization.parse(quantize, "quantize") == Quantization.INT8
    buckets = _check_buckets(buckets)
    out_dir = Path(out_dir)

    t0 = time.perf_counter()
    fp32 = _convert(exp, buckets)
    log(f"[litert] converted {len(buckets)} signatures {[signature_key(b) for b in buckets]} "
        f"({len(fp32) / 1024:.1f} KB, {time.perf_counter() - t0:.1f}s)")
    data = fp32
    if int8:
        data = _quantize(fp32)
        log(f"[litert] int8 ({INT8_RECIPE}): {len(data) / 1024:.1f} KB before compaction")
    data = compact_flatbuffer(data)
    names = _check(data, exp, buckets)
    atomic_write(out_dir / MODEL_FILE, data)
    log(f"[litert] wrote {MODEL_FILE} ({len(data) / 1024:.1f} KB)")

    signature = exp.signature.to_manifest("int32", max(buckets), candidate_buckets=list(buckets),
                                          signature_keys={b: signature_key(b) for b in buckets}, tensor_names=names)
    quant: dict[str, Any] = {"method": "none", "size_bytes": len(data),
                             "fp32_size_bytes": len(compact_flatbuffer(fp32)) if int8 else len(data)}
    if int8:
        quant.update(method=INT8_RECIPE, tool="ai-edge-quantizer",
                     scheme="int8 symmetric per-channel weights (embedding rows, linear output channels), "
                            "dequantized once at load; float32 activations and compute",
                     weights_from=Path(exp.source_checkpoint).name)
    return LoweredModel(model_file=MODEL_FILE, files=[MODEL_FILE], signature=signature, quantization=quant,
                        check_candidates=buckets)
