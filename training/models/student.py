"""The KD-ALIENS student: small, int8-friendly, built for one user and N candidates.

Inputs (the SDK encoder's arrays, batched):

* ``user_<field>`` (B,) — the user's attributes;
* ``hist_<item field>``, ``hist_event``, ``hist_time_gap`` (B, L) and ``hist_mask``
  (B, L) — the sampled history (last k events plus m older ones, left-padded);
* ``cand_<item field>`` (B, N) or (B, N, W) — the candidates.

On a device B = 1 and N varies; L is fixed, so only one dimension is dynamic.
User-side work (history vectors, the user-interest vector) happens once per row, not
once per candidate. Attention is a dot product written as 3-D ``bmm`` so that XNNPACK
takes it. Outputs are logits (B, N): ``interaction`` (ranks items, including ones the
user never touched) and ``click`` (click given interaction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdaliens.sdk.features import FeatureSpec

from ..config import StudentConfig
from .layers import MLP, FieldEmbedding, history_fields_of


class StudentRanker(nn.Module):
    """Small embeddings + dot target attention (bmm) + a small MLP; two logits."""

    def __init__(self, spec: FeatureSpec, cfg: StudentConfig):
        super().__init__()
        d = cfg.dim
        self.cfg = cfg
        self.spec = spec
        self.L = spec.history.length
        self.items = FieldEmbedding(list(spec.item_fields), d)
        self.item_names = [f.name for f in spec.item_fields]
        self.hist_names = [f.name for f in history_fields_of(spec)]
        self.users = FieldEmbedding(list(spec.user_fields), d) if spec.user_fields else None
        self.event_emb = nn.Embedding(spec.event_field.cardinality, d, padding_idx=0)
        self.gap_emb = nn.Embedding(spec.time_gap_field.cardinality, d, padding_idx=0)
        self.pos_emb = nn.Parameter(torch.zeros(self.L, d))
        n_user_parts = 3 if self.users is not None else 2
        self.user_proj = nn.Linear(n_user_parts * d, d)
        self.head = MLP(4 * d, cfg.mlp, 2, cfg.dropout)
        self.scale = 1.0 / math.sqrt(d)

    def item_vector(self, arrays: dict[str, torch.Tensor], prefix: str, names: list[str]) -> torch.Tensor:
        # Sum of field embeddings: (…, D).
        out = None
        for name in names:
            i = self.item_names.index(name)
            e = self.items.embed_field(i, arrays[prefix + name])
            out = e if out is None else out + e
        return out

    def user_side(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Once per request: history vectors (B, L, D), mask (B, L), user vector (B, D)."""
        mask = batch["hist_mask"].to(torch.float32)  # (B, L)
        h = self.item_vector(batch, "hist_", self.hist_names)  # (B, L, D)
        h = h + self.event_emb(batch["hist_event"]) + self.gap_emb(batch["hist_time_gap"]) + self.pos_emb
        h = h * mask.unsqueeze(-1)
        count = mask.sum(1, keepdim=True).clamp(min=1.0)
        mean = h.sum(1) / count  # (B, D)
        last = h[:, -1]  # the newest event (zeros on cold start)
        parts = [mean, last]
        if self.users is not None:
            parts.insert(0, self.users(batch, "user_").sum(-2))
        user = self.user_proj(torch.cat(parts, dim=-1))  # (B, D)
        return h, mask, user

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h, mask, user = self.user_side(batch)
        c = self.item_vector(batch, "cand_", self.item_names)  # (B, N, D)
        B, N, D = c.shape
        # Dot target attention, written as bmm for XNNPACK.
        s = torch.bmm(c, h.transpose(1, 2)) * self.scale  # (B, N, L)
        s = s + (mask.unsqueeze(1) - 1.0) * 1e4
        w = torch.softmax(s, dim=-1) * mask.unsqueeze(1)
        att = torch.bmm(w, h)  # (B, N, D)
        u = user.unsqueeze(1).expand(B, N, D)
        out = self.head(torch.cat([c, att, c * att, u], dim=-1))  # (B, N, 2)
        interaction = out[..., 0] + (c * u).sum(-1)
        return {"interaction": interaction, "click_logit": out[..., 1], "user": user, "att": att, "item": c}
