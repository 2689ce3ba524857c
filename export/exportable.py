"""What to export, kept apart from how each target lowers it.

:func:`load_exportable` reads a run directory and returns the device form of the
student: one request (one user, N candidates) in, ``score`` (interaction logits, the
ranking score) and ``click`` (probability of a click given an interaction) out. Every
target (``executorch.py``, ``onnx.py``, ``litert.py``) lowers this same module.

Device inputs, in order: :class:`kdaliens.sdk.signature.ModelSignature` (the one place
they are derived). Ids are int64 (int32 for LiteRT); ``hist_mask`` is float32 1/0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import FeatureSpec
from kdaliens.sdk.signature import ModelSignature
from kdaliens.training.checkpoint import load_model, read_checkpoint
from kdaliens.training.config import RunConfig
from kdaliens.training.models.student import StudentRanker
from kdaliens.training.quantize import StudentGraphIO, snap_embeddings, swap_embeddings


class DeviceStudent(nn.Module):
    """One request in, ``(score, click)`` out. Wraps an eager student or its QAT graph."""

    def __init__(self, inner: nn.Module, spec: FeatureSpec):
        super().__init__()
        self.inner = inner
        self.spec = spec
        self.is_id = [i.is_id for i in ModelSignature.from_spec(spec).inputs]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        args = []
        for is_id, t in zip(self.is_id, tensors):
            args.append(t.to(torch.long) if is_id else t > 0.5)
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
    """A student ready to lower: module, spec, signature, source checkpoint and metrics."""

    module: DeviceStudent
    spec: FeatureSpec
    config: RunConfig
    source_checkpoint: str
    source_metrics: dict[str, Any] = field(default_factory=dict)
    signature: ModelSignature = field(init=False)

    def __post_init__(self) -> None:
        self.signature = ModelSignature.from_spec(self.spec)

    @property
    def input_names(self) -> list[str]:
        return self.signature.names

    @property
    def output_names(self) -> list[str]:
        return list(self.signature.outputs)

    @property
    def student(self) -> StudentRanker:
        """The eager student inside the device wrappers (its layers name the recipe's exceptions)."""
        return self.module.inner.student

    def example_inputs(self, n_cand: int = 4, id_dtype: torch.dtype = torch.long, seed: int = 0
                       ) -> tuple[torch.Tensor, ...]:
        """Valid random inputs (ids within each field's cardinality, a half-full history)."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for spec, shape in zip(self.signature.inputs, self.signature.shapes(n_cand)):
            if not spec.is_id:
                m = torch.zeros(shape)
                m[..., shape[-1] // 2:] = 1.0
                out.append(m)
                continue
            out.append(torch.randint(1, spec.cardinality, shape, generator=g).to(id_dtype))
        return tuple(out)


#: What ``kdaliens-export --model`` exports.
EXPORT_MODELS = ("student_kd", "student_plain", "auto")


def _best_validation(run_dir: Path, model: str) -> float | None:
    """The model's best validation AUC + NDCG@10 in ``history.json`` (its early-stopping score)."""
    import json

    path = run_dir / "history.json"
    rows = json.loads(path.read_text()).get(model, []) if path.exists() else []
    scores = [r["val"]["ctr"]["auc"] + r["val"]["ranking"]["ndcg@10"] for r in rows if "val" in r]
    return max(scores) if scores else None


def choose_model(run_dir: str | Path, model: str = "student_kd") -> tuple[str, str]:
    """The student ``model`` names (``auto``: the better on validation) and why it was chosen."""
    run_dir = Path(run_dir)
    if model not in EXPORT_MODELS:
        raise InputError(f"model must be one of {list(EXPORT_MODELS)}, got {model!r}")
    if model != "auto":
        return model, "asked for"
    kd, plain = _best_validation(run_dir, "student_kd"), _best_validation(run_dir, "student_plain")
    if kd is None or plain is None:
        raise InputError(f"{run_dir}: --model auto compares the students' validation scores in history.json, "
                         f"which lacks {'student_kd' if kd is None else 'student_plain'}; name the model instead")
    pick = "student_kd" if kd >= plain else "student_plain"
    return pick, f"auto: validation AUC + NDCG@10 {kd:.4f} (student_kd) vs {plain:.4f} (student_plain)"


def load_exportable(run_dir: str | Path, quantize: str = "int8", model: str = "student_kd") -> Exportable:
    """The student to export from a run directory.

    ``model``: ``student_kd`` (the distilled student, the default), ``student_plain``
    (trained on labels only), or ``auto`` (of the two, the better on validation; see
    :func:`choose_model`).

    ``quantize="none"``: the fp32 student (``student_kd.pt`` or ``student_plain.pt``).
    ``quantize="int8"``: for the distilled student, the QAT student's fine-tuned weights
    in eager form (``student_kd_int8.pt``, embedding tables on their QAT grid; targets
    re-apply int8 with the same recipe), or the fp32 distilled student when the run has
    no QAT checkpoint; the plain student has no QAT step, so its tables are put on the
    grid here and the targets calibrate its activations (post-training quantization).
    """
    run_dir = Path(run_dir)
    if quantize not in ("int8", "none"):
        raise InputError(f"quantize must be 'int8' or 'none', got {quantize!r}")
    model, _ = choose_model(run_dir, model)
    kd = run_dir / f"{model}.pt"
    qat = run_dir / "student_kd_int8.pt"
    if not kd.exists():
        raise InputError(f"{run_dir}: no {model}.pt; run kdaliens-train --out {run_dir} first")
    student, cfg, spec, extra = load_model(kd)
    source, metrics = kd, extra.get("metrics", {})
    if quantize == "int8" and model == "student_plain":
        snap_embeddings(student, cfg.quant)
    elif quantize == "int8" and qat.exists():
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
    return Exportable(module=module, spec=spec, config=cfg, source_checkpoint=str(source), source_metrics=metrics)
