"""Building blocks shared by the teacher and the student, plus the part registries.

A *sequence encoder* turns history event vectors into contextual states; an
*interaction block* learns interactions across field embeddings. Both are registered
by name, so new encoders (SAM, DUMN, SPNN) plug in without touching the teacher:

    @register_sequence_encoder("sam")
    class SparseAttentiveMemory(SequenceEncoder): ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdaliens.sdk.features import FeatureSpec, Field, MultiField

SEQUENCE_ENCODERS: dict[str, type[SequenceEncoder]] = {}
INTERACTION_BLOCKS: dict[str, type[InteractionBlock]] = {}


def register_sequence_encoder(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        SEQUENCE_ENCODERS[name] = cls
        return cls
    return deco


def register_interaction_block(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        INTERACTION_BLOCKS[name] = cls
        return cls
    return deco


class SequenceEncoder(nn.Module):
    """Interface: ``forward(x (B, L, D), mask (B, L) bool, causal, **context) -> (B, L, D)``.

    Built as ``cls(dim, layers, heads, dropout)``. ``context`` may carry what an encoder
    needs beyond the sequence (target-item vectors, explicit-feedback tokens); every
    encoder must also run without it.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor, causal: bool,
                **context: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class InteractionBlock(nn.Module):
    """Interface: ``forward(fields (B, F, D)) -> (B, F, D)``; ``last_attention`` (B, H, F, F)."""

    last_attention: torch.Tensor | None = None

    def forward(self, fields: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class FieldEmbedding(nn.Module):
    """One embedding table per field; multi-valued fields are mean-pooled over non-padding.

    ``forward(arrays)`` takes a dict of id tensors keyed by ``prefix + field.name``, of shape
    ``S`` (or ``S + (max_len,)`` for multi fields), and returns ``S + (F, D)``.

    ``bags=True`` pools multi fields with ``embedding_bag`` (no (…, W, D) intermediate;
    the server-side teacher uses it). The device student keeps the plain lookup, which
    every export target lowers.
    """

    def __init__(self, fields: Sequence[Field], dim: int, prefix: str = "", bags: bool = False):
        super().__init__()
        self.bags = bags
        self.names = [f.name for f in fields]
        self.multi = [isinstance(f, MultiField) for f in fields]
        self.prefix = prefix
        self.tables = nn.ModuleList(nn.Embedding(f.cardinality, dim, padding_idx=0) for f in fields)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.05)
            with torch.no_grad():
                t.weight[0].zero_()

    def embed_field(self, i: int, ids: torch.Tensor) -> torch.Tensor:
        if self.multi[i] and self.bags:
            # Mean over real tokens (padding_idx is left out of the mean); all-padding rows are zero.
            w = self.tables[i].weight
            flat = F.embedding_bag(ids.reshape(-1, ids.shape[-1]), w, mode="mean", padding_idx=0)
            return flat.view(ids.shape[:-1] + (w.shape[1],))
        e = self.tables[i](ids)
        if self.multi[i]:
            # (..., W, D) -> (..., D): mean over real tokens; all-padding rows stay zero.
            count = (ids > 0).sum(-1, keepdim=True).clamp(min=1).to(e.dtype)
            e = e.sum(-2) / count
        return e

    def forward(self, arrays: dict[str, torch.Tensor], prefix: str | None = None) -> torch.Tensor:
        p = self.prefix if prefix is None else prefix
        return torch.stack([self.embed_field(i, arrays[p + n]) for i, n in enumerate(self.names)], dim=-2)


class MLP(nn.Sequential):
    """Linear-ReLU(-Dropout) stack ending in a Linear to ``out_dim``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0):
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)


def history_fields_of(spec: FeatureSpec) -> list[Field]:
    return [spec.item_field(n) for n in spec.history_item_fields or ()]
