"""int8 for the student: the grid, QAT graph preparation and conversion. No runtime needed.

QAT fakes one runtime-neutral grid (:class:`Int8Grid`); each exporter stores it with its
runtime's recipe (``kdaliens.export.recipes``, checked to annotate the same graph), so
the grid QAT trained is the grid that ships:

* linear layers: int8 per-channel symmetric weights and int8 activations, except the
  output layer, whose logits keep full precision (int8 logits would tie many candidates
  and cost ranking quality);
* element-wise add/mul/cat and the attention matmuls stay fp32 (the device runtimes run
  them in fp32 either way);
* embedding tables: weight-only, symmetric, one scale per row; int8, except tables with
  many rows (the item-id table), which are 4-bit with fp16 scales by default
  (:class:`~kdaliens.training.config.QuantConfig`). QAT trains them through fake
  quantization on that grid; the exporters store exactly those values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from kdaliens.sdk.signature import ModelSignature

from .models.student import StudentRanker


def student_input_names(spec) -> list[str]:
    """Positional input order of the student graph (and of exported bundles)."""
    return ModelSignature.from_spec(spec).names


class StudentGraphIO(nn.Module):
    """Positional-input wrapper: what torch.export captures (and what bundles run)."""

    def __init__(self, student: StudentRanker):
        super().__init__()
        self.student = student
        self.input_names = student_input_names(student.spec)

    def forward(self, *tensors: torch.Tensor):
        out = self.student(dict(zip(self.input_names, tensors)))
        return out["interaction"], out["click_logit"], out["att"]


def example_inputs(spec, B: int = 2, N: int = 3) -> tuple[torch.Tensor, ...]:
    """Synthetic inputs (B users, N candidates, all ids OOV) in the graph's input order.

    B and N are at least 2 so that torch.export keeps them dynamic.
    """
    sig = ModelSignature.from_spec(spec)
    return tuple(torch.ones(shape, dtype=torch.long if i.is_id else torch.bool)
                 for i, shape in zip(sig.inputs, sig.shapes(N, batch=B)))


def export_student_graph(student: StudentRanker):
    """torch.export with dynamic batch and candidate dims (history length stays fixed)."""
    from torch.export import Dim

    io = StudentGraphIO(student).eval()
    ex = example_inputs(student.spec)
    b, n = Dim("batch", min=1, max=65536), Dim("n_cand", min=1, max=65536)
    cand = set(ModelSignature.from_spec(student.spec).candidate_names)
    shapes = [{0: b, 1: n} if name in cand else {0: b} for name in io.input_names]
    # forward(*tensors): the varargs form one tuple argument.
    return torch.export.export(io, ex, dynamic_shapes=(tuple(shapes),)), io.input_names


def _row_scales(w: torch.Tensor, qmax: int, dtype: torch.dtype) -> torch.Tensor:
    return (w.abs().amax(dim=1) / qmax).to(dtype).clamp(min=torch.finfo(dtype).tiny)


def _codes(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale.float()[:, None]), -qmax, qmax)


def quantize_table(weight: torch.Tensor, bits: int, scale_dtype: str = "float32"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization of an embedding table.

    Returns ``(q, scale)``: int8 codes in ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` (so
    -8 is never used at 4 bits, which keeps the grid symmetric) and one scale per row in
    ``scale_dtype``. :func:`dequantize_table` gives the table the device computes with.
    Quantizing a table that is already on its grid gives back the same codes and scales,
    which is how the exporters reproduce QAT's tables exactly.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    qmax = 2 ** (bits - 1) - 1
    dtype = getattr(torch, scale_dtype)
    w = weight.detach().float()
    base = _row_scales(w, qmax, dtype)

    def codes(scale: torch.Tensor) -> torch.Tensor:
        return _codes(w, scale, qmax).to(torch.int8)

    q, scale = codes(base), base
    # A table already on a grid whose rows were rounded to the scale dtype (fp16) can sit
    # one ulp from the scale the max gives back: take the neighbour that reproduces it.
    for other in (torch.nextafter(base, torch.full_like(base, float("inf"))),
                  torch.nextafter(base, torch.zeros_like(base))):
        exact = (dequantize_table(q, scale) == w).all(dim=1)
        if bool(exact.all()):
            break
        q_o = codes(other)
        take = ~exact & (dequantize_table(q_o, other) == w).all(dim=1)
        q = torch.where(take[:, None], q_o, q)
        scale = torch.where(take, other, scale)
    return q, scale


def dequantize_table(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The fp32 rows a quantized table stands for: ``q * scale`` computed and rounded in
    the scale's dtype, as ExecuTorch's embedding kernels return them (fp16 scales give
    fp16 rows, which the device graph then casts to fp32)."""
    return (q.float() * scale.float()[:, None]).to(scale.dtype).float()


