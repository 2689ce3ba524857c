"""DUMN: a denoising, user-aware memory network over the history (``seq_encoder="dumn"``).

After Bian et al., 2021 (Denoising User-aware Memory Network for Recommendation, RecSys
'21). Three parts, each computed for every slot of a causal window in O(L) with
:func:`~kdaliens.training.models.sam.prefix_read` (reads whose scores do not depend on
the reading slot, plus a learned recency rate per query: ``a_j = q . k_j + rate * j``,
so a state depends on its predecessors and their distances only, never on the slot):

* **Feature purification.** Two causal prefix summaries per slot: ``h_imp`` reads the
  implicit feedback (the items interacted with, context ``implicit``), ``h_exp`` reads
  the explicit feedback (the rated items; its read weights come from the rating tokens,
  context ``explicit``, so it can learn to focus on, say, dislikes). The implicit
  representation is projected orthogonally against the explicit one,
  ``h_pure = h_imp - (h_imp . h_exp / |h_exp|^2) h_exp``, removing the part explicit
  feedback explains. Without explicit feedback (implicit data, or no ``explicit``
  context) DUMN says so once (a warning on the ``kdaliens.training`` logger) and uses
  ``h_imp`` as it is; ``purify=False`` (``teacher.purify``) turns the projection off for
  ablations (both summaries are still fed on).
* **User memory network.** ``K`` memory slots (learned queries, each with its own slow
  recency rate) read the causal prefix of the event states: at every slot, K long-term
  interest vectors at fine grain. The slot's own state and its purified interest
  address the K reads (attention over the memory): the long-term interest.
* **Preference-aware gate.** A short-term read (queries with high recency rates: the
  last few events) and the long-term interest are fused by a per-dimension sigmoid gate
  computed from both, the slot's state and its purified interest.

``layers`` such blocks are stacked (pre-norm residual updates with a feed-forward), each
reading the previous block's states; the purification runs once, on the inputs.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SequenceEncoder, register_sequence_encoder
from .sam import recency_read

log = logging.getLogger("kdaliens.training")

_EPS = 1e-6
_warned: set[str] = set()


def warn_once(msg: str) -> None:
    """Log ``msg`` as a warning on the ``kdaliens.training`` logger, once per process."""
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


NO_EXPLICIT = ("DUMN: the data has no explicit feedback (no rating tokens in the history); "
               "feature purification is off, the implicit-feedback summary is used as it is")


def purify(h_imp: torch.Tensor, h_exp: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of ``h_imp`` against ``h_exp`` along the last axis:
    ``h_imp - (h_imp . h_exp / |h_exp|^2) h_exp`` (a zero ``h_exp`` leaves ``h_imp`` as it is)."""
    coef = (h_imp * h_exp).sum(-1, keepdim=True) / (h_exp.square().sum(-1, keepdim=True) + _EPS)
    return h_imp - coef * h_exp


