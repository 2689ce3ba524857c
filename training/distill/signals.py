"""What a student learns from: the teacher's view of every training event.

A :class:`~kdaliens.training.teacher_view.TeacherView` over the training period gives
the teacher's logits for any candidates at any training event from one window pass.
On top of it :class:`TeacherSignals` prepares, once per run:

* each user's **hard negatives**: the teacher's top ``hard_negatives`` items among
  those the user did not touch in the training period, scored at the user's last
  training event (over the whole catalogue when it has at most
  ``FULL_SCORE_ITEMS`` items; otherwise the teacher's two-tower part picks
  ``PREFILTER`` items per user and the full interaction logit ranks those);
* the teacher's interaction and click logits for every training event's fixed
  columns (its item and the user's hard negatives) and its attention vector;
* with ``distill.method`` "spnn" or "lrc", the teacher's intermediate layers for the
  event's item (:meth:`~kdaliens.training.teacher_view.TeacherView.layers`), which
  are also LRC-BERT's memory bank of negatives (``distill.lrc_negatives``).

Per student step only the uniform negatives are scored by the teacher.
"""

from __future__ import annotations

import numpy as np
import torch

from ..batches import NegativeSampler
from ..models.teacher import Teacher
from ..teacher_view import TeacherView

FULL_SCORE_ITEMS = 4096
PREFILTER = 200


class TeacherSignals:
    """The teacher's logits and vectors for training events.

    Args:
        teacher: the trained :class:`Teacher` (its ranking and click snapshots).
        ctx: the run's :class:`~kdaliens.training.loop.Context`.
    """

    def __init__(self, teacher: Teacher, ctx, view: TeacherView | None = None, _prepared: dict | None = None):
        self.teacher = teacher.eval()
        self.view = view or TeacherView(teacher, ctx, ctx.train_end)
        self.device = self.view.device
        ctx = self.view.ctx
        dc = ctx.cfg.distill
        self.H = dc.hard_negatives
        # Intermediate layers (SPNN, LRC-BERT) and LRC-BERT's memory bank of them.
        self.with_layers = bool({"spnn", "lrc"} & set(dc.methods))
        self.bank_size = dc.lrc_negatives if "lrc" in dc.methods else 0
        self.bank_rng = np.random.default_rng([ctx.cfg.train.seed, 6])
        w = np.exp(-np.arange(self.H) / dc.rd_decay)
        self.rd_w = (w / w.sum()).astype(np.float32) if self.H else np.zeros(0, np.float32)
        if _prepared is None:
            _prepared = self._prepare(ctx)
        self.__dict__.update(_prepared)

    def _prepare(self, ctx) -> dict:
        prep = ctx.prep
        pool = hard_negatives(self.view, ctx, self.H) if self.H else np.zeros((prep.n_users, 0), np.int64)
        events = ctx.train_event
        cols = np.concatenate([prep.ev_item[events][:, None], pool[prep.ev_user[events]]], axis=1)  # (n, 1 + H)
        E = len(prep.ev_item)
        fixed_inter = np.zeros((E, 1 + self.H), np.float32)
        fixed_click = np.zeros((E, 1 + self.H), np.float32)
        att = np.zeros((E, self.teacher.cfg.dim), np.float32)
        layers = np.zeros((E, 3, self.teacher.cfg.dim), np.float32) if self.with_layers else None
        for i in range(0, len(events), 2048):
            ev = torch.from_numpy(events[i:i + 2048]).to(self.device)
            c = torch.from_numpy(cols[i:i + 2048]).to(self.device)
            fixed_inter[events[i:i + 2048]] = self.view.interaction(ev, c).float().cpu().numpy()
            click, a = self.view.click(ev, c)
            fixed_click[events[i:i + 2048]] = click.float().cpu().numpy()
            att[events[i:i + 2048]] = a.float().cpu().numpy()
            if layers is not None:
                layers[events[i:i + 2048]] = self.view.layers(ev, c[:, 0]).float().cpu().numpy()
        return {"pool": pool, "fixed_inter": fixed_inter, "fixed_click": fixed_click, "att": att, "layers": layers,
                "bank_events": events[self.view.has[torch.from_numpy(events).to(self.device)].cpu().numpy()]}

    def to(self, device: torch.device) -> TeacherSignals:
        keep = {k: self.__dict__[k] for k in ("pool", "fixed_inter", "fixed_click", "att", "layers", "bank_events")}
        return TeacherSignals(self.teacher.to(device), None, self.view.to(device), _prepared=keep)

    @property
    def has(self) -> torch.Tensor:
        return self.view.has

    def hard(self, users: np.ndarray) -> np.ndarray:
        """The teacher's top unobserved items (B, H) of each user: a batch's extra candidates."""
        return self.pool[users]

    def for_batch(self, events: np.ndarray, cands: np.ndarray) -> dict[str, torch.Tensor]:
        """Signals for a student batch: events (B,), candidate rows (B, 1 + H + K): the
        event's item, the user's hard negatives, then uniform negatives."""
        dev, n_fixed = self.device, 1 + self.H
        ev = torch.from_numpy(np.asarray(events)).to(dev)
        inter = torch.from_numpy(self.fixed_inter[events]).to(dev)
        if cands.shape[1] > n_fixed:
            online = self.view.interaction(ev, torch.from_numpy(np.ascontiguousarray(cands[:, n_fixed:])).to(dev))
            inter = torch.cat([inter, online], dim=1)
        B, N = cands.shape
        rd = np.zeros((B, N), np.float32)
        rd[:, 1:n_fixed] = self.rd_w
        uniform = np.zeros((B, N), bool)
        uniform[:, n_fixed:] = True
        out = {"interaction": inter, "click_logit": torch.from_numpy(self.fixed_click[events]).to(dev),
               "att": torch.from_numpy(self.att[events]).to(dev), "kd_mask": self.view.has[ev],
               "rd_weight": torch.from_numpy(rd).to(dev), "uniform": torch.from_numpy(uniform).to(dev)}
        if self.layers is not None:
            out["layers"] = torch.from_numpy(self.layers[events]).to(dev)
            if self.bank_size and len(self.bank_events):
                drawn = self.bank_rng.choice(self.bank_events, size=self.bank_size)
                out["bank"] = torch.from_numpy(self.layers[drawn]).to(dev)
        return out