def snap_embeddings(model: nn.Module, recipe, freeze: bool = True) -> list[tuple[str, int, str]]:
    """Put every nn.Embedding on its quantization grid (``recipe``: a
    :class:`~kdaliens.training.config.QuantConfig`) and, with ``freeze``, freeze it.

    Returns ``(name, bits, scale dtype)`` per table.
    """
    done = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding):
            bits, scale_dtype = recipe.table(m.num_embeddings)
            q, scale = quantize_table(m.weight, bits, scale_dtype)
            with torch.no_grad():
                m.weight.copy_(dequantize_table(q, scale))
            if freeze:
                m.weight.requires_grad_(False)
            done.append((name, bits, scale_dtype))
    return done


def fake_quantize_table(weight: torch.Tensor, bits: int, scale_dtype: str) -> torch.Tensor:
    """The table on its grid in the forward pass, the identity in the backward pass
    (straight-through), written with plain tensor ops so torch.export traces it. Same
    arithmetic as :func:`quantize_table` then :func:`dequantize_table`."""
    qmax = 2 ** (bits - 1) - 1
    dtype = getattr(torch, scale_dtype)
    scale = _row_scales(weight.detach(), qmax, dtype)
    snapped = (_codes(weight, scale, qmax) * scale.float()[:, None]).to(dtype).float()
    return weight + (snapped - weight).detach()


class FakeQuantEmbedding(nn.Module):
    """An nn.Embedding whose rows are read through :func:`fake_quantize_table` (QAT).

    Its parameter keeps the name ``weight``, so checkpoints load into a plain
    StudentRanker, and the exporters' :func:`quantize_table` of the trained weights gives
    exactly the rows QAT computed with.
    """

    def __init__(self, emb: nn.Embedding, bits: int, scale_dtype: str):
        super().__init__()
        self.weight = emb.weight
        self.padding_idx = emb.padding_idx
        self.bits, self.scale_dtype = bits, scale_dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = fake_quantize_table(self.weight, self.bits, self.scale_dtype)
        return nn.functional.embedding(ids, table, padding_idx=self.padding_idx)


def swap_embeddings(model: nn.Module, recipe, make) -> list[tuple[str, int, str, tuple[int, int]]]:
    """Replace every nn.Embedding of ``model`` by ``make(table, bits, scale_dtype)``, with
    bits and scale dtype from ``recipe`` (a QuantConfig). The one place the QAT graph and
    the exporters decide which table gets which grid.

    Returns ``(name, bits, scale dtype, shape)`` per table.
    """
    done = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Embedding):
                bits, scale_dtype = recipe.table(child.num_embeddings)
                setattr(parent, name, make(child, bits, scale_dtype))
                done.append((f"{parent_name}.{name}".lstrip("."), bits, scale_dtype, tuple(child.weight.shape)))
    return done


def fake_quantize_embeddings(model: nn.Module, recipe) -> list[tuple[str, int, str, tuple[int, int]]]:
    """Swap every nn.Embedding of ``model`` for a :class:`FakeQuantEmbedding`."""
    return swap_embeddings(model, recipe, FakeQuantEmbedding)


