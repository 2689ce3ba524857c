"""What to export, kept apart from how each target lowers it.

:func:`load_exportable` reads a run directory and returns the device form of the
student: one request (one user, N candidates) in, ``score`` (interaction logits, the
ranking score) and ``click`` (probability of a click given an interaction) out. Every
target (``executorch.py``, ``onnx.py``, ``litert.py``) lowers this same module.

Device inputs, in order (:func:`kdaliens.training.quantize.student_input_names`):
``user_<field>`` (1,) or (1, W); ``hist_<item field>`` (1, L) or (1, L, W);
``hist_event``, ``hist_time_gap`` (1, L); ``hist_mask`` (1, L) float32 1/0;
``cand_<item field>`` (1, N) or (1, N, W). Ids are int64 (int32 for LiteRT).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import FeatureSpec
from kdaliens.training.checkpoint import load_model, read_checkpoint
from kdaliens.training.config import RunConfig
from kdaliens.training.models.student import StudentRanker
from kdaliens.training.quantize import StudentGraphIO, snap_embeddings, student_input_names, swap_embeddings

OUTPUT_NAMES = ("score", "click")


class DeviceStudent(nn.Module):
    """One request in, ``(score, click)`` out. Wraps an eager student or its QAT graph."""

    def __init__(self, inner: nn.Module, spec: FeatureSpec):
        super().__init__()
        self.inner = inner
        self.spec = spec
        self.input_names = student_input_names(spec)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        args = []
        for name, t in zip(self.input_names, tensors):
            args.append(t > 0.5 if name == "hist_mask" else t.to(torch.long))
        inter, click, _ = self.inner(*args)
        return inter, torch.sigmoid(click)


class RowQuantEmbedding(nn.Module):
    """A table kept as int8 codes and per-row scales, read as ``codes[ids] * scales[ids]``.

    Lowers to two Gathers, a Cast and a Mul in any format, so a target whose own
    quantizer would re-quantize the table more coarsely (onnxruntime's per-table Gather)
    ships the QAT grid instead. 4-bit codes are kept one per byte. The product is taken
    in the scale's dtype, which reproduces :func:`~kdaliens.training.quantize.dequantize_table`.
    """

    def __init__(self, weight: torch.Tensor, bits: int, scale_dtype: str):
        super().__init__()
        from kdaliens.training.quantize import quantize_table

        codes, scales = quantize_table(weight, bits, scale_dtype)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.codes[ids].to(self.scales.dtype) * self.scales[ids].unsqueeze(-1)).float()


def row_quantized(exp: Exportable) -> Exportable:
    """A copy of ``exp`` whose embedding tables are :class:`RowQuantEmbedding` (its recipe)."""
    import copy

    module = copy.deepcopy(exp.module)
    swap_embeddings(module, exp.config.quant, lambda emb, bits, dtype: RowQuantEmbedding(emb.weight, bits, dtype))
    return replace(exp, module=module.eval())


@dataclass
class Exportable:
    """A student ready to lower: module, spec, names, example inputs, source metrics."""

    module: DeviceStudent
    spec: FeatureSpec
    config: RunConfig
    input_names: list[str]
    output_names: list[str]
    source_checkpoint: str
    source_metrics: dict[str, Any] = field(default_factory=dict)
    qat_state: dict[str, torch.Tensor] | None = None

    def input_specs(self, n_cand: int | str, id_dtype: str = "int64") -> list[dict[str, Any]]:
        """Name, dtype and shape of each input (``n_cand`` may be a symbolic name)."""
        L = self.spec.history.length
        out = []
        for name in self.input_names:
            if name == "hist_mask":
                out.append({"name": name, "dtype": "float32", "shape": [1, L]})
                continue
            if name.startswith("user_"):
                f = next(f for f in self.spec.user_fields if "user_" + f.name == name)
                shape: list[Any] = [1]
            elif name.startswith("cand_"):
                f = self.spec.item_field(name[5:])
                shape = [1, n_cand]
            else:
                f = self.spec.item_field(name[5:]) if name[5:] not in ("event", "time_gap") else None
                shape = [1, L]
            if f is not None and f.kind == "multi":
                shape.append(f.width)
            out.append({"name": name, "dtype": id_dtype, "shape": shape})
        return out

    def example_inputs(self, n_cand: int = 4, id_dtype: torch.dtype = torch.long, seed: int = 0
                       ) -> tuple[torch.Tensor, ...]:
        """Valid random inputs (ids within each field's cardinality, a half-full history)."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for s in self.input_specs(n_cand):
            shape = tuple(s["shape"])
            if s["name"] == "hist_mask":
                m = torch.zeros(shape)
                m[..., shape[-1] // 2:] = 1.0
                out.append(m)
                continue
            card = self._cardinality(s["name"])
            out.append(torch.randint(1, card, shape, generator=g).to(id_dtype))
        return tuple(out)

    def _cardinality(self, name: str) -> int:
        if name.startswith("user_"):
            return next(f for f in self.spec.user_fields if "user_" + f.name == name).cardinality
        if name == "hist_event":
            return self.spec.event_field.cardinality
        if name == "hist_time_gap":
            return self.spec.time_gap_field.cardinality
        return self.spec.item_field(name[5:]).cardinality


def load_exportable(run_dir: str | Path, quantize: str = "int8") -> Exportable:
    """The student to export from a run directory.

    ``quantize="none"``: the distilled fp32 student (``student_kd.pt``).
    ``quantize="int8"``: the QAT student's fine-tuned weights in eager form
    (``student_kd_int8.pt``, embedding tables on their QAT grid; targets re-apply int8
    with the same recipe), or the fp32 distilled student when the run has no QAT
    checkpoint.
    """
    run_dir = Path(run_dir)
    if quantize not in ("int8", "none"):
        raise InputError(f"quantize must be 'int8' or 'none', got {quantize!r}")
    kd = run_dir / "student_kd.pt"
    qat = run_dir / "student_kd_int8.pt"
    if not kd.exists():
        raise InputError(f"{run_dir}: no student_kd.pt; run kdaliens-train --out {run_dir} first")
    student, cfg, spec, extra = load_model(kd)
    source, metrics, qat_state = kd, extra.get("metrics", {}), None
    if quantize == "int8" and qat.exists():
        payload = read_checkpoint(qat)
        qat_state = payload["state_dict"]
        student = StudentRanker(spec, cfg.student)
        # The QAT graph keeps the eager parameter names under "student.".
        own = {k[len("student."):]: v for k, v in qat_state.items() if k.startswith("student.")}
        missing = set(student.state_dict()) - set(own)
        if missing:
            raise InputError(f"{qat}: QAT checkpoint lacks {sorted(missing)[:5]}")
        student.load_state_dict({k: own[k] for k in student.state_dict()})
        # QAT read its tables through fake quantization: start every target from the
        # rows it actually computed with (the ExecuTorch exporter stores them exactly).
        snap_embeddings(student, cfg.quant)
        source, metrics = qat, payload["extra"].get("metrics", {})
    student.eval()
    module = DeviceStudent(StudentGraphIO(student), spec).eval()
    return Exportable(module=module, spec=spec, config=cfg, input_names=student_input_names(spec),
                      output_names=list(OUTPUT_NAMES), source_checkpoint=str(source), source_metrics=metrics,
                      qat_state=qat_state)
