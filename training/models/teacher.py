"""The KD-ALIENS teacher (model code only; training lives in ``kdaliens.training.loop``).

TeacherRanker = field embeddings + sequence encoder over a long history + candidate
attention over the newest events + ALIEN interaction block + two heads. It holds every
path the device student has, wider and over a longer history, plus the KD-ALIENS parts:

* **history**: each event is its item vector plus its event token (the rating, for
  explicit data) and the time since the previous event. A causal sequence encoder
  (the ``transformer`` by default: self-attention with ALiBi distance penalties; or
  ``sam``, ``dumn``, ``spnn``) turns the last ``history_len`` events into contextual
  states; it also gets each event's parts as context (:meth:`TeacherRanker.encode_events`);
* **user side**, per query position: the user's fields, the mean of the history so far,
  the newest event, the newest contextual state and the query gap (time from the
  newest event to the request) go through one projection into a user vector ``u``;
* **candidate side**, per candidate ``c`` (its item vector ``v``): dot attention from
  ``v`` over the newest ``attn_len`` raw events (with their rating tokens, their
  recency and their age at the request), as the student does, and learned attention
  over the same events' contextual states; with ``match_history``, also what an exact
  search of the whole history finds about ``c`` (how often, how many events back, with
  which rating), ``m``;
* **interaction** logit (will the user interact with ``c`` next; ranks any item):
  ``v . u + bias(c) + MLP([v, a_raw, v*a_raw, a_ctx, v*a_ctx, u, m])``;
* **click** logit (given an interaction, is it a click): the ALIEN block (multi-head
  self-attention across fields) over the user's fields, the candidate's fields and the
  ``a_raw``, ``a_ctx`` and ``u`` vectors, then an MLP.

Two ways in, computing the same function:

* :meth:`TeacherRanker.encode_windows` runs one causal pass over time-ordered,
  left-padded event windows (attention once per window) and gives every position's
  user vector and attention bands; the loop scores each position's target and
  sampled items from them;
* :meth:`TeacherRanker.forward` scores candidates against one history per request.

:class:`Teacher` is what a run ships: the network snapshot with the best validation
NDCG@10 answers ``interaction``, the one with the best validation AUC answers
``click``; with ``ensemble`` > 1 it averages several such pairs, and the click answer
also averages ``click_members`` independently seeded click-only networks.

History inputs (from the SDK's encoder): ``hist_<item field>``, ``hist_event``,
``hist_gap`` (time since the previous event, bucketized with the spec's time-gap
buckets), ``hist_time_gap`` (time from the event to the request, the same buckets) and
``hist_mask``, plus ``query_gap`` (B,). Windows use the ``win_`` prefix
for the same arrays and ``tgt_gap`` for each target's query gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kdaliens.sdk.features import OOV_ID, FeatureSpec

from ..config import TeacherConfig
from ..data.preprocess import IMPLICIT_EVENT
from . import blocks, dumn, sam, spnn  # noqa: F401  (registers the parts: transformer, alien; sam, dumn, spnn)
from .layers import INTERACTION_BLOCKS, MLP, SEQUENCE_ENCODERS, FieldEmbedding, history_fields_of


class ItemTower(nn.Module):
    """Item fields -> (…, F, D) field embeddings and a (…, D) item vector."""

    def __init__(self, spec: FeatureSpec, dim: int):
        super().__init__()
        self.fields = FieldEmbedding(list(spec.item_fields), dim, bags=True)
        self.n_fields = len(spec.item_fields)
        self.proj = nn.Linear(self.n_fields * dim, dim)

    def forward(self, arrays: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fields(arrays, prefix)  # (..., F, D)
        return f, self.proj(f.flatten(-2))  # (..., D)


MATCH_COUNTS = 8  # occurrences of a candidate in the history: 0..6, and 7 or more
MATCH_LAGS = 64  # 0: no occurrence; else 1 + floor(4 log2(events back)): 4 buckets an octave


def last_band(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, L, ...) -> (B, k, ...): the newest k slots, left-padded with zeros."""
    L = x.shape[1]
    if L >= k:
        return x[:, L - k:]
    return torch.cat([x.new_zeros((x.shape[0], k - L) + x.shape[2:]), x], dim=1)