def plain_embeddings(model: nn.Module) -> int:
    """Undo :func:`fake_quantize_embeddings`: every FakeQuantEmbedding becomes an
    nn.Embedding holding the same parameter. Returns how many were swapped back."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantEmbedding):
                emb = nn.Embedding(*child.weight.shape, padding_idx=child.padding_idx, device="meta")
                emb.weight = child.weight
                setattr(parent, name, emb)
                n += 1
    return n


def is_table(module: nn.Module) -> bool:
    """An embedding table, plain or read through fake quantization."""
    return isinstance(module, (nn.Embedding, FakeQuantEmbedding))


def table_bytes(rows: int, dim: int, bits: int, scale_dtype: str) -> int:
    """Bytes of a quantized table as stored: packed codes plus one scale per row."""
    return rows * ((dim * bits + 7) // 8) + rows * (2 if scale_dtype == "float16" else 4)


@dataclass(frozen=True)
class Int8Grid:
    """The int8 grid of the student's hidden linear layers, named without a runtime.

    Weights: int8 symmetric per output channel in ``[-127, 127]``; activations (each hidden
    layer's input and output): int8 per tensor, affine, in ``[-128, 127]``; scales no
    smaller than ``eps``. The output layer keeps fp32 logits, and a ReLU right after a
    hidden layer shares that layer's output grid. Training's QAT fakes this grid
    (:func:`grid_quantizer`); each exporter stores it with its runtime's own recipe
    (``kdaliens.export.recipes``), which must describe the same grid.
    """

    weight_range: tuple[int, int] = (-127, 127)
    activation_range: tuple[int, int] = (-128, 127)
    eps: float = 2**-12


INT8_GRID = Int8Grid()


def hidden_linear_filter(student: StudentRanker) -> Callable[[torch.fx.Node], bool]:
    """Nodes of the student's hidden Linear (and ReLU) layers: what the int8 grid covers."""
    output_layer = f"student.head.{len(student.head) - 1}"

    def hidden_linear(node: torch.fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return False
        name, kind = list(stack.values())[-1]
        is_output = name == output_layer or name.endswith("." + output_layer)
        return str(kind).endswith(("Linear", "ReLU")) and not is_output

    return hidden_linear


def scalars_to_tensors(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Turn each Python-number operand of an add or mul into a 0-d float32 buffer.

    The graph every PT2E int8 flow quantizes (XNNPACK's does the same before annotating),
    so QAT trains the graph the exporters lower: an ``x * 0.5`` computes ``x * tensor(0.5)``.
    """
    from torchao.quantization.pt2e.utils import get_new_attr_name_with_prefix

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
            continue
        args = []
        for arg in node.args:
            if isinstance(arg, torch.fx.Node):
                args.append(arg)
                continue
            name = get_new_attr_name_with_prefix("_tensor_constant_")(model)
            value = torch.tensor(float(arg))
            model.register_buffer(name, value)
            with model.graph.inserting_before(node):
                const = model.graph.create_node("get_attr", name, (), {})
            const.meta["val"] = node.meta["val"].fake_mode.from_tensor(value, static_shapes=True)
            args.append(const)
        node.args = tuple(args)
    model.recompile()
    return model


def grid_quantizer(student: StudentRanker, is_qat: bool, grid: Int8Grid = INT8_GRID):
    """A torchao PT2E quantizer that annotates exactly :class:`Int8Grid` (no runtime needed)."""
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        HistogramObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        QuantizationSpec,
        Quantizer,
        SharedQuantizationSpec,
    )

    if is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize.with_args(eps=grid.eps)
        weight_ctr = FusedMovingAvgObsFakeQuantize.with_args(eps=grid.eps, observer=MovingAveragePerChannelMinMaxObserver)
    else:
        act_ctr = HistogramObserver.with_args(eps=grid.eps)
        weight_ctr = PerChannelMinMaxObserver.with_args(eps=grid.eps)
    act = QuantizationSpec(dtype=torch.int8, quant_min=grid.activation_range[0], quant_max=grid.activation_range[1],
                           qscheme=torch.per_tensor_affine, is_dynamic=False, observer_or_fake_quant_ctr=act_ctr)
    weight = QuantizationSpec(dtype=torch.int8, quant_min=grid.weight_range[0], quant_max=grid.weight_range[1],
                              qscheme=torch.per_channel_symmetric, ch_axis=0, is_dynamic=False,
                              observer_or_fake_quant_ctr=weight_ctr)
    hidden = hidden_linear_filter(student)

    class GridQuantizer(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target == torch.ops.aten.linear.default and hidden(node):
                    inputs = {node.args[0]: act, node.args[1]: weight}
                    if len(node.args) > 2 and node.args[2] is not None:
                        inputs[node.args[2]] = None  # the bias stays fp32
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map=inputs, output_qspec=act, _annotated=True)
            for node in model.graph.nodes:  # a ReLU shares its hidden layer's output grid
                prev = node.args[0] if node.args else None
                if (node.op == "call_function" and node.target == torch.ops.aten.relu.default and hidden(node)
                        and isinstance(prev, torch.fx.Node) and "quantization_annotation" in prev.meta
                        and prev.meta["quantization_annotation"].output_qspec is not None):
                    shared = SharedQuantizationSpec(prev)
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={prev: shared}, output_qspec=shared, _annotated=True)
            return model

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return scalars_to_tensors(model)

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return GridQuantizer()


def prepare_qat_graph(student: StudentRanker, recipe):
    """Export the student and insert int8 fake quantization (QAT) on :data:`INT8_GRID`.

    The embedding tables are read through :class:`FakeQuantEmbedding` on the grid of
    ``recipe`` (a QuantConfig) and keep training there.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    student = copy.deepcopy(student)
    fake_quantize_embeddings(student, recipe)
    ep, names = export_student_graph(student)
    prepared = prepare_qat_pt2e(ep.module(), grid_quantizer(student, is_qat=True))
    prepared.input_names = names
    return prepared, names


def convert_qat_graph(prepared: nn.Module) -> nn.Module:
    """Fold fake quantization into real int8 quantize/dequantize ops (the int8 model)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    names = prepared.input_names
    quantized = convert_pt2e(prepared)
    move_exported_model_to_eval(quantized)
    quantized.input_names = names
    return quantized


