"""Intermediate-layer distillers: SPNN's knowledge detector and LRC-BERT's angular contrast.

Both match the student's intermediate representations to the teacher's, layer by layer
(:data:`LAYERS`): the user vector, the target attention for the event's item and the
event's item vector. The student's are ``d`` wide, the teacher's ``Dt``; a learned
adaptor (one ``Linear(d, Dt)`` per layer) maps each student layer to the teacher's width.
The teacher's layers for every training event come from
:class:`~kdaliens.training.distill.TeacherSignals` (``teacher["layers"]``, (B, 3, Dt)).

* :class:`KnowledgeDetectorDistiller` (``distill.method="spnn"``): per layer, a detector
  reads the teacher's feature and the adapted student feature and outputs a gate in
  (0, 1) per sample: how likely this sample carries knowledge the student lacks. It is
  trained to predict where the teacher ranks the event's item better than the student
  does (a lower softmax cross-entropy over the same candidates); the feature matching
  (squared distance of L2-normalized vectors) is weighted by its detached gate, so the
  student spends its capacity where the teacher knows more. ``spnn_gate=False`` gives
  every sample and layer weight 1 (the ablation).
* :class:`AngularContrastiveDistiller` (``distill.method="lrc"``): per layer, the
  student's representation of a sample is pulled towards the teacher's representation
  of the same sample and pushed from the teacher's representations of other samples,
  with the angular distance ``1 - cos``: a softmax over ``-(1 - cos) / tau`` (the batch's
  other samples as negatives, or ``lrc_negatives`` drawn from a memory bank of every
  training event's teacher representations).

:class:`EmbeddingPerturbation` is LRC-BERT's gradient perturbation: the student's
embedding outputs are moved along the loss gradient and the loss is taken again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig
from ..quantize import is_table
from .losses import Distiller, _masked_mean, register_distiller

#: The intermediate layers matched, in the order of ``teacher["layers"]``.
LAYERS = ("user", "attention", "item")


def student_layers(student: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The student's intermediate layers (B, d) for the event's item (candidate column 0)."""
    return [student["user"], student["att"][:, 0], student["item"][:, 0]]


def _adaptors(student_dim: int, teacher_dim: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in LAYERS)


@register_distiller("spnn")
class KnowledgeDetectorDistiller(Distiller):
    """SPNN intermediate-layer distillation, gated per sample and layer by a knowledge detector."""

    method = "spnn"

    def __init__(self, cfg: DistillConfig, student_dim: int, teacher_dim: int):
        super().__init__(cfg, student_dim, teacher_dim)
        self.adapt = _adaptors(student_dim, teacher_dim)
        self.detect = nn.ModuleList(nn.Sequential(nn.Linear(3 * teacher_dim, teacher_dim), nn.ReLU(),
                                                  nn.Linear(teacher_dim, 1)) for _ in LAYERS)
        self.gate_on = bool(cfg.spnn_gate)
        self.last_gates: torch.Tensor | None = None  # (B, layers) of the last batch, for logs and tests

    def forward(self, student, teacher, batch):
        mask = teacher["kd_mask"]
        t_layers = teacher["layers"]  # (B, layers, Dt)
        with torch.no_grad():  # where the teacher ranks the event's item better than the student
            ce_t = -F.log_softmax(teacher["interaction"], -1)[:, 0]
            ce_s = -F.log_softmax(student["interaction"].detach(), -1)[:, 0]
            knows = (ce_t < ce_s).to(t_layers.dtype)
        match = t_layers.new_zeros(())
        detect = t_layers.new_zeros(())
        gates = []
        for i, s in enumerate(student_layers(student)):
            p = F.normalize(self.adapt[i](s), dim=-1)
            q = F.normalize(t_layers[:, i], dim=-1)
            dist = ((p - q) ** 2).sum(-1)  # (B,)
            if self.gate_on:
                x = torch.cat([q, p.detach(), (q - p.detach()).abs()], dim=-1)
                logit = self.detect[i](x).squeeze(-1)
                detect = detect + _masked_mean(F.binary_cross_entropy_with_logits(logit, knows, reduction="none"),
                                               mask)
                gate = torch.sigmoid(logit).detach()
            else:
                gate = torch.ones_like(dist)
            gates.append(gate)
            match = match + _masked_mean(gate * dist, mask)
        self.last_gates = torch.stack(gates, 1).detach()
        return (match + detect) / len(LAYERS)