@dataclass
class Bands:
    """What candidates attend to at N query positions: the newest ``k`` events.

    ``raw`` (N, k, D) event vectors (recency and age are added by the scorer), ``key``
    and ``value`` (N, k, D) projections of their contextual states, ``mask`` (N, k)
    bool, ``age`` (N, k) each event's time to the query, bucketized (the SDK's
    ``hist_time_gap`` rule).
    """

    raw: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor
    age: torch.Tensor


@dataclass
class WindowPass:
    """One causal pass over windows (B, L): per-slot tensors for scoring any position."""

    raw: torch.Tensor  # (B, L, D) event vectors
    key: torch.Tensor  # (B, L, D)
    value: torch.Tensor  # (B, L, D)
    user: torch.Tensor  # (B, L, D) user vector at each slot (query = that slot's target)
    states: torch.Tensor  # (B, L, D) contextual states
    user_fields: torch.Tensor | None  # (B, Fu, D)
    mask: torch.Tensor  # (B, L)

    def bands(self, k: int, sel: torch.Tensor, age: torch.Tensor) -> Bands:
        """Bands of the selected slots (``sel``: (B, L) bool) -> (P, k, ...), in one gather;
        ``age`` (P, k) from :func:`~kdaliens.training.batches.band_ages`."""
        B, L, D = self.raw.shape
        joint = torch.cat([self.raw, self.key, self.value, self.mask.unsqueeze(-1).to(self.raw.dtype)], -1)
        flat = torch.cat([joint.new_zeros(B, k - 1, joint.shape[-1]), joint], 1).flatten(0, 1)  # (B*(L+k-1), F)
        b, j = sel.nonzero(as_tuple=True)  # (P,) window and slot of each selected query
        idx = (b * (L + k - 1) + j)[:, None] + torch.arange(k, device=sel.device)  # (P, k), padded coordinates
        g = flat.index_select(0, idx.flatten()).view(len(b), k, -1)  # (P, k, 3D + 1)
        raw, key, value, mask = g.split([D, D, D, 1], dim=-1)  # split's backward concatenates: no zero fills
        return Bands(raw=raw, key=key, value=value, mask=mask.squeeze(-1) > 0.5, age=age)


