"""Registered sequence encoders and interaction blocks of the KD-ALIENS teacher."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import InteractionBlock, SequenceEncoder, register_interaction_block, register_sequence_encoder


def alibi_slopes(heads: int) -> torch.Tensor:
    """Per-head slopes of ALiBi's linear distance penalty (Press et al., 2022)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


class _SelfAttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention + GELU feed-forward, on a float attention mask."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H = self.heads
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, Dh)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, L, Dh)
        x = x + F.dropout(self.out(a.transpose(1, 2).reshape(B, L, D)), p, self.training)
        return x + F.dropout(self.ffn(self.norm2(x)), p, self.training)


@register_sequence_encoder("transformer")
class TransformerSequenceEncoder(SequenceEncoder):
    """Pre-norm transformer over the history (self-attention, causal when asked).

    Positions enter as ALiBi distance penalties rather than absolute slot embeddings, so
    the state of an event depends on its predecessors and their distances only: the
    same events give the same state at any slot of a training window and at the
    newest slot of a request.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(_SelfAttentionBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def attention_mask(self, mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """Float mask (B, H, L, L): ALiBi penalties, -inf on padding keys (and the future)."""
        L = mask.shape[1]
        pos = torch.arange(L, device=mask.device)
        dist = (pos[:, None] - pos[None, :]).to(torch.float32)  # (query, key)
        bias = -self.slopes.to(mask.device)[:, None, None] * dist.abs()  # (H, L, L)
        allowed = mask[:, None, None, :]  # (B, 1, 1, L): real keys only
        if causal:
            allowed = allowed & (dist >= 0)
        # Every query may see itself, so padding rows never become all -inf (NaN).
        allowed = allowed | torch.eye(L, dtype=torch.bool, device=mask.device)
        return bias.unsqueeze(0).masked_fill(~allowed, -math.inf)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, causal: bool, **context) -> torch.Tensor:
        attn_mask = self.attention_mask(mask, causal)
        h = x
        for block in self.blocks:
            h = block(h, attn_mask)
        return self.norm(h) * mask.unsqueeze(-1).to(h.dtype)


@register_interaction_block("alien")
class AlienInteraction(InteractionBlock):
    """ALIEN block: stacked multi-head self-attention across field embeddings.

    Each layer lets every field attend to every other, so stacking layers builds
    higher-order feature interactions; in eval mode ``last_attention`` (B, H, F, F)
    shows which field pairs the model relies on.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                 for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.dropout = dropout

    def forward(self, fields: torch.Tensor) -> torch.Tensor:  # (B, F, D) -> (B, F, D)
        x = fields
        B, Fn, D = x.shape
        H = self.heads
        for qkv, out, norm, ffn, fnorm in zip(self.qkv, self.out, self.norms, self.ffn, self.ffn_norms):
            q, k, v = qkv(norm(x)).view(B, Fn, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, F, Dh)
            if self.training:
                a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout)
            else:
                w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1)  # (B, H, F, F)
                self.last_attention = w.detach()
                a = w @ v
            x = x + out(a.transpose(1, 2).reshape(B, Fn, D))
            x = x + ffn(fnorm(x))
        return x