class _CausalRead(nn.Module):
    """``heads`` learned queries, each with a learned recency rate, read every causal prefix.

    ``forward(key_in (B, L, Dk_in), value_in (B, L, Dv_in), mask) -> (B, heads, L, E)``;
    with ``shared_value`` every query reads the same ``E``-wide values, else each head
    reads its own ``E = dim // heads`` slice.
    """

    def __init__(self, key_in: int, value_in: int, dim: int, heads: int, rates: torch.Tensor,
                 shared_value: bool = False):
        super().__init__()
        self.heads, self.shared = heads, shared_value
        self.dk = dim if shared_value else dim // heads
        self.key = nn.Linear(key_in, self.dk * (1 if shared_value else heads))
        self.value = nn.Linear(value_in, dim)
        self.queries = nn.Parameter(torch.randn(heads, self.dk) / math.sqrt(self.dk))
        self.log_rate = nn.Parameter(torch.log(rates))

    def forward(self, key_in: torch.Tensor, value_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, _ = key_in.shape
        H = self.heads
        if self.shared:
            s = torch.einsum("bld,hd->bhl", self.key(key_in), self.queries)
            v = self.value(value_in).unsqueeze(1).expand(B, H, L, -1)
        else:
            s = torch.einsum("blhd,hd->bhl", self.key(key_in).view(B, L, H, self.dk), self.queries)
            v = self.value(value_in).view(B, L, H, -1).transpose(1, 2)
        return recency_read(s / math.sqrt(self.dk), v, mask, self.log_rate)


def _heads_to_dim(r: torch.Tensor) -> torch.Tensor:
    """(B, H, L, Dh) -> (B, L, H * Dh)."""
    B, H, L, Dh = r.shape
    return r.transpose(1, 2).reshape(B, L, H * Dh)


class _MemoryBlock(nn.Module):
    """User memory (K slots, long-term) + short-term read, fused by the preference-aware gate."""

    def __init__(self, dim: int, heads: int, slots: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.memory = _CausalRead(dim, dim, dim, slots,
                                  torch.logspace(math.log10(1e-3), math.log10(0.05), slots), shared_value=True)
        self.short = _CausalRead(dim, dim, dim, heads, torch.logspace(math.log10(0.2), 0.0, heads))
        self.address = nn.Linear(2 * dim, dim)  # the slot's query into its memory: state + purified interest
        self.mem_key = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(4 * dim, dim)
        self.out = nn.Linear(2 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = dropout
        self.scale = 1.0 / math.sqrt(dim)
        self.last_gate: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, interest: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.norm1(h)
        mem = self.memory(z, z, mask)  # (B, K, L, D): K long-term interests at every slot
        q = self.address(torch.cat([z, interest], -1))  # (B, L, D)
        a = torch.softmax(torch.einsum("bld,bkld->blk", q, self.mem_key(mem)) * self.scale, -1)
        long = torch.einsum("blk,bkld->bld", a, mem)
        short = _heads_to_dim(self.short(z, z, mask))
        g = torch.sigmoid(self.gate(torch.cat([long, short, z, interest], -1)))
        if not self.training:
            self.last_gate = g.detach()
        fused = g * long + (1.0 - g) * short
        p = self.dropout if self.training else 0.0
        h = h + F.dropout(self.out(torch.cat([fused, interest], -1)), p, self.training)
        return h + F.dropout(self.ffn(self.norm2(h)), p, self.training)


@register_sequence_encoder("dumn")
class DenoisingUserMemory(SequenceEncoder):
    """DUMN over the history: purification, user memory, preference-aware gate (module docstring).

    Built as ``DenoisingUserMemory(dim, layers, heads, dropout, purify=True)``; called as
    ``encoder(x (B, L, D), mask (B, L), causal, implicit=..., explicit=...)`` with
    ``implicit`` the events' item vectors and ``explicit`` their explicit-feedback (rating
    token) embeddings, both (B, L, D); without ``implicit``, ``x`` stands for it. Always
    causal (``causal=False`` changes nothing: the teacher only asks for causal states).

    In eval mode ``last_summaries`` holds ``(h_imp, h_exp, interest)`` of the last call
    (``h_exp`` None without explicit feedback), ``interest`` being the purified one.
    """

    config_options = ("purify",)  # TeacherConfig fields the teacher passes as keywords

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, purify: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.purify = bool(purify)
        self.imp_norm = nn.LayerNorm(dim)
        self.exp_norm = nn.LayerNorm(dim)
        rates = torch.logspace(math.log10(1e-3), math.log10(0.1), heads)
        self.read_imp = _CausalRead(dim, dim, dim, heads, rates)
        # Explicit summary: the weights come from the feedback tokens, the values are the rated items.
        self.read_exp = _CausalRead(dim, 2 * dim, dim, heads, rates.clone())
        self.interest = nn.Linear(2 * dim, dim)
        self.blocks = nn.ModuleList(_MemoryBlock(dim, heads, max(4, 2 * heads), dropout)
                                    for _ in range(max(1, layers)))
        self.norm = nn.LayerNorm(dim)
        self.last_summaries: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None

    def summaries(self, implicit: torch.Tensor, explicit: torch.Tensor | None,
                  mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-slot causal summaries (B, L, D): ``h_imp``, ``h_exp`` (None without explicit
        feedback) and the interest, ``h_imp`` purified against ``h_exp`` when on."""
        imp = self.imp_norm(implicit)
        h_imp = _heads_to_dim(self.read_imp(imp, imp, mask))
        if explicit is None:
            if self.purify:
                warn_once(NO_EXPLICIT)
            return h_imp, None, h_imp
        ex = self.exp_norm(explicit)
        h_exp = _heads_to_dim(self.read_exp(ex, torch.cat([imp, ex], -1), mask))
        return h_imp, h_exp, purify(h_imp, h_exp) if self.purify else h_imp

    def forward(self, x: torch.Tensor, mask: torch.Tensor, causal: bool, **context: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        implicit = context.get("implicit")
        h_imp, h_exp, pure = self.summaries(x if implicit is None else implicit, context.get("explicit"), mask)
        if not self.training:
            self.last_summaries = (h_imp.detach(), None if h_exp is None else h_exp.detach(), pure.detach())
        interest = self.interest(torch.cat([pure, torch.zeros_like(pure) if h_exp is None else h_exp], -1))
        h = x
        for block in self.blocks:
            h = block(h, interest, mask) * m
        return self.norm(h) * m
