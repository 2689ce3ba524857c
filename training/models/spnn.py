"""SPNN: time-coded semantic perception over the history (``seq_encoder="spnn"``).

Each event is several feature vectors (the teacher passes them as context ``fields``
(B, L, F, D): the history item's field embeddings, its event token, e.g. the rating, and
its time-gap embedding). Rather than concatenating (or summing) them, a small
multi-head attention across the F features weighs them by importance, per event: each
head's query is a learned vector plus a projection of the event's mean feature, so the
weights (softmax over the features, summing to 1) adapt to the event. The heads'
weighted features are projected back to the model width.

Time codes: the event's time since its previous event (context ``time``, (B, L, D), the
gap embedding) is added to the perceived event, and positions enter the causal
self-attention that follows (the transformer's blocks) as ALiBi distance penalties:
relative positions, never absolute slot embeddings, so a state depends on its
predecessors and their distances only.

Without context, ``x`` is the single feature (the importance weights are then 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import TransformerSequenceEncoder
from .layers import SequenceEncoder, register_sequence_encoder

MAX_FIELDS = 16


@register_sequence_encoder("spnn")
class SemanticPerception(SequenceEncoder):
    """Feature-importance attention per event, time codes, then causal ALiBi self-attention.

    Built as ``SemanticPerception(dim, layers, heads, dropout)``; called as
    ``encoder(x (B, L, D), mask (B, L), causal, fields=(B, L, F, D), time=(B, L, D))``.
    In eval mode ``last_importance`` (B, L, heads, F) holds the weights of the last call.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dh = heads, dim // heads
        self.field_norm = nn.LayerNorm(dim)
        self.field_type = nn.Parameter(torch.zeros(MAX_FIELDS, dim))  # which feature it is
        nn.init.normal_(self.field_type, std=0.02)
        self.query = nn.Parameter(torch.randn(heads, self.dh) / math.sqrt(self.dh))
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.time_code = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerSequenceEncoder(dim, layers, heads, dropout)
        self.last_importance: torch.Tensor | None = None

    def importance(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fields (B, L, F, D) -> weights (B, L, H, F) (softmax over F) and the perceived event (B, L, D)."""
        B, L, Fn, D = fields.shape
        if Fn > MAX_FIELDS:
            raise ValueError(f"spnn takes at most {MAX_FIELDS} features per event, got {Fn}")
        H, Dh = self.heads, self.dh
        f = self.field_norm(fields) + self.field_type[:Fn]
        q = self.query + self.q_proj(f.mean(2)).view(B, L, H, Dh)  # (B, L, H, Dh)
        k = self.k_proj(f).view(B, L, Fn, H, Dh)
        v = self.v_proj(f).view(B, L, Fn, H, Dh)
        w = torch.softmax(torch.einsum("blhd,blfhd->blhf", q, k) / math.sqrt(Dh), dim=-1)
        e = torch.einsum("blhf,blfhd->blhd", w, v).reshape(B, L, D)
        return w, self.out(e)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, causal: bool, **context: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        fields = context.get("fields")
        w, h = self.importance(x.unsqueeze(2) if fields is None else fields)
        if not self.training:
            self.last_importance = w.detach()
        time = context.get("time")
        if time is not None:
            h = h + self.time_code(time)
        h = self.drop(self.norm(h)) * m
        return self.encoder(h, mask, causal)
