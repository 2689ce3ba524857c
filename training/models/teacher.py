"""The KD-ALIENS teacher (model code only; training lives in ``kdaliens.training.loop``).

TeacherRanker = field embeddings + ALIEN interaction block + sequence encoder over a
long history + target attention + MLP head. It has two outputs per (history, item):

* an *interaction* logit: will the user interact with this item next? A two-tower part,
  ``state . item_vector + bias``, trained SASRec-style with a softmax over the whole
  catalogue at every history position, plus a target-aware part (target attention from
  the item over the history, then a small MLP) trained with a softmax over the target
  and sampled unobserved items. This is what ranks items against ones the user never
  touched;
* a *click* logit: given an interaction, is it a click (rating >= 4)? Computed by target
  attention from the item over the encoded history, then the ALIEN block over the user's
  fields, the item's fields, the attention output and the sequence state, then an MLP.

Two ways in:
* :meth:`forward_windows` runs a causal pass over time-ordered, left-padded event windows
  and scores every position's next event at once (training, and soft labels for the
  student);
* :meth:`forward` scores candidates against one history per request (evaluation).

History inputs (from the SDK's encoder): ``hist_<item field>``, ``hist_event``,
``hist_gap`` (time since the previous event, bucketized with the spec's time-gap
buckets) and ``hist_mask``, plus ``query_gap`` (B,), the time from the newest event to
the request. Windows use the ``win_`` prefix for the same arrays and ``tgt_gap`` for
each target's query gap.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdaliens.sdk.features import FeatureSpec

from ..config import TeacherConfig
from . import blocks  # noqa: F401  (registers the default parts)
from .layers import INTERACTION_BLOCKS, MLP, SEQUENCE_ENCODERS, FieldEmbedding, history_fields_of


class ItemTower(nn.Module):
    """Item fields -> (…, F, D) field embeddings and a (…, D) item vector."""

    def __init__(self, spec: FeatureSpec, dim: int):
        super().__init__()
        self.fields = FieldEmbedding(list(spec.item_fields), dim)
        self.n_fields = len(spec.item_fields)
        self.proj = nn.Linear(self.n_fields * dim, dim)

    def forward(self, arrays: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fields(arrays, prefix)  # (..., F, D)
        return f, self.proj(f.flatten(-2))  # (..., D)


class TargetAttention(nn.Module):
    """Single-head attention from item queries over encoded history states."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, query: torch.Tensor, states: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # query (B, Q, D), states (B, L, D), allowed (B, Q, L) bool -> (B, Q, D)
        s = torch.bmm(self.q(query), self.k(states).transpose(1, 2)) * self.scale  # (B, Q, L)
        s = s.masked_fill(~allowed, -1e4)
        w = torch.softmax(s, dim=-1) * allowed.to(s.dtype)
        return torch.bmm(w, self.v(states))


