"""ExecuTorch target: the student as a ``.pte`` for the XNNPACK delegate.

Recipe (see ../shared/RUNTIMES.md for why each step is there):

1. int8 only: embedding tables weight-only with one scale per row, stored as QAT
   trained them (:class:`~kdaliens.training.config.QuantConfig`): int8, and the large
   item-id table 4-bit with fp16 scales. They run on ExecuTorch's ``embedding_byte`` /
   ``embedding_4bit`` kernels (:class:`PackedEmbedding`); the tables are most of the file.
2. ``torch.export`` with a dynamic candidate dimension (``Dim("n_cand", 1, max)``); the
   history has a fixed length and a mask, because XNNPACK takes one dynamic dimension.
3. int8 only: PT2E with the XNNPACK quantizer on the hidden linear layers
   (:func:`kdaliens.export.recipes.xnnpack_quantizer`, on the grid QAT trained),
   calibrated on real requests, starting from the QAT student's weights.
4. ``to_edge_transform_and_lower`` with the XNNPACK partitioner (an ETRecord is kept for
   per-operator profiling), then ``to_executorch`` with quant fusion and constant
   propagation.

What XNNPACK did not take is logged and returned, so a regression that splits the graph
shows up in the export summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdaliens.sdk.fileio import atomic_write
from kdaliens.sdk.names import BackendName, Quantization, TargetName
from kdaliens.sdk.signature import Role

from ..bundle import DEBUG_STAGING
from ..exportable import Exportable
from .base import ExportConfig, LoweredModel, as_tuples


def _dynamic_shapes(exp: Exportable, max_candidates: int):
    from torch.export import Dim

    n = Dim("n_cand", min=1, max=max_candidates)
    shapes = tuple({1: n} if i.role == Role.CANDIDATE else None for i in exp.signature.inputs)
    return (shapes,)  # forward(*tensors): one tuple argument


class PackedEmbedding(nn.Module):
    """A weight-only quantized table that lowers to ExecuTorch's ``embedding_byte`` or
    ``embedding_4bit`` kernel (``executorch.kernels.quantized``).

    The codes and scales come from :func:`kdaliens.training.quantize.quantize_table`, so
    a QAT-snapped table is stored exactly. 4-bit codes are packed two per byte. With fp16
    scales the kernel returns fp16 and the rows are cast to fp32: ExecuTorch 1.5.1's
    ``embedding_4bit.dtype_out`` with fp16 scales and an fp32 output returned wrong rows
    here (NaN), while the fp16 output is exact.
    """

    def __init__(self, weight: torch.Tensor, bits: int, scale_dtype: str):
        super().__init__()
        import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  (registers the ops)

        from kdaliens.training.quantize import quantize_table

        q, scale = quantize_table(weight, bits, scale_dtype)
        if bits == 4:
            q = torch.ops.quant_fusion._pack_embedding_weight.default(q, 4)
        self.bits = bits
        self.register_buffer("codes", q)
        self.register_buffer("scales", scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        op, lo, hi = (ops.embedding_4bit, -8, 7) if self.bits == 4 else (ops.embedding_byte, -128, 127)
        rows = op.dtype(self.codes, self.scales, None, lo, hi, ids, dtype=self.scales.dtype)
        return rows.float()


def _quantize_embeddings(module: nn.Module, recipe) -> list[tuple[str, int, str, tuple[int, int]]]:
    """Swap every nn.Embedding for a :class:`PackedEmbedding` (``recipe``: QuantConfig)."""
    from kdaliens.training.quantize import swap_embeddings

    return swap_embeddings(module, recipe, lambda emb, bits, dtype: PackedEmbedding(emb.weight, bits, dtype))


def delegation_report(edge_program) -> dict[str, Any]:
    """Operators left outside the XNNPACK delegate (they run on portable kernels)."""
    gm = edge_program.exported_program().graph_module
    delegated, other = 0, Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif name not in ("getitem",):
            other[name] += 1
    return {"delegate_calls": delegated, "not_delegated": dict(other.most_common())}


class ExecuTorchTarget:
    """``model.pte`` for ExecuTorch with the XNNPACK delegate (``model.etrecord`` in ``<out>.debug/`` on request)."""

    name = TargetName.EXECUTORCH
    backend = BackendName.EXECUTORCH
    id_dtype = "int64"

    def lower(self, exp: Exportable, config: ExportConfig, calibration: list[dict[str, np.ndarray]],
              out_dir: Path, log: Callable[[str], None] = print) -> LoweredModel:
        calib = as_tuples(calibration[:256], exp.input_names) if calibration else None
        program, reference, quant_info, report = _lower(exp, config.quantize == Quantization.INT8,
                                                        config.max_candidates, calib, config.debug, log)
        files, debug_files = _write(program, Path(out_dir), config.debug)
        log(f"[executorch] wrote model.pte ({files['model.pte'] / 1024:.1f} KB), {report['delegate_calls']} XNNPACK "
            "delegate call(s)")
        int8 = config.quantize == Quantization.INT8
        return LoweredModel(model_file="model.pte", files=list(files),
                            signature=exp.signature.to_manifest(self.id_dtype, config.max_candidates),
                            quantization=quant_info, delegation=report, reference=reference,
                            reference_name="pytorch int8 (PT2E)" if int8 else "pytorch fp32",
                            debug_files=debug_files)


def _lower(exp: Exportable, int8: bool, max_candidates: int, calibration: list[tuple[torch.Tensor, ...]] | None,
           etrecord: bool, log: Callable[[str], None]):
    """torch.export -> (int8: PT2E) -> XNNPACK-lowered program; also the parity reference."""
    import copy

    import executorch.kernels.quantized  # noqa: F401  (registers embedding_byte etc.)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    module = copy.deepcopy(exp.module).eval()
    example = exp.example_inputs(n_cand=4)
    shapes = _dynamic_shapes(exp, max_candidates)
    quant_info: dict[str, Any] = {"scheme": "none"}
    with torch.no_grad():
        if int8:
            ep, quant_info = _pt2e_int8(exp, module, example, shapes, calibration, log)
        else:
            ep = torch.export.export(module, example, dynamic_shapes=shapes)
        # The exported PyTorch graph (int8 q/dq included) is the parity reference.
        reference = ep.module()
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], generate_etrecord=etrecord)
        report = delegation_report(edge)
        if report["not_delegated"]:
            log(f"[executorch] not delegated to XNNPACK: {report['not_delegated']}")
        program = edge.to_executorch(ExecutorchBackendConfig(
            do_quant_fusion_and_const_prop=True,
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=True, alloc_graph_output=True),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
        ))
    return program, reference, quant_info, report


def _pt2e_int8(exp: Exportable, module: nn.Module, example, shapes, calibration, log: Callable[[str], None]):
    """Packed embedding tables, then PT2E int8 of the hidden linear layers, calibrated."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from ..recipes import xnnpack_quantizer

    tables = _quantize_embeddings(module, exp.config.quant)
    kinds = Counter(f"{b}-bit/{d[5:]}-bit scales" for _, b, d, _ in tables)
    log(f"[executorch] {len(tables)} embedding tables weight-only per row: "
        + ", ".join(f"{n} x {k}" for k, n in sorted(kinds.items())))
    ep = torch.export.export(module, example, dynamic_shapes=shapes)
    prepared = prepare_pt2e(ep.module(), xnnpack_quantizer(exp.student, is_qat=False))
    batches = calibration or [exp.example_inputs(n_cand=32, seed=s) for s in range(8)]
    for args in batches:
        prepared(*args)
    quantized = convert_pt2e(prepared)
    log(f"[executorch] PT2E int8 (XNNPACK quantizer, hidden linear layers), calibrated on {len(batches)} requests")
    # The converted graph takes the inputs as flat positional arguments.
    ep = torch.export.export(quantized, example, dynamic_shapes=shapes[0])
    info = {"scheme": "int8", "linear": "PT2E XNNPACK static int8, per-channel weights",
            "embeddings": "weight-only symmetric per row (embedding_byte / embedding_4bit)",
            "embedding_tables": [{"name": n, "shape": list(shape), "bits": b, "scale_dtype": d}
                                 for n, b, d, shape in tables], "calibration_requests": len(batches),
            "weights_from": Path(exp.source_checkpoint).name}
    return ep, info


def _write(program, out_dir: Path, debug: bool) -> tuple[dict[str, int], list[str]]:
    """``model.pte`` (name -> size) and, with ``debug``, ``model.etrecord`` in the debug staging folder."""
    atomic_write(out_dir / "model.pte", program.write_to_file)
    debug_files = []
    if debug:
        d = out_dir / DEBUG_STAGING
        d.mkdir(exist_ok=True)
        program.get_etrecord().save(str(d / "model.etrecord"))
        debug_files.append("model.etrecord")
    return {"model.pte": (out_dir / "model.pte").stat().st_size}, debug_files


TARGET = ExecuTorchTarget()
