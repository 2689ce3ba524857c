"""The teacher's view of every event: one window pass, then any candidates at any event.

One causal window pass of a teacher network over each user's events stores, per event,
the user vector at that event (its query state) and the event's own raw vector and
contextual key/value. From those, the network's logits for *any* candidates at *any*
stored event are a gather and a candidate pass: the function the network computes on
its training windows, without re-running the sequence encoder per request. Evaluation
scores validation and test events this way, and distillation scores the student's
candidates at its training events.

Each target sits in the window where it is trained, with at least
``min(attn_len, history_len // 2)`` earlier events of context (all of them for users
with fewer than ``history_len`` events); :meth:`TeacherRanker.forward` on a request
sees the last ``history_len`` events, so the two agree exactly on users with shorter
histories and closely on the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .batches import HistoryMatches, teacher_windows
from .loop import Context
from .models.teacher import Bands, Teacher, TeacherRanker


def window_overlap(net: TeacherRanker) -> int:
    """Context slots before a window's first trained target (see the module docstring)."""
    return min(net.cfg.attn_len, net.cfg.history_len // 2)


@dataclass
class EventStore:
    """One network's per-event tensors (E, D), which targets are stored (E,), and the
    users' field embeddings (U, Fu, D)."""

    user: torch.Tensor
    raw: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    has: torch.Tensor
    user_fields: torch.Tensor | None

    def to(self, device: torch.device) -> EventStore:
        return EventStore(*(t.to(device) if t is not None else None for t in (
            self.user, self.raw, self.key, self.value, self.has, self.user_fields)))


@torch.no_grad()
def event_store(net: TeacherRanker, ctx: Context, split_end: np.ndarray, batch: int = 64) -> EventStore:
    """Run ``net`` (eval mode) over windows of every user's events before ``split_end``."""
    prep, dev = ctx.prep, ctx.device
    E, D = len(prep.ev_item), net.cfg.dim
    store = {k: torch.zeros(E, D, device=dev) for k in ("user", "raw", "key", "value")}
    has = torch.zeros(E, dtype=torch.bool, device=dev)
    win = teacher_windows(prep, ctx.t_enc, net.cfg.history_len, split_end, overlap=window_overlap(net))
    was_training = net.training
    net.eval()
    for rows in win.batches(batch, rng=None):
        arrays, tgt_ev = win.batch(rows)
        wp = net.encode_windows(ctx.tensors(arrays))
        sel = torch.from_numpy(arrays["tgt_train"]).to(dev)
        ev = torch.from_numpy(tgt_ev).to(dev)[sel]
        store["user"][ev] = wp.user[sel]
        store["raw"][ev - 1] = wp.raw[sel]  # the input event of target t is t - 1
        store["key"][ev - 1] = wp.key[sel]
        store["value"][ev - 1] = wp.value[sel]
        has[ev] = True
    users = {"user_" + k: torch.from_numpy(v).to(dev) for k, v in prep.user_arrays.items()}
    uf = net.user_fields(users) if users else None
    net.train(was_training)
    return EventStore(has=has, user_fields=uf, **store)


class TeacherView:
    """A teacher's logits for candidates at stored events (see the module docstring).

    Args:
        teacher: a :class:`Teacher` (ranking and click snapshots) or one network.
        ctx: the run's context.
        split_end: per user, the end (exclusive) of the events to store.
        heads: which heads to prepare ("interaction", "click").
    """

    def __init__(self, teacher: Teacher | TeacherRanker, ctx: Context, split_end: np.ndarray,
                 heads: tuple[str, ...] = ("interaction", "click")):
        if isinstance(teacher, TeacherRanker):
            rank, click = [teacher], [teacher]
        else:
            rank, click = list(teacher.rank), list(teacher.click)
        self.ctx = ctx
        self.device = ctx.device
        stores: dict[int, EventStore] = {}

        def store_of(net: TeacherRanker) -> EventStore:
            if id(net) not in stores:  # one pass per distinct network
                stores[id(net)] = event_store(net, ctx, split_end)
            return stores[id(net)]

        self.rank = [(n, store_of(n)) for n in rank] if "interaction" in heads else []
        self.click_nets = [(n, store_of(n)) for n in click] if "click" in heads else []
        first = (self.rank or self.click_nets)[0][1]
        self.has = first.has
        self.finder = HistoryMatches(ctx.prep, ctx.t_spec.item_id_field) if any(n.match for n, _ in self.rank) else None
        self.starts = torch.from_numpy(ctx.prep.user_offsets[ctx.prep.ev_user]).to(self.device)
        self.ev_user = torch.from_numpy(ctx.prep.ev_user).to(self.device)

    def to(self, device: torch.device) -> TeacherView:
        other = object.__new__(TeacherView)
        other.__dict__.update(self.__dict__)
        other.ctx = self.ctx if device.type != "cpu" else self.ctx.on_cpu()
        other.device = device
        other.rank = [(n.to(device), s.to(device)) for n, s in self.rank]
        other.click_nets = [(n.to(device), s.to(device)) for n, s in self.click_nets]
        other.has, other.starts, other.ev_user = self.has.to(device), self.starts.to(device), self.ev_user.to(device)
        return other

    def bands(self, net: TeacherRanker, store: EventStore, events: torch.Tensor) -> Bands:
        """The newest ``attn_len`` events before each target event, from the store."""
        k = net.k
        idx = events[:, None] - k + torch.arange(k, device=events.device)[None, :]  # (B, k), newest last
        valid = idx >= self.starts[events][:, None]
        idx = idx.clamp(min=0)
        m = valid.unsqueeze(-1).to(store.raw.dtype)
        ev, ix = events.cpu().numpy(), idx.cpu().numpy()
        ages = self.ctx.t_enc.encode_time_gaps(self.ctx.prep.ev_ts[ev][:, None], self.ctx.prep.ev_ts[ix])
        age = torch.from_numpy(ages).to(events.device).masked_fill(~valid, 0)
        return Bands(raw=store.raw[idx] * m, key=store.key[idx] * m, value=store.value[idx] * m, mask=valid, age=age)

    @torch.no_grad()
    def interaction(self, events: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """Interaction logits (B, C) of catalogue rows ``cands`` at target ``events`` (B,)."""
        arrays = self.ctx.items_at(cands, "c_")
        out, found = [], None
        for net, store in self.rank:
            _, cv = net.item_vectors(arrays, "c_")
            a_raw, a_ctx = net.attend(cv, self.bands(net, store, events))
            match = None
            if net.match:  # the networks of one teacher share its config: one lookup serves all
                if found is None:
                    found = tuple(torch.from_numpy(a).to(events.device) for a in self.finder.lookup(
                        events.cpu().numpy(), cands.cpu().numpy(), net.cfg.history_len))
                match = net.match_vectors(*found)
            out.append(net.interaction_logits(cv, net.item_logit_bias(arrays, "c_"), store.user[events], a_raw, a_ctx,
                                              match))
        return torch.stack(out).mean(0)

    @torch.no_grad()
    def click(self, events: torch.Tensor, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Click logits (B, C), and the first click network's raw attention for column 0 (B, D)."""
        arrays = self.ctx.items_at(cands, "c_")
        out, att = [], None
        users = self.ev_user[events]
        for net, store in self.click_nets:
            cf, cv = net.item_vectors(arrays, "c_")
            a_raw, a_ctx = net.attend(cv, self.bands(net, store, events))
            uf = store.user_fields[users] if store.user_fields is not None else None
            out.append(net.click_logits(cf, uf, store.user[events], a_raw, a_ctx))
            att = a_raw[:, 0] if att is None else att
        return torch.stack(out).mean(0), att

    @torch.no_grad()
    def layers(self, events: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The first ranking network's intermediate layers at target ``events`` (B,) for
        catalogue rows ``items`` (B,): (B, 3, D), the user vector, the raw target
        attention for the item and the item vector (the order of
        :data:`kdaliens.training.distill.LAYERS`)."""
        net, store = self.rank[0]
        _, cv = net.item_vectors(self.ctx.items_at(items[:, None], "c_"), "c_")  # (B, 1, D)
        a_raw, _ = net.attend(cv, self.bands(net, store, events))
        return torch.stack([store.user[events], a_raw[:, 0], cv[:, 0]], dim=1)

    def score(self, events: np.ndarray, cands: np.ndarray, head: str, chunk: int = 65536) -> np.ndarray:
        """Numpy convenience: logits (B, C) of ``head``, in chunks of ``chunk`` candidates."""
        out = np.zeros(cands.shape, dtype=np.float64)
        per = max(1, chunk // max(1, cands.shape[1]))
        for i in range(0, len(events), per):
            ev = torch.from_numpy(np.asarray(events[i:i + per])).to(self.device)
            c = torch.from_numpy(np.ascontiguousarray(cands[i:i + per])).to(self.device)
            res = self.interaction(ev, c) if head == "interaction" else self.click(ev, c)[0]
            out[i:i + per] = res.double().cpu().numpy()
        return out