class TeacherRanker(nn.Module):
    """One KD-ALIENS teacher network. See the module docstring for inputs and outputs."""

    def __init__(self, spec: FeatureSpec, cfg: TeacherConfig):
        super().__init__()
        if cfg.seq_encoder not in SEQUENCE_ENCODERS:
            raise ValueError(f"unknown sequence encoder {cfg.seq_encoder!r}; have {sorted(SEQUENCE_ENCODERS)}")
        if cfg.interaction not in INTERACTION_BLOCKS:
            raise ValueError(f"unknown interaction block {cfg.interaction!r}; have {sorted(INTERACTION_BLOCKS)}")
        d = cfg.dim
        self.cfg = cfg
        self.spec = spec
        self.L = cfg.history_len
        self.k = min(cfg.attn_len, cfg.history_len)
        self.items = ItemTower(spec, d)
        self.hist_fields = [f.name for f in history_fields_of(spec)]
        self.users = FieldEmbedding(list(spec.user_fields), d, bags=True) if spec.user_fields else None
        self.event_emb = nn.Embedding(spec.event_field.cardinality, d, padding_idx=0)
        self.gap_emb = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        self.query_gap_emb = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        self.recency = nn.Embedding(self.k, d)
        nn.init.normal_(self.recency.weight, std=0.02)
        self.age_raw = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        self.age_key = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        self.in_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        # Explicit feedback: event tokens other than the implicit one (ratings, click/view).
        self.explicit = bool(set(spec.event_vocab) - {IMPLICIT_EVENT})
        encoder = SEQUENCE_ENCODERS[cfg.seq_encoder]
        options = {k: getattr(cfg, k) for k in getattr(encoder, "config_options", ())}  # e.g. DUMN's purify
        self.sequence = encoder(d, cfg.seq_layers, cfg.seq_heads, cfg.dropout, **options)
        n_user_parts = 5 if self.users is not None else 4
        self.user_proj = nn.Linear(n_user_parts * d, d)
        self.ctx_q, self.ctx_k, self.ctx_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        # Candidate-aware part of the interaction logit; the user's share of its first
        # layer is computed once per query, not once per candidate.
        hidden = cfg.rank_mlp[0] if cfg.rank_mlp else d
        self.rank_in = nn.Linear(5 * d, hidden)
        self.rank_user = nn.Linear(d, hidden, bias=False)
        self.rank_out = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), MLP(hidden, cfg.rank_mlp[1:], 1, cfg.dropout))
        self.item_bias = nn.Embedding(spec.item_field(spec.item_id_field).cardinality, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.interaction = INTERACTION_BLOCKS[cfg.interaction](d, cfg.alien_layers, cfg.alien_heads, cfg.dropout)
        self.match = bool(cfg.match_history)
        if self.match:  # what an exact search of the history finds about each candidate
            self.match_count = nn.Embedding(MATCH_COUNTS, d)
            self.match_lag = nn.Embedding(MATCH_LAGS, d)
            self.match_event = nn.Embedding(spec.event_field.cardinality, d)
            for emb in (self.match_count, self.match_lag, self.match_event):
                nn.init.normal_(emb.weight, std=0.02)
            self.rank_match = nn.Linear(d, hidden, bias=False)
        n_fields = len(spec.user_fields) + len(spec.item_fields) + 3
        self.click_head = MLP(n_fields * d, cfg.mlp, 1, cfg.dropout)
        self.scale = 1.0 / math.sqrt(d)

    # -------------------------------------------------------------------- parts
    def item_vectors(self, arrays: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(…, F, D) field embeddings and (…, D) vectors of the items under ``prefix``."""
        return self.items(arrays, prefix)

    def item_logit_bias(self, arrays: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return self.item_bias(arrays[prefix + self.spec.item_id_field]).squeeze(-1)

    def user_fields(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, Fu, D) embeddings of the user's fields (None for data without user attributes)."""
        return self.users(arrays, "user_") if self.users is not None else None

    def encode_events(self, arrays: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """History (B, L) -> raw event vectors (B, L, D) and contextual states (B, L, D).

        The encoder gets ``x`` (the normalized event vectors) and, as context, the parts
        of each event (all zero at padding): ``implicit`` the item vectors (B, L, D),
        ``explicit`` the event-token embeddings (B, L, D; only on data with explicit
        feedback, e.g. ratings), ``time`` the time-gap embeddings (B, L, D) and ``fields``
        (B, L, F, D) the item's field embeddings, the event token and the gap embedding.
        """
        mask = arrays[prefix + "mask"]
        m = mask.unsqueeze(-1).to(torch.float32)
        fv, iv = self.items({n: arrays[prefix + n] for n in self.hist_fields}, "")  # (B, L, Fi, D), (B, L, D)
        ev, gv = self.event_emb(arrays[prefix + "event"]), self.gap_emb(arrays[prefix + "gap"])
        raw = (iv + ev + gv) * m
        x = self.drop(self.in_norm(raw)) * m
        context = {"implicit": iv * m, "time": gv * m,
                   "fields": torch.cat([fv, ev.unsqueeze(2), gv.unsqueeze(2)], 2) * m.unsqueeze(-1)}
        if self.explicit:
            context["explicit"] = ev * m
        return raw, self.sequence(x, mask, True, **context)

    def user_vectors(self, raw: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, query_gap: torch.Tensor,
                     user_fields: torch.Tensor | None) -> torch.Tensor:
        """User vector at every slot (B, L, D): fields, running mean, newest event, state, query gap."""
        m = mask.unsqueeze(-1).to(raw.dtype)
        mean = (raw * m).cumsum(1) / m.cumsum(1).clamp(min=1.0)  # (B, L, D)
        parts = [mean, raw, states, self.query_gap_emb(query_gap)]
        if user_fields is not None:
            parts.insert(0, user_fields.sum(1, keepdim=True).expand_as(raw))
        return self.user_proj(torch.cat(parts, dim=-1))

    def encode_windows(self, batch: dict[str, torch.Tensor]) -> WindowPass:
        """Causal pass over windows ``win_*`` (B, L); slot j's query is ``tgt_*`` at j."""
        raw, states = self.encode_events(batch, "win_")
        uf = self.user_fields(batch)
        user = self.user_vectors(raw, states, batch["win_mask"], batch["tgt_gap"], uf)
        return WindowPass(raw=raw, key=self.ctx_k(states), value=self.ctx_v(states), user=user, states=states,
                          user_fields=uf, mask=batch["win_mask"])

    def attend(self, cand: torch.Tensor, bands: Bands) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate attention (N, C, D) over bands (N, k, D) -> a_raw, a_ctx (N, C, D)."""
        k = bands.mask.shape[-1]
        rec = self.recency.weight[:k].flip(0)  # slot t of a band is k-1-t events before the query
        m = bands.mask.unsqueeze(-1).to(cand.dtype)
        raw = bands.raw + (rec + self.age_raw(bands.age)) * m
        key = bands.key + self.age_key(bands.age) * m
        blocked = ~bands.mask.unsqueeze(1)  # (N, 1, k)
        s = torch.bmm(cand, raw.transpose(1, 2)) * self.scale  # (N, C, k)
        a_raw = torch.bmm(torch.softmax(s.masked_fill(blocked, -1e4), -1) * (~blocked), raw)
        s = torch.bmm(self.ctx_q(cand), key.transpose(1, 2)) * self.scale
        a_ctx = torch.bmm(torch.softmax(s.masked_fill(blocked, -1e4), -1) * (~blocked), bands.value)
        return a_raw, a_ctx

    def match_vectors(self, count: torch.Tensor, lag: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        """History matches (N, C) (see :class:`~kdaliens.training.batches.HistoryMatches`) -> (N, C, D)."""
        lag_f = lag.clamp(min=1).to(torch.float32)
        lag_bucket = torch.where(lag > 0, 1 + torch.floor(4 * torch.log2(lag_f)).long(), torch.zeros_like(lag))
        return (self.match_count(count.clamp(max=MATCH_COUNTS - 1)) + self.match_lag(lag_bucket.clamp(max=MATCH_LAGS - 1))
                + self.match_event(event))

    def request_matches(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Match vectors (B, N, D) of ``cand_*`` in the request histories ``hist_*`` (None when off)."""
        if not self.match:
            return None
        idf = self.spec.item_id_field
        hist, mask = batch["hist_" + idf], batch["hist_mask"].bool()
        cand = batch["cand_" + idf]
        eq = (cand.unsqueeze(-1) == hist.unsqueeze(1)) & mask.unsqueeze(1) & (cand > OOV_ID).unsqueeze(-1)  # (B, N, L)
        count = eq.sum(-1)
        L = hist.shape[1]
        last = torch.where(eq, torch.arange(L, device=hist.device), -1).amax(-1)  # newest slot, -1: none
        found = count > 0
        lag = torch.where(found, L - last, 0)
        event = torch.where(found, batch["hist_event"].gather(1, last.clamp(min=0)), 0)
        return self.match_vectors(count, lag, event)

    def interaction_logits(self, v: torch.Tensor, bias: torch.Tensor, user: torch.Tensor, a_raw: torch.Tensor,
                           a_ctx: torch.Tensor, match: torch.Tensor | None = None) -> torch.Tensor:
        """v (N, C, D), bias (N, C), user (N, D), attention outputs (N, C, D), history
        matches (N, C, D; with ``match_history``) -> (N, C)."""
        x = torch.cat([v, a_raw, v * a_raw, a_ctx, v * a_ctx], dim=-1)  # (N, C, 5D)
        h = self.rank_in(x) + self.rank_user(user).unsqueeze(1)  # (N, C, H)
        if match is not None:
            h = h + self.rank_match(match)
        dot = torch.bmm(v, user.unsqueeze(-1)).squeeze(-1)  # (N, C)
        return dot + bias + self.rank_out(h).squeeze(-1)

    def click_logits(self, fields: torch.Tensor, user_fields: torch.Tensor | None, user: torch.Tensor,
                     a_raw: torch.Tensor, a_ctx: torch.Tensor) -> torch.Tensor:
        """Candidate fields (N, C, Fi, D), user fields (N, Fu, D), user (N, D), a_* (N, C, D) -> (N, C)."""
        N, C = fields.shape[:2]
        parts = [fields, a_raw.unsqueeze(2), a_ctx.unsqueeze(2), user[:, None, None].expand(N, C, 1, -1)]
        if user_fields is not None:
            parts.insert(0, user_fields.unsqueeze(1).expand(N, C, -1, -1))
        z = self.interaction(torch.cat(parts, dim=2).flatten(0, 1))  # (N*C, F, D)
        return self.click_head(z.flatten(1)).view(N, C)

    # -------------------------------------------------------------------- requests
    def request_bands(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Bands, torch.Tensor | None]:
        """One history per row (``hist_*``, (B, L), newest last) -> user (B, D), bands, user fields."""
        raw, states = self.encode_events(batch, "hist_")
        mask = batch["hist_mask"]
        uf = self.user_fields(batch)
        qg = batch["query_gap"].unsqueeze(1).expand_as(mask)
        user = self.user_vectors(raw, states, mask, qg, uf)[:, -1]  # the newest slot is the query's
        k = min(self.k, mask.shape[1])
        bands = Bands(raw=last_band(raw, k), key=last_band(self.ctx_k(states), k),
                      value=last_band(self.ctx_v(states), k), mask=last_band(mask, k),
                      age=last_band(batch["hist_time_gap"], k))
        return user, bands, uf

    def forward(self, batch: dict[str, torch.Tensor], with_click: bool = True) -> dict[str, torch.Tensor]:
        """Score ``cand_*`` (B, N) against one history per row (``hist_*``, (B, L)).

        Returns ``interaction`` (B, N) and, unless ``with_click=False``, ``click`` (B, N)
        logits, plus ``user`` (B, D) and ``att`` (B, N, D) (raw candidate attention).
        """
        user, bands, uf = self.request_bands(batch)
        cf, cv = self.item_vectors(batch, "cand_")  # (B, N, Fi, D), (B, N, D)
        a_raw, a_ctx = self.attend(cv, bands)
        out = {"interaction": self.interaction_logits(cv, self.item_logit_bias(batch, "cand_"), user, a_raw, a_ctx,
                                                      self.request_matches(batch)),
               "user": user, "att": a_raw}
        if with_click:
            out["click_logit"] = self.click_logits(cf, uf, user, a_raw, a_ctx)
        return out


class Teacher(nn.Module):
    """What a run ships: per member, the ranking snapshot and the click snapshot.

    ``rank[i]`` is member i at its best validation NDCG@10, ``click[i]`` at its best
    validation AUC; ``click`` has ``cfg.click_members`` more networks after the
    members' (trained for the click head only). ``interaction`` is the mean of the
    ranking snapshots' logits, ``click`` the mean of the click snapshots'.
    """

    def __init__(self, spec: FeatureSpec, cfg: TeacherConfig, click_members: int | None = None,
                 members: int | None = None):
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        n = max(1, int(cfg.ensemble if members is None else members))
        extra = cfg.click_members if click_members is None else click_members
        self.rank = nn.ModuleList(TeacherRanker(spec, cfg) for _ in range(n))
        self.click = nn.ModuleList(TeacherRanker(spec, cfg) for _ in range(n + extra))

    @classmethod
    def from_networks(cls, spec: FeatureSpec, cfg: TeacherConfig, rank: list[TeacherRanker],
                      click: list[TeacherRanker]) -> Teacher:
        """A teacher over existing networks (shared, not copied): e.g. an ensemble in training."""
        t = cls.__new__(cls)
        nn.Module.__init__(t)
        t.spec, t.cfg = spec, cfg
        t.rank, t.click = nn.ModuleList(rank), nn.ModuleList(click)
        return t

    def forward(self, batch: dict[str, torch.Tensor], with_click: bool = True) -> dict[str, torch.Tensor]:
        outs = [m(batch, with_click=False) for m in self.rank]
        res = {"interaction": torch.stack([o["interaction"] for o in outs]).mean(0),
               "user": outs[0]["user"], "att": outs[0]["att"]}
        if with_click:
            res["click_logit"] = torch.stack([m(batch)["click_logit"] for m in self.click]).mean(0)
        return res
