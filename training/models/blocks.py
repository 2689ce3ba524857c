"""Registered sequence encoders and interaction blocks of the KD-ALIENS teacher."""

from __future__ import annotations

import torch
from torch import nn

from .layers import InteractionBlock, SequenceEncoder, register_interaction_block, register_sequence_encoder


@register_sequence_encoder("transformer")
class TransformerSequenceEncoder(SequenceEncoder):
    """Pre-norm transformer over the history (self-attention, causal when asked)."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor, causal: bool) -> torch.Tensor:
        B, L, _ = x.shape
        eye = torch.eye(L, dtype=torch.bool, device=x.device)
        allowed = mask.unsqueeze(1).expand(B, L, L)  # (B, query, key): real keys only
        if causal:
            allowed = allowed & torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device))
        # Every query may see itself, so padding rows never become all -inf (NaN).
        blocked = ~(allowed | eye)
        blocked = blocked.repeat_interleave(self.heads, dim=0)  # (B * heads, L, L)
        h = self.encoder(x, mask=blocked)
        return self.norm(h) * mask.unsqueeze(-1).to(h.dtype)


@register_interaction_block("alien")
class AlienInteraction(InteractionBlock):
    """ALIEN block: stacked multi-head self-attention across field embeddings.

    Each layer lets every field attend to every other, so stacking layers builds
    higher-order feature interactions; ``last_attention`` (B, H, F, F) shows which
    field pairs the model relies on.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
                                  for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                 for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:  # (B, F, D) -> (B, F, D)
        x = fields
        for attn, norm, ffn, fnorm in zip(self.attn, self.norms, self.ffn, self.ffn_norms):
            y = norm(x)
            out, w = attn(y, y, y, need_weights=not self.training, average_attn_weights=False)
            if w is not None:
                self.last_attention = w.detach()
            x = x + out
            x = x + ffn(fnorm(x))
        return x