class TeacherRanker(nn.Module):
    """KD-ALIENS teacher. See the module docstring for inputs and outputs."""

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
        self.items = ItemTower(spec, d)
        self.hist_fields = [f.name for f in history_fields_of(spec)]
        self.users = FieldEmbedding(list(spec.user_fields), d) if spec.user_fields else None
        self.event_emb = nn.Embedding(spec.event_field.cardinality, d, padding_idx=0)
        self.gap_emb = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        # Time between the newest history event and the request ("now"): the same
        # buckets, its own table. It tells a burst from a return after months.
        self.query_gap_emb = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        self.pos_emb = nn.Embedding(self.L, d)
        self.in_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.sequence = SEQUENCE_ENCODERS[cfg.seq_encoder](d, cfg.seq_layers, cfg.seq_heads, cfg.dropout)
        self.target_attention = TargetAttention(d)
        self.interaction = INTERACTION_BLOCKS[cfg.interaction](d, cfg.alien_layers, cfg.alien_heads, cfg.dropout)
        n_fields = len(spec.user_fields) + len(spec.item_fields) + 2
        self.click_head = MLP(n_fields * d, cfg.mlp, 1, cfg.dropout)
        self.item_bias = nn.Embedding(spec.item_field(spec.item_id_field).cardinality, 1)
        nn.init.zeros_(self.item_bias.weight)
        # Target-aware part of the interaction logit (DIN-style): the item against what
        # target attention found in the history.
        self.interaction_head = MLP(4 * d, (d,), 1, cfg.dropout)

    # -------------------------------------------------------------------- parts
    def item_vectors(self, arrays: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(…, F, D) field embeddings and (…, D) vectors of the items under ``prefix``."""
        return self.items(arrays, prefix)

    def item_logit_bias(self, arrays: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return self.item_bias(arrays[prefix + self.spec.item_id_field]).squeeze(-1)

    def encode_history(self, arrays: dict[str, torch.Tensor], prefix: str, causal: bool) -> torch.Tensor:
        """Event windows (B, L) -> contextual states (B, L, D)."""
        mask = arrays[prefix + "mask"]
        sub = {n: arrays[prefix + n] for n in self.hist_fields}
        _, ev = self.items(sub, "")  # (B, L, D)
        L = mask.shape[1]
        pos = torch.arange(self.L - L, self.L, device=mask.device)
        x = ev + self.event_emb(arrays[prefix + "event"]) + self.gap_emb(arrays[prefix + "gap"]) + self.pos_emb(pos)
        x = self.drop(self.in_norm(x)) * mask.unsqueeze(-1).to(x.dtype)
        return self.sequence(x, mask, causal)

    def click_logits(self, users: dict[str, torch.Tensor] | None, item_fields: torch.Tensor, item_vec: torch.Tensor,
                     states: torch.Tensor, state_q: torch.Tensor, allowed: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Click logits (B, Q) and the attention output (B, Q, D) for Q items per row.

        item_fields (B, Q, Fi, D), item_vec (B, Q, D), states (B, L, D), state_q (B, Q, D)
        (the sequence state each query is made at), allowed (B, Q, L).
        """
        B, Q, _ = item_vec.shape
        att = self.target_attention(item_vec, states, allowed)  # (B, Q, D)
        parts = [item_fields, att.unsqueeze(2), state_q.unsqueeze(2)]
        if self.users is not None and users is not None:
            u = self.users(users, "user_")  # (B, Fu, D)
            parts.insert(0, u.unsqueeze(1).expand(B, Q, u.shape[1], u.shape[2]))
        fields = torch.cat(parts, dim=2)  # (B, Q, F, D)
        z = self.interaction(fields.flatten(0, 1))  # (B*Q, F, D)
        logit = self.click_head(z.flatten(1)).view(B, Q)
        return logit, att

    def interaction_logits(self, item_vec: torch.Tensor, item_bias: torch.Tensor, states: torch.Tensor,
                           state_q: torch.Tensor, allowed: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Interaction logits (B, Q) = two-tower ``state . item`` + bias + target-aware term.

        item_vec (B, Q, D), item_bias (B, Q), states (B, L, D), state_q (B, Q, D),
        allowed (B, Q, L). Also returns the attention output (B, Q, D).
        """
        att = self.target_attention(item_vec, states, allowed)  # (B, Q, D)
        aware = self.interaction_head(torch.cat([item_vec, att, item_vec * att, state_q], dim=-1)).squeeze(-1)
        return (item_vec * state_q).sum(-1) + item_bias + aware, att

    def query_state(self, state: torch.Tensor, query_gap: torch.Tensor) -> torch.Tensor:
        """The state a request is scored from: the sequence state plus the query gap."""
        return state + self.query_gap_emb(query_gap)

    # -------------------------------------------------------------------- entry points
    def forward_windows(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Causal pass over windows; position p's next event is ``tgt_*`` at p.

        With ``neg_*`` arrays (B, L, K): K sampled unobserved items per position.

        Returns ``states`` (B, L, D), ``click`` (B, L) logits for the targets, ``att``
        (B, L, D) (the user-interest vectors after target attention) and, with
        negatives, ``sampled`` (B, L, 1 + K) interaction logits (target first).
        """
        states = self.encode_history(batch, "win_", causal=True)  # (B, L, D)
        tf, tv = self.item_vectors(batch, "tgt_")  # (B, L, Fi, D), (B, L, D)
        B, L, D = states.shape
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=states.device))
        allowed = causal.unsqueeze(0) & batch["win_mask"].unsqueeze(1)  # (B, L, L)
        users = {k: v for k, v in batch.items() if k.startswith("user_")}
        query = self.query_state(states, batch["tgt_gap"])  # (B, L, D)
        click, att = self.click_logits(users, tf, tv, states, query, allowed)
        out = {"states": states, "query": query, "click": click, "att": att}
        if "neg_" + self.spec.item_id_field in batch:
            _, nv = self.item_vectors(batch, "neg_")  # (B, L, K, D)
            K = nv.shape[2]
            items = torch.cat([tv.unsqueeze(2), nv], dim=2).reshape(B, L * (1 + K), D)
            bias = torch.cat([self.item_logit_bias(batch, "tgt_").unsqueeze(2),
                              self.item_logit_bias(batch, "neg_")], dim=2).reshape(B, L * (1 + K))
            rep = lambda t: t.repeat_interleave(1 + K, dim=1)  # noqa: E731  (B, L, ...) -> (B, L*(1+K), ...)
            logits, _ = self.interaction_logits(items, bias, states, rep(query), rep(allowed))
            out["sampled"] = logits.view(B, L, 1 + K)
        return out

    def forward(self, batch: dict[str, torch.Tensor], with_click: bool = True) -> dict[str, torch.Tensor]:
        """Score ``cand_*`` (B, N) against one history per row (``hist_*``, (B, L)).

        Returns ``interaction`` (B, N) and ``click`` (B, N) logits, ``state`` (B, D)
        and ``att`` (B, N, D). ``with_click=False`` skips the click head (ranking only).
        """
        # Causal, as in training: the last slot's state is then the same function of the
        # history as every training position's state.
        states = self.encode_history(batch, "hist_", causal=True)  # (B, L, D)
        return self.score_with_states(batch, states, batch["hist_mask"], with_click)

    def score_with_states(self, batch: dict[str, torch.Tensor], states: torch.Tensor, mask: torch.Tensor,
                          with_click: bool = True) -> dict[str, torch.Tensor]:
        """Score ``cand_*`` given already-encoded history states (B, L, D), newest last."""
        state = self.query_state(states[:, -1], batch["query_gap"])  # (B, D)
        cf, cv = self.item_vectors(batch, "cand_")  # (B, N, Fi, D), (B, N, D)
        B, N = cv.shape[:2]
        allowed = mask.unsqueeze(1).expand(B, N, -1)
        state_q = state.unsqueeze(1).expand(B, N, -1)
        interaction, _ = self.interaction_logits(cv, self.item_logit_bias(batch, "cand_"), states, state_q, allowed)
        if not with_click:
            return {"interaction": interaction, "state": state}
        users = {k: v for k, v in batch.items() if k.startswith("user_")}
        click, att = self.click_logits(users, cf, cv, states, state_q, allowed)
        return {"interaction": interaction, "click": click, "state": state, "att": att}
