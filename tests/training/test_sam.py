"""SAM's short-term part: block-local attention equals full attention under a banded mask."""

from __future__ import annotations

import math

import torch

from kdaliens.training.models.blocks import _SelfAttentionBlock, alibi_slopes
from kdaliens.training.models.sam import LocalAttention


def test_local_attention_is_banded_causal_attention():
    torch.manual_seed(0)
    w = 8
    local = LocalAttention(16, 2, 0.0, window=w).eval()
    full = _SelfAttentionBlock(16, 2, 0.0).eval()
    full.load_state_dict(local.state_dict(), strict=False)  # same weights
    for L in (1, 7, 8, 9, 29, 64):
        x = torch.randn(2, L, 16)
        mask = torch.ones(2, L, dtype=torch.bool)
        mask[0, : L // 3] = False
        pos = torch.arange(L)
        dist = (pos[:, None] - pos[None, :]).float()
        allowed = mask[:, None, None, :] & (dist >= 0) & (dist < w) | torch.eye(L, dtype=torch.bool)
        bias = -alibi_slopes(2)[:, None, None] * dist.abs()
        with torch.no_grad():
            got = local(x, mask)
            ref = full(x, bias.unsqueeze(0).masked_fill(~allowed, -math.inf))
        assert (got - ref)[mask].abs().max() < 1e-5
