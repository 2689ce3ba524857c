"""Quantization recipes that name a runtime (training's QAT uses none of them).

Training fakes one runtime-neutral grid (:class:`kdaliens.training.quantize.Int8Grid`).
A target whose toolchain quantizes the graph itself gets that grid through its own
quantizer here; a test checks that each recipe annotates the graph exactly as the grid
does, so what ships is what QAT trained.
"""

from __future__ import annotations

from kdaliens.training.models.student import StudentRanker
from kdaliens.training.quantize import INT8_GRID, hidden_linear_filter


def xnnpack_quantizer(student: StudentRanker, is_qat: bool = False):
    """ExecuTorch's XNNPACK quantizer, limited to the grid's hidden linear layers."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    hidden_linear = hidden_linear_filter(student)

    class HiddenLinearQuantizer(XNNPACKQuantizer):
        # The XNNPACK cat/add annotators do not honour set_filter_function (they would
        # quantize the int64 id tensors the student concatenates), so annotations outside
        # the hidden linear layers are dropped after the fact.
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if "quantization_annotation" in node.meta and not hidden_linear(node):
                    del node.meta["quantization_annotation"]
            return model

    config = get_symmetric_quantization_config(
        is_per_channel=True, is_qat=is_qat, act_qmin=INT8_GRID.activation_range[0],
        act_qmax=INT8_GRID.activation_range[1], weight_qmin=INT8_GRID.weight_range[0],
        weight_qmax=INT8_GRID.weight_range[1])
    q = HiddenLinearQuantizer().set_global(config)
    q.set_filter_function(hidden_linear)
    return q
