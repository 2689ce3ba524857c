"""Composable distillation losses.

A :class:`Distiller` maps (student outputs, teacher signals) to a scalar loss. A
:class:`DistillLoss` sums the registered distillers whose weight in the
:class:`~kdaliens.training.config.DistillConfig` is non-zero: the default recipe's
(below) always, and those of a seed paper's recipe (``distill.method``; SPNN's and
LRC-BERT's in :mod:`.intermediate`) when it is selected. A new distiller registers under
a name, reads its weight from ``<name>_weight`` and names the method that enables it
(listed in :data:`~kdaliens.training.config.DISTILL_METHODS`):

    @register_distiller("mine")
    class MyDistiller(Distiller):
        method = "mine"
        ...

Teacher signals are a dict of tensors: ``interaction`` (B, N) teacher logits over the
same candidates as the student (the event's item first, then the teacher's top-ranked
unobserved items, then uniform negatives), ``click`` (B, Nc) the teacher's click
logits for the first Nc candidates (the item and the teacher's top items), ``att``
(B, Dt) the teacher's user-interest vector after attention for the item, ``kd_mask``
(B,) which rows have teacher signals, ``rd_weight`` (B, N) the ranking-distillation
weight of each soft positive (zero elsewhere), ``uniform`` (B, N) which columns are
uniform negatives, and, for the intermediate-layer recipes, ``layers`` (B, 3, Dt) the
teacher's intermediate layers for the event's item and ``bank`` (K, 3, Dt) the memory
bank's draw.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig

DISTILLERS: dict[str, type[Distiller]] = {}


def register_distiller(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        DISTILLERS[name] = cls
        return cls
    return deco


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


class Distiller(nn.Module):
    """Interface: ``forward(student_out, teacher, batch) -> scalar``.

    ``method``: the ``distill.method`` recipe that turns this distiller on (None: the
    default recipe's, on whenever its weight is non-zero).
    """

    name = "base"
    method: str | None = None

    def __init__(self, cfg: DistillConfig, student_dim: int, teacher_dim: int):
        super().__init__()
        self.cfg = cfg

    def forward(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                batch: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@register_distiller("logit")
class LogitDistiller(Distiller):
    """KL(teacher || student) over the candidate set, on temperature-softened logits (x T^2)."""

    def forward(self, student, teacher, batch):
        T = self.cfg.temperature
        t = F.log_softmax(teacher["interaction"] / T, dim=-1)
        s = F.log_softmax(student["interaction"] / T, dim=-1)
        kl = (t.exp() * (t - s)).sum(-1)  # (B,)
        return _masked_mean(kl, teacher["kd_mask"]) * T * T


@register_distiller("click")
class ClickDistiller(Distiller):
    """BCE of the student's click logits on the teacher's soft click labels (x T^2), for
    the event's item (where it has a label) and the teacher's top items."""

    def forward(self, student, teacher, batch):
        T = self.cfg.temperature
        t = teacher["click_logit"]  # (B, Nc)
        soft = torch.sigmoid(t / T)
        loss = F.binary_cross_entropy_with_logits(student["click_logit"][:, :t.shape[1]] / T, soft, reduction="none")
        mask = teacher["kd_mask"][:, None].expand_as(t).clone()
        mask[:, 0] &= batch["has_label"]
        return _masked_mean(loss, mask) * T * T


@register_distiller("rd")
class RankDistiller(Distiller):
    """Ranking distillation (Tang & Wang, KDD 2018) as soft positives: each of the
    teacher's top items should outrank the uniform negatives (BPR), weighted by its
    rank in the teacher's list (``rd_weight``, rows summing to 1)."""

    def forward(self, student, teacher, batch):
        s = student["interaction"]  # (B, N)
        w, uni = teacher["rd_weight"], teacher["uniform"].to(s.dtype)  # (B, N)
        # softplus(s_j - s_h) for every soft positive h and uniform negative j: (B, N, N)
        pair = F.softplus(s.unsqueeze(1) - s.unsqueeze(2))  # [b, h, j]
        per_pos = (pair * uni.unsqueeze(1)).sum(-1) / uni.sum(-1, keepdim=True).clamp(min=1.0)  # (B, N)
        return _masked_mean((w * per_pos).sum(-1), teacher["kd_mask"] & (w.sum(-1) > 0))


@register_distiller("feature")
class FeatureDistiller(Distiller):
    """A learned adapter maps the student's user-interest vector (after target attention,
    for the positive) to the teacher's width; L2-normalized vectors are matched by MSE."""

    def __init__(self, cfg: DistillConfig, student_dim: int, teacher_dim: int):
        super().__init__(cfg, student_dim, teacher_dim)
        self.adapter = nn.Linear(student_dim, teacher_dim)

    def forward(self, student, teacher, batch):
        s = F.normalize(self.adapter(student["att"][:, 0]), dim=-1)
        t = F.normalize(teacher["att"], dim=-1)
        return _masked_mean(((s - t) ** 2).sum(-1), teacher["kd_mask"])


class DistillLoss(nn.Module):
    """Weighted sum of the distillers enabled in a :class:`DistillConfig`: the default
    recipe's with a non-zero weight, plus those of the recipes ``distill.method`` names.

    ``forward`` returns the total and a dict of the weighted parts (for logging).
    ``active`` (None: all) limits which parts run, for staged schedules (LRC-BERT);
    ``intermediate=False`` leaves out the parts that need the student's intermediate
    layers (the int8 graph gives only its outputs).
    """

    def __init__(self, cfg: DistillConfig, student_dim: int, teacher_dim: int, intermediate: bool = True):
        super().__init__()
        self.cfg = cfg
        self.weights: dict[str, float] = {}
        self.parts = nn.ModuleDict()
        self.active: set[str] | None = None
        methods = set(cfg.methods)
        for name, cls in DISTILLERS.items():
            if cls.method is not None and (cls.method not in methods or not intermediate):
                continue
            w = float(getattr(cfg, f"{name}_weight", 0.0))
            if w != 0.0:
                self.parts[name] = cls(cfg, student_dim, teacher_dim)
                self.weights[name] = w

    def forward(self, student, teacher, batch) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros((), dtype=torch.float32, device=student["interaction"].device)
        logs: dict[str, float] = {}
        for name, part in self.parts.items():
            if self.active is not None and name not in self.active:
                continue
            v = self.weights[name] * part(student, teacher, batch)
            total = total + v
            logs[name] = v.detach()
        return total, logs
