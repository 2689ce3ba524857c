"""SAM: a sparse attentive memory over long behaviour sequences, in O(L) (``seq_encoder="sam"``).

After Lin et al., 2022 (Sparse Attentive Memory network, arXiv 2208.04022): a memory
vector queries the long behaviour sequence, which acts as the knowledge base, and is
updated a fixed number of times (``layers``); each update reads the whole sequence once,
so time and memory grow as O(L), where self-attention grows as O(L²).

How it stays O(L) and causal. The teacher needs a state at every slot of a training
window (slot i may use events 0..i only). A read whose attention score does not depend
on the reading slot can be computed for every prefix at once: with score ``a_j`` for
event j, slot i reads ``sum_{j<=i} exp(a_j) v_j / sum_{j<=i} exp(a_j)``, two cumulative
sums, done here in log space (``logcumsumexp``) so no prefix underflows. So each update
reads with ``heads`` learned memory queries, not with one query per slot; what makes
the read slot-specific is the memory itself:

* keys are built from each event *and the memory at that event* (what the user was
  into then), so one query finds different events as the memory evolves;
* each slot mixes the ``heads`` reads with weights computed from its own memory (a
  low-rank, slot-dependent query);
* each query has a learned recency rate: ``a_j = q . k_j + rate * j``, i.e. a penalty
  of ``rate`` per event of distance (ALiBi's form), from a flat read of the whole
  history to one of the last few events. The state of an event therefore depends on
  its predecessors and their distances only, the same at any slot of a window.

The target item is the other query, as in the paper: the teacher's candidate attention
reads the newest ``attn_len`` SAM states with each candidate's vector, and every one of
those states is a memory read of the whole history before it. (A target cannot query
inside the encoder: at a training slot that would reveal the positive to the negatives
scored against the same state.) A memory summarises interests, not item identities, so
it cannot say that the candidate itself was consumed 800 events ago; with
``teacher.match_history`` the teacher adds that per candidate, from an exact search of
the whole history in O(log L).

Short term: before the memory, one block of exact causal self-attention over the last 32
events (:class:`LocalAttention`, O(L * 32), no L x L matrix), so the newest events are
read as precisely as by the transformer. Memory update: ``m <- LayerNorm(m + W[m, read,
m * read])`` (a GRU-style residual update, vectorized over slots), starting from those
short-term states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SequenceEncoder, register_sequence_encoder

_SCORE_CAP = 20.0  # soft cap on memory-query scores (tanh), before the recency term
_MAX_RATE = 1.0  # recency penalty per event, at most (with the cap: < 80 of score range per 32-event chunk)
_PAD_SCORE = -1.0e4  # padding: no weight, yet finite (an all-padding prefix stays finite)


def _prefix_read_log(scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """:func:`prefix_read` in log space, for short sequences (the chunk level): values are
    split into two positive parts (``softplus(v) - softplus(-v) = v``), so both numerators
    are cumulative log-sum-exps, stable for any score range."""
    norm = torch.logcumsumexp(scores, dim=-1).unsqueeze(-1)
    s = scores.unsqueeze(-1)
    pos = torch.logcumsumexp(s + torch.log(F.softplus(values)), dim=2)
    neg = torch.logcumsumexp(s + torch.log(F.softplus(-values)), dim=2)
    return torch.exp(pos - norm) - torch.exp(neg - norm)


def _nonzero(den: torch.Tensor) -> torch.Tensor:
    """Denominators with exact zeros (slots whose whole prefix is padding: numerator 0 too) as 1."""
    return torch.where(den > 0, den, torch.ones_like(den))


def prefix_read(scores: torch.Tensor, values: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Softmax-weighted mean of ``values`` over every prefix, in O(L).

    Args:
        scores: (B, H, L) one score per event and head (independent of the reading slot);
            within any ``chunk`` consecutive events they must span less than about 80
            (the callers cap them), so no weight underflows in float32.
        values: (B, H, L, E).

    Returns:
        (B, H, L, E): at slot i, ``sum_{j<=i} softmax_{j<=i}(scores) * values_j``.

    Within chunks of ``chunk`` events: cumulative sums of ``exp(score - chunk max)``.
    Across chunks: each chunk's log-sum and mean, combined in log space
    (:func:`_prefix_read_log` on L / chunk entries). Exact up to float rounding.
    """
    B, H, L = scores.shape
    E = values.shape[-1]
    n = -(-L // chunk)
    pad = n * chunk - L
    a = F.pad(scores, (pad, 0), value=_PAD_SCORE).view(B, H, n, chunk)
    v = F.pad(values, (0, 0, pad, 0)).view(B, H, n, chunk, E)
    m = a.amax(-1, keepdim=True).detach()  # any shift gives the same result; this one keeps exp in range
    w = torch.exp(a - m)  # (B, H, n, c)
    num = torch.cumsum(w.unsqueeze(-1) * v, dim=3)  # (B, H, n, c, E)
    den = torch.cumsum(w, dim=3)  # (B, H, n, c), >= 1 at each chunk's end
    if n == 1:
        return (num / _nonzero(den).unsqueeze(-1)).view(B, H, chunk, E)[:, :, pad:]
    m = m.squeeze(-1)
    chunk_log = m + torch.log(den[..., -1])  # (B, H, n): log of each chunk's weight
    chunk_mean = num[..., -1, :] / den[..., -1:]  # (B, H, n, E)
    # What every chunk carries in from the chunks before it (exclusive prefix).
    carry_log = F.pad(torch.logcumsumexp(chunk_log, -1)[..., :-1], (1, 0), value=-math.inf)
    carry_mean = F.pad(_prefix_read_log(chunk_log, chunk_mean)[..., :-1, :], (0, 0, 1, 0))
    z = torch.maximum(carry_log, m).detach()
    alpha = torch.exp(carry_log - z)[..., None]  # (B, H, n, 1)
    beta = torch.exp(m - z)[..., None]
    out = (alpha.unsqueeze(-1) * carry_mean.unsqueeze(3) + beta.unsqueeze(-1) * num) \
        / _nonzero(alpha + beta * den).unsqueeze(-1)
    return out.reshape(B, H, n * chunk, E)[:, :, pad:]


class _MemoryUpdate(nn.Module):
    """One read of the sequence by the memory, and the memory's update."""

    def __init__(self, dim: int, heads: int, dropout: float, rates: torch.Tensor):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.key_event = nn.Linear(dim, dim)
        self.key_memory = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.queries = nn.Parameter(torch.randn(heads, self.dh) / math.sqrt(self.dh))
        # Recency rate per head, learned in log space from a spread of starting rates.
        self.log_rate = nn.Parameter(torch.log(rates))
        self.mix = nn.Linear(dim, heads)
        self.update = nn.Sequential(nn.Linear(3 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H, Dh = self.heads, self.dh
        keys = (self.key_event(x) + self.key_memory(memory)).view(B, L, H, Dh).transpose(1, 2)  # (B, H, L, Dh)
        values = self.value(x).view(B, L, H, Dh).transpose(1, 2)
        s = torch.einsum("bhld,hd->bhl", keys, self.queries) / math.sqrt(Dh)
        reads = recency_read(s, values, mask, self.log_rate)  # (B, H, L, Dh)
        w = torch.softmax(self.mix(memory), dim=-1)  # (B, L, H): the slot's own mix of the queries
        read = (reads.permute(0, 2, 1, 3) * w.unsqueeze(-1)).reshape(B, L, D) * H
        p = self.dropout if self.training else 0.0
        delta = self.update(torch.cat([memory, read, memory * read], dim=-1))
        return self.norm(memory + F.dropout(delta, p, self.training))


def recency_read(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, log_rate: torch.Tensor
                 ) -> torch.Tensor:
    """Every causal prefix read by per-head queries with a recency rate: the scores
    (B, H, L) are soft-capped, get ``rate * position`` (a penalty of ``rate`` per event of
    distance; ``log_rate`` (H,), the rate at most 1), padding gets no weight, then
    :func:`prefix_read` of ``values`` (B, H, L, E)."""
    s = _SCORE_CAP * torch.tanh(scores / _SCORE_CAP)
    pos = torch.arange(scores.shape[-1], device=scores.device, dtype=s.dtype)
    s = s + log_rate.exp().clamp(max=_MAX_RATE)[:, None] * pos
    return prefix_read(s.masked_fill(~mask[:, None, :], _PAD_SCORE), values)


class LocalAttention(nn.Module):
    """Pre-norm causal self-attention over the last ``window`` events only, in O(L * window).

    The sequence is cut into blocks of ``window`` slots; each block's queries attend to
    their own block and the one before it, masked to keys at most ``window - 1`` events
    back (ALiBi distance penalties, one slope per head), so no L x L matrix is formed.
    Then a GELU feed-forward, as in the transformer.
    """

    def __init__(self, dim: int, heads: int, dropout: float, window: int = 32):
        super().__init__()
        from .blocks import alibi_slopes

        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = dropout
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H, w = self.heads, self.window
        n = -(-L // w)
        pad = n * w - L + w  # one leading block of padding: block 0 has a "previous" block too
        q, k, v = F.pad(self.qkv(self.norm1(x)), (0, 0, pad, 0)).view(B, n + 1, w, 3, H, D // H).unbind(3)
        keep = F.pad(mask, (pad, 0)).view(B, n + 1, w)
        keys = torch.cat([k[:, :-1], k[:, 1:]], 2).permute(0, 3, 1, 2, 4)  # (B, H, n, 2w, Dh)
        vals = torch.cat([v[:, :-1], v[:, 1:]], 2).permute(0, 3, 1, 2, 4)
        kmask = torch.cat([keep[:, :-1], keep[:, 1:]], 2)  # (B, n, 2w)
        qs = q[:, 1:].permute(0, 3, 1, 2, 4)  # (B, H, n, w, Dh)
        dist = (torch.arange(w, device=x.device)[:, None] + w - torch.arange(2 * w, device=x.device)[None, :])
        ok = (dist >= 0) & (dist < w)  # (w, 2w): causal, within the window
        bias = -self.slopes.to(x.device)[:, None, None] * dist.clamp(min=0).to(x.dtype)  # (H, w, 2w)
        allowed = ok[None, None] & kmask[:, :, None, :]  # (B, n, w, 2w)
        allowed = allowed | (dist == 0)[None, None]  # a query always sees itself (padding rows stay finite)
        attn = bias[None, :, None] + torch.zeros_like(allowed, dtype=x.dtype)[:, None].masked_fill(
            ~allowed[:, None], -math.inf)  # (B, H, n, w, 2w)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(qs, keys, vals, attn_mask=attn, dropout_p=p)  # (B, H, n, w, Dh)
        a = a.permute(0, 2, 3, 1, 4).reshape(B, n * w, D)[:, n * w - L:]
        x = x + F.dropout(self.out(a), p, self.training)
        return x + F.dropout(self.ffn(self.norm2(x)), p, self.training)


@register_sequence_encoder("sam")
class SparseAttentiveMemory(SequenceEncoder):
    """O(L) memory network over the history: ``layers`` memory updates, ``heads`` memory queries.

    Built as ``SparseAttentiveMemory(dim, layers, heads, dropout)``; called as
    ``encoder(x (B, L, D), mask (B, L), causal, **context) -> (B, L, D)``. Always causal
    (each slot reads its prefix; ``causal=False`` is accepted and changes nothing, since
    the teacher only asks for causal states); ``context`` is not needed.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        # Starting recency rates from 1e-3 (a flat read of ~1,000s of events) to 0.5 per event.
        rates = torch.logspace(math.log10(1e-3), math.log10(0.5), heads)
        self.local = LocalAttention(dim, heads, dropout)
        self.updates = nn.ModuleList(_MemoryUpdate(dim, heads, dropout, rates) for _ in range(max(1, layers)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, causal: bool, **context: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        x = self.local(x, mask) * m  # short term: exact attention over the last 32 events
        memory = x
        for update in self.updates:
            memory = update(x, memory, mask) * m
        return self.norm(memory) * m
