"""The KD-ALIENS teacher (model code only; training lives in ``kdaliens.training.loop``).

TeacherRanker = field embeddings + ALIEN interaction block + sequence encoder over a
long history + target attention + MLP head. It has two outputs per (history, item):

* an *interaction* logit, ``state . item_vector``: will the user interact with this item
  next? Trained SASRec-style with a softmax over the catalogue at every history position,
  which is what ranks items against ones the user never touched;
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
buckets) and ``hist_mask``. Windows use the ``win_`` prefix for the same arrays.
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

    # -------------------------------------------------------------------- entry points
    def forward_windows(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Causal pass over windows; position p's next event is ``tgt_*`` at p.

        Returns ``states`` (B, L, D), ``click`` (B, L) logits for the targets and
        ``att`` (B, L, D), the user-interest vectors after target attention.
        """
        states = self.encode_history(batch, "win_", causal=True)  # (B, L, D)
        tf, tv = self.item_vectors(batch, "tgt_")  # (B, L, Fi, D), (B, L, D)
        L = states.shape[1]
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=states.device))
        allowed = causal.unsqueeze(0) & batch["win_mask"].unsqueeze(1)  # (B, L, L)
        users = {k: v for k, v in batch.items() if k.startswith("user_")}
        click, att = self.click_logits(users, tf, tv, states, states, allowed)
        return {"states": states, "click": click, "att": att}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Score ``cand_*`` (B, N) against one history per row (``hist_*``, (B, L)).

        Returns ``interaction`` (B, N) and ``click`` (B, N) logits, ``state`` (B, D)
        and ``att`` (B, N, D).
        """
        # Causal, as in training: the last slot's state is then the same function of the
        # history as every training position's state.
        states = self.encode_history(batch, "hist_", causal=True)  # (B, L, D)
        state = states[:, -1]  # newest event sits in the last slot
        cf, cv = self.item_vectors(batch, "cand_")  # (B, N, Fi, D), (B, N, D)
        B, N = cv.shape[:2]
        interaction = (cv * state.unsqueeze(1)).sum(-1) + self.item_logit_bias(batch, "cand_")
        allowed = batch["hist_mask"].unsqueeze(1).expand(B, N, -1)
        users = {k: v for k, v in batch.items() if k.startswith("user_")}
        click, att = self.click_logits(users, cf, cv, states, state.unsqueeze(1).expand(B, N, -1), allowed)
        return {"interaction": interaction, "click": click, "state": state, "att": att}
