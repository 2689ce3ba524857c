"""EMKD: an ensemble of teacher networks trained together, with contrastive knowledge distillation.

``distill.method="emkd"`` replaces the single teacher by ``distill.emkd_members``
:class:`~kdaliens.training.models.teacher.TeacherRanker` networks (independently
initialized) that train on the same batches, one objective, after EMKD (Du et al.,
"Ensemble Modeling with Contrastive Knowledge Distillation for Sequential
Recommendation", SIGIR 2023):

* each network's own teacher losses (:class:`~kdaliens.training.teacher_loop.TeacherObjective`);
* **knowledge distillation between the networks**: KL from the mean of the other
  networks' softmax over the same candidates (detached) to each network's, at
  ``distill.temperature`` (x T^2);
* **contrastive learning** on two augmented views of each sequence: crops of
  ``emkd_crop`` events (at most ``history_len``; each view keeps a random length of at
  least half that) ending at a trained position, with
  ``emkd_mask`` of their events' item ids and kinds hidden, independently per view. The
  sequence representation is the network's user vector at the crop's last position,
  through a projection head. *Intra-network*: InfoNCE between a network's two views
  (the other sequences of the batch as negatives); *cross-network*: between one
  network's first view and each other network's second view;
* **attribute prediction**: each network predicts the attributes of the item at each
  trained position (every item field but the id: genres and release year on
  ML-100K) from its user vector there, a multi-label BCE.

Early stopping follows the ensemble (the mean of the networks' logits, as
:class:`~kdaliens.training.models.teacher.Teacher` scores) on validation NDCG@10 and
AUC. The ensemble, kept at its best epoch per head, then teaches the device student
through the distillation losses of the other recipes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdaliens.sdk.features import OOV_ID

from ..evaluation import evaluate, teacher_scorer
from ..loop import Context, DistEnv, FitResult, FitSpec, Log, Track, fit, set_seed
from ..models.teacher import Teacher, TeacherRanker
from ..teacher_loop import TeacherBatches, TeacherObjective

#: Temperature of the contrastive (InfoNCE) losses on the projected views.
CL_TEMPERATURE = 0.2
#: Crops per window in each step (at most; windows with fewer trained positions give fewer).
CROPS_PER_WINDOW = 4


def augmented_views(arrays: dict[str, np.ndarray], rng: np.random.Generator, crop: int, hide: float,
                    item_id_field: str, per_window: int = CROPS_PER_WINDOW
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """Two augmented views of sequences from a window batch (see the module docstring).

    Returns two dicts of window arrays (``win_*``, ``tgt_gap``, ``user_*``), (Q, crop)
    each, row q of both views the same sequence; None when the batch has no trained
    position.
    """
    sel = arrays["tgt_train"]
    rows, ends = [], []
    for b in range(sel.shape[0]):
        slots = np.flatnonzero(sel[b])
        if len(slots):
            pick = rng.choice(slots, size=min(per_window, len(slots)), replace=False)
            rows += [b] * len(pick)
            ends += sorted(pick.tolist())
    if not rows:
        return None
    rows_a, ends_a = np.asarray(rows), np.asarray(ends)
    views = []
    for _ in range(2):
        length = rng.integers(max(1, crop // 2), crop + 1, size=len(rows_a))
        idx = ends_a[:, None] - crop + 1 + np.arange(crop)[None, :]  # (Q, crop), the end last
        keep = (idx >= 0) & (idx > (ends_a - length)[:, None])
        idx = np.clip(idx, 0, None)
        real = arrays["win_mask"][rows_a[:, None], idx] & keep
        view = {}
        for k, v in arrays.items():
            if k.startswith("win_") or k == "tgt_gap":
                x = v[rows_a[:, None], idx]
                view[k] = np.where(real.reshape(real.shape + (1,) * (x.ndim - 2)), x, np.zeros((), x.dtype))
            elif k.startswith("user_"):
                view[k] = v[rows_a]
        view["win_mask"] = real
        hidden = real & (rng.random(real.shape) < hide)
        hidden[:, -1] = False  # the query position keeps its event
        for k in ("win_" + item_id_field, "win_event"):
            view[k] = np.where(hidden, OOV_ID, view[k])
        views.append(view)
    return views[0], views[1]


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = CL_TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalized rows: row i of ``a`` and of ``b`` are a pair."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / tau
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class AttributeHeads(nn.Module):
    """Multi-label prediction of an item's non-id fields from a (P, D) vector."""

    def __init__(self, spec, dim: int):
        super().__init__()
        self.fields = [f for f in spec.item_fields if f.name != spec.item_id_field]
        self.heads = nn.ModuleList(nn.Linear(dim, f.cardinality) for f in self.fields)

    def forward(self, x: torch.Tensor, items: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        total = x.new_zeros(())
        for f, head in zip(self.fields, self.heads):
            ids = items[prefix + f.name]
            ids = ids if ids.dim() == 2 else ids[:, None]  # (P, W)
            target = torch.zeros(len(ids), f.cardinality, device=x.device)
            target.scatter_(1, ids, 1.0)
            target[:, :OOV_ID + 1] = 0.0  # padding and out-of-vocabulary are not attributes
            total = total + F.binary_cross_entropy_with_logits(head(x), target)
        return total / max(1, len(self.fields))


class EnsembleObjective(nn.Module):
    """The EMKD losses of ``members`` teacher networks on one batch (see the module docstring)."""

    def __init__(self, members: list[TeacherRanker], ctx: Context):
        super().__init__()
        dc = ctx.cfg.distill
        self.cfg = dc
        self.ctx = ctx
        self.members = nn.ModuleList(TeacherObjective(m, ctx) for m in members)
        d = members[0].cfg.dim
        self.proj = nn.ModuleList(nn.Linear(d, d) for _ in members)
        self.attr = nn.ModuleList(AttributeHeads(ctx.t_spec, d) for _ in members)
        self.has_attr = bool(self.attr[0].fields) and dc.emkd_attr_weight > 0

    def forward(self, batch, neg_rows, cat_rows, band_age, matches, views):
        tc, dc = self.ctx.cfg.train, self.cfg
        T = dc.temperature
        parts = [m.parts(batch, neg_rows, cat_rows, band_age, matches) for m in self.members]
        rec = sum(tc.hard_interaction_weight * (p["sampled"] + tc.teacher_catalogue_weight * p["catalogue"])
                  + tc.hard_click_weight * p["click"] for p in parts) / len(parts)
        logs = {"inter": sum(p["sampled"].detach() for p in parts) / len(parts)}
        total = rec
        if len(parts) > 1 and dc.emkd_kl_weight > 0:
            probs = [F.softmax(p["logits"] / T, -1) for p in parts]
            kl = 0.0
            for i, p in enumerate(parts):
                others = torch.stack([q.detach() for j, q in enumerate(probs) if j != i]).mean(0)
                kl = kl + F.kl_div(F.log_softmax(p["logits"] / T, -1), others, reduction="batchmean") * T * T
            kl = kl / len(parts)
            total = total + dc.emkd_kl_weight * kl
            logs["kl"] = kl.detach()
        if views is not None and dc.emkd_cl_weight > 0:
            za = [self.proj[i](m.teacher.encode_windows(views[0]).user[:, -1]) for i, m in enumerate(self.members)]
            zb = [self.proj[i](m.teacher.encode_windows(views[1]).user[:, -1]) for i, m in enumerate(self.members)]
            cl = 0.0
            for i in range(len(za)):
                cl = cl + info_nce(za[i], zb[i])
                cross = [info_nce(za[i], zb[j]) for j in range(len(zb)) if j != i]
                if cross:
                    cl = cl + sum(cross) / len(cross)
            cl = cl / len(za)
            total = total + dc.emkd_cl_weight * cl
            logs["cl"] = cl.detach()
        if self.has_attr:
            items = self.ctx.items_at(batch["tgt_row"][batch["tgt_train"]], "a_")
            attr = sum(self.attr[i](p["user"], items, "a_") for i, p in enumerate(parts)) / len(parts)
            total = total + dc.emkd_attr_weight * attr
            logs["attr"] = attr.detach()
        return total, logs


def train_ensemble(ctx: Context, env: DistEnv, log: Log, deadline: float | None = None,
                   on_estimate: Callable[[float], None] | None = None
                   ) -> tuple[FitResult, list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Train the EMKD ensemble; returns the fit and each member's ranking and click snapshots."""
    cfg, train_cfg, dc = ctx.cfg, ctx.cfg.train, ctx.cfg.distill
    seed = train_cfg.seed
    members = []
    for i in range(dc.emkd_members):  # as independently seeded as train_teacher's members
        set_seed(seed + 1000 * i)
        members.append(TeacherRanker(ctx.t_spec, cfg.teacher).to(ctx.device))
    set_seed(seed + 77)
    objective = EnsembleObjective(members, ctx).to(ctx.device)
    heads = ", ".join(k for k, on in (("mutual KL", dc.emkd_members > 1 and dc.emkd_kl_weight > 0),
                                      ("contrastive views", dc.emkd_cl_weight > 0),
                                      ("attribute prediction", objective.has_attr)) if on)
    log(f"[teacher] EMKD ensemble of {dc.emkd_members} network(s), trained together: own losses"
        + (f", {heads}" if heads else "")
        + ("" if objective.attr[0].fields else "; the items have no attribute besides the id, so none is predicted"))
    batches = TeacherBatches(ctx, env, seed, members[0].k)
    view_rng = np.random.default_rng([seed, 8])
    crop = min(dc.emkd_crop, cfg.teacher.history_len)

    def steps(wrapped: nn.Module, epoch: int) -> Iterator[tuple[torch.Tensor, dict]]:
        for arrays, inputs in batches:
            views = augmented_views(arrays, view_rng, crop, dc.emkd_mask, ctx.t_spec.item_id_field)
            yield wrapped(*inputs, tuple(ctx.tensors(v) for v in views) if views is not None else None)

    ensemble = Teacher.from_networks(ctx.t_spec, cfg.teacher, members, members)
    tracks = [Track("rank", lambda v: v["ranking"]["ndcg@10"])]
    if not ctx.prep.implicit:
        tracks.append(Track("click", lambda v: v["ctr"]["auc"]))
    spec = FitSpec(name="teacher", epochs=train_cfg.epochs, patience=train_cfg.teacher_patience,
                   lr=train_cfg.teacher_lr, weight_decay=train_cfg.weight_decay,
                   n_batches=len(batches),
                   evaluate=lambda m: evaluate(teacher_scorer(ensemble, ctx), ctx, "val"), tracks=tracks,
                   deadline=deadline, ema_decay=train_cfg.teacher_ema, on_estimate=on_estimate)
    res = fit(objective, spec, steps, env, log)

    def member_states(state: dict[str, torch.Tensor] | None) -> list[dict[str, torch.Tensor]]:
        state = state if state is not None else objective.state_dict()
        out = []
        for i in range(len(members)):
            p = f"members.{i}.teacher."
            out.append({n[len(p):]: v for n, v in state.items() if n.startswith(p)})
        return out

    rank = member_states(res.best_states.get("rank"))
    click = member_states(res.best_states.get("click", res.best_states.get("rank")))
    return res, rank, click