@register_distiller("lrc")
class AngularContrastiveDistiller(Distiller):
    """LRC-BERT's contrastive loss on intermediate layers, with the angular distance 1 - cos."""

    method = "lrc"

    def __init__(self, cfg: DistillConfig, student_dim: int, teacher_dim: int):
        super().__init__(cfg, student_dim, teacher_dim)
        self.adapt = _adaptors(student_dim, teacher_dim)
        self.tau = float(cfg.lrc_temperature)

    def forward(self, student, teacher, batch):
        mask = teacher["kd_mask"]
        t_layers = teacher["layers"]
        bank = teacher.get("bank")  # (K, layers, Dt) from the memory bank, or None: in-batch negatives
        total = t_layers.new_zeros(())
        for i, s in enumerate(student_layers(student)):
            p = F.normalize(self.adapt[i](s), dim=-1)  # (B, Dt)
            q = F.normalize(t_layers[:, i], dim=-1)
            pos = (p * q).sum(-1, keepdim=True)  # cos to its own teacher representation
            if bank is not None:
                neg = p @ F.normalize(bank[:, i], dim=-1).T  # (B, K)
                cos = torch.cat([pos, neg], dim=1)
            else:
                cos = p @ q.T  # (B, B): the diagonal is each sample's positive
                with torch.no_grad():  # not negatives: rows without a teacher signal, and copies of the positive
                    same = (q @ q.T > 1 - 1e-6) & ~torch.eye(len(q), dtype=torch.bool, device=q.device)
                    blocked = same | ~mask[None, :]
                cos = torch.cat([pos, cos.masked_fill(blocked | torch.eye(len(q), dtype=torch.bool,
                                                                          device=q.device), float("-inf"))], dim=1)
            logits = -(1.0 - cos) / self.tau  # angular distance, as a similarity
            target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
            total = total + _masked_mean(F.cross_entropy(logits, target, reduction="none"), mask)
        return total / len(LAYERS)


class EmbeddingPerturbation:
    """LRC-BERT's gradient perturbation of a module's embedding outputs.

    Forward hooks on every embedding table of ``model`` (plain or fake-quantized) while
    the ``with`` block is open: the first forward pass's outputs are kept; :meth:`perturb`
    then adds, to the same lookups of the next pass (in the same order),
    ``size * |out| * g / |g|``, with ``g`` the loss's gradient with respect to that output
    (norms over the whole output).

    Example:
        >>> with EmbeddingPerturbation(student, 0.05) as tap:       # doctest: +SKIP
        ...     loss = objective(batch)
        ...     tap.perturb(loss)
        ...     adversarial = objective(batch)
    """

    def __init__(self, model: nn.Module, size: float):
        self.size = float(size)
        self.modules = [m for m in model.modules() if is_table(m)]
        self.outputs: list[torch.Tensor] = []
        self.deltas: list[torch.Tensor | None] | None = None  # set by perturb()
        self.calls = 0  # lookups seen since perturb()
        self.handles: list = []

    def __enter__(self) -> EmbeddingPerturbation:
        self.handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def _hook(self, module: nn.Module, inputs, out: torch.Tensor):
        if self.deltas is None:
            self.outputs.append(out)
            return None
        d = self.deltas[self.calls] if self.calls < len(self.deltas) else None
        self.calls += 1
        return out if d is None or d.shape != out.shape else out + d

    def perturb(self, loss: torch.Tensor) -> None:
        """From now on, lookups are moved along ``loss``'s gradient (one pass's worth)."""
        grads = torch.autograd.grad(loss, self.outputs, retain_graph=True, allow_unused=True)
        self.deltas = [None if g is None else self.size * out.detach().norm() * g / g.norm().clamp(min=1e-12)
                       for out, g in zip(self.outputs, grads)]
        self.calls = 0
