"""Each runtime's int8 recipe annotates the student exactly as training's runtime-neutral grid."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("executorch")
import torch  # noqa: E402

from kdaliens.export.recipes import xnnpack_quantizer  # noqa: E402
from kdaliens.sdk.features import CategoricalField, FeatureSpec, MultiField, NumericField  # noqa: E402
from kdaliens.sdk.history import HistorySpec  # noqa: E402
from kdaliens.training.config import QuantConfig, StudentConfig  # noqa: E402
from kdaliens.training.models.student import StudentRanker  # noqa: E402
from kdaliens.training.quantize import export_student_graph, fake_quantize_embeddings, grid_quantizer  # noqa: E402


def _spec() -> FeatureSpec:
    return FeatureSpec(
        user_fields=(CategoricalField("age", vocab=("a", "b")), NumericField("score", boundaries=(0.0, 1.0))),
        item_fields=(CategoricalField("item_id", vocab=tuple(str(i) for i in range(300))),
                     MultiField("genres", max_len=3, vocab=("x", "y", "z"))),
        history=HistorySpec(short_len=3, long_len=2), event_vocab=("click", "buy"))


def _describe(spec):
    if spec is None:
        return None
    if not hasattr(spec, "dtype"):  # SharedQuantizationSpec
        return ("shared", str(spec.edge_or_node))
    return (str(spec.dtype), spec.quant_min, spec.quant_max, str(spec.qscheme), spec.ch_axis, spec.is_dynamic,
            repr(spec.observer_or_fake_quant_ctr))


def _annotations(student, make_quantizer, is_qat):
    ep, _ = export_student_graph(student)
    quantizer = make_quantizer(student, is_qat=is_qat)
    gm = quantizer.transform_for_annotation(ep.module())  # as prepare_pt2e / prepare_qat_pt2e do
    quantizer.annotate(gm)
    out = [("code", gm.code, None)]
    for node in gm.graph.nodes:
        a = node.meta.get("quantization_annotation")
        if a is not None:
            out.append((node.name, [(str(k), _describe(v)) for k, v in (a.input_qspec_map or {}).items()],
                        _describe(a.output_qspec)))
    return out


@pytest.mark.parametrize("mlp", [(16,), (64, 32)])
@pytest.mark.parametrize("is_qat", [True, False])
def test_xnnpack_recipe_is_the_training_grid(mlp, is_qat):
    torch.manual_seed(0)
    student = StudentRanker(_spec(), StudentConfig(dim=8, short_len=3, long_len=2, mlp=mlp))
    fake_quantize_embeddings(student, QuantConfig())
    grid = _annotations(copy.deepcopy(student), grid_quantizer, is_qat)
    xnnpack = _annotations(copy.deepcopy(student), xnnpack_quantizer, is_qat)
    assert grid == xnnpack
    # The hidden layers (user projection, every head layer but the output one) and a ReLU each.
    assert "_tensor_constant_" in grid[0][1]  # scalar operands became tensors in both graphs
    assert sum(name.startswith("linear") for name, _, _ in grid) == 1 + len(mlp)
    assert sum(name.startswith("relu") for name, _, _ in grid) == len(mlp)