@torch.no_grad()
def hard_negatives(view: TeacherView, ctx, k: int) -> np.ndarray:
    """(U, k) catalogue rows: each user's top-k teacher items outside their training period."""
    prep = ctx.prep
    touched = NegativeSampler(prep, 0, ctx.train_end)
    last = np.maximum(ctx.train_end - 1, prep.user_offsets[:-1])  # query before the last training event
    users = np.arange(prep.n_users)
    out = np.zeros((prep.n_users, k), np.int64)
    if prep.n_items <= FULL_SCORE_ITEMS:
        cands = np.arange(prep.n_items)
        per = max(1, 65536 // prep.n_items)
        for i in range(0, len(users), per):
            u = users[i:i + per]
            sc = view.score(last[u], np.broadcast_to(cands, (len(u), len(cands))).copy(), "interaction")
            sc[touched.touched(u[:, None], cands[None, :])] = -np.inf
            out[u] = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        return out
    net, store = view.rank[0]
    _, vec = net.item_vectors(ctx.catalogue, "cat_")  # (I, D)
    bias = net.item_logit_bias(ctx.catalogue, "cat_")
    for i in range(0, len(users), 256):
        u = users[i:i + 256]
        ev = torch.from_numpy(last[u]).to(view.device)
        tt = (store.user[ev] @ vec.T + bias).float().cpu().numpy()  # (b, I) two-tower part
        tt[touched.touched(u[:, None], np.arange(prep.n_items)[None, :])] = -np.inf
        top = np.argpartition(-tt, PREFILTER, axis=1)[:, :PREFILTER]
        sc = view.score(last[u], top, "interaction")
        sc[~np.isfinite(np.take_along_axis(tt, top, 1))] = -np.inf
        out[u] = np.take_along_axis(top, np.argsort(-sc, axis=1, kind="stable")[:, :k], 1)
    return out
