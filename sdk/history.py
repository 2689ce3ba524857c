"""The long/short-term history sampler of KD-ALIENS, shared by training and devices.

The student sees a fixed-length history: the last ``short_len`` events (short-term
interest) plus ``long_len`` events sampled from the older history (long-term interest).
The output is chronological and left-padded, so the newest event is always in the last
slot, with a boolean mask marking real slots.

Sampling is deterministic and portable. Each older position ``j`` (0 = oldest event)
gets a key ``splitmix64(splitmix64(seed) + j)`` (unsigned 64-bit arithmetic), and the
``long_len`` positions with the smallest keys are kept (ties cannot happen in practice;
they break by position). So the same history and seed always give the same sample, a
history that grows keeps most of its old picks, and a Java port needs twenty lines.
Training changes ``seed`` per epoch to see other samples of the long-term history.

Example:
    >>> s = HistorySampler(HistorySpec(short_len=3, long_len=2, seed=0))
    >>> idx, mask = s.sample(10)
    >>> idx.shape, bool(mask.all()), idx[-3:].tolist()
    ((5,), True, [7, 8, 9])
    >>> idx, mask = s.sample(2)
    >>> idx.tolist(), mask.tolist()
    ([-1, -1, -1, 0, 1], [False, False, False, True, True])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorized splitmix64 finalizer over uint64 (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class HistorySpec:
    """History settings.

    Args:
        short_len: the last ``short_len`` events are always kept (k in the paper).
        long_len: this many events are sampled from the older history (m).
        seed: sampling seed; devices use the bundle's, training varies it per epoch.
    """

    short_len: int = 20
    long_len: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.short_len < 0 or self.long_len < 0 or self.short_len + self.long_len < 1:
            raise InputError(f"history lengths must be >= 0 and sum to >= 1, got "
                             f"short_len={self.short_len}, long_len={self.long_len}")
        if not 0 <= int(self.seed) <= _MASK64:
            raise InputError(f"history seed must fit in 64 unsigned bits, got {self.seed}")

    @property
    def length(self) -> int:
        return self.short_len + self.long_len

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistorySpec:
        try:
            return cls(short_len=int(d.get("short_len", 20)), long_len=int(d.get("long_len", 10)),
                       seed=int(d.get("seed", 0)))
        except (TypeError, ValueError) as e:
            raise InputError(f"bad history spec {dict(d)!r}: {e}") from e


class HistorySampler:
    """Picks which past events the model sees. See the module docstring for the rule."""

    def __init__(self, spec: HistorySpec):
        self.spec = spec
        self._memo: dict[tuple[int, int], np.ndarray] = {}  # (seed, n_old) -> long-term picks

    def _smallest_keys(self, seed: int, n_old: int, m: int) -> np.ndarray:
        """The ``m`` older positions with the smallest keys (ties by position), sorted; O(n_old)."""
        if m <= 0:
            return np.zeros(0, dtype=np.int64)
        base = splitmix64(np.array([seed], dtype=np.uint64))[0]
        with np.errstate(over="ignore"):
            keys = splitmix64(base + np.arange(n_old, dtype=np.uint64))
        kth = np.partition(keys, m - 1)[m - 1]
        below = np.flatnonzero(keys < kth)
        at = np.flatnonzero(keys == kth)[: m - len(below)]
        return np.sort(np.concatenate([below, at])).astype(np.int64)

    def _long_positions(self, seed: int, n_old: int, m: int) -> np.ndarray:
        """:meth:`_smallest_keys`, memoized: a device asks for the same history length again and again."""
        key = (seed, n_old)
        got = self._memo.get(key)
        if got is None:
            got = self._smallest_keys(seed, n_old, m)
            got.flags.writeable = False
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[key] = got
        return got

    def positions(self, n_past: int, seed: int | None = None) -> np.ndarray:
        """Chosen positions (oldest first) among ``n_past`` time-ordered past events."""
        k, m = self.spec.short_len, self.spec.long_len
        seed = self.spec.seed if seed is None else int(seed)
        n_short = min(n_past, k)
        n_old = n_past - n_short
        if n_old <= m:
            long_pos = np.arange(n_old, dtype=np.int64)
        else:
            long_pos = self._long_positions(seed, n_old, m)
        return np.concatenate([long_pos, np.arange(n_old, n_past, dtype=np.int64)])

    def sample(self, n_past: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the past events (oldest first) and a mask, both of length L.

        Padding slots come first, hold index -1 and mask False.
        """
        n_past = int(n_past)
        if n_past < 0:
            raise InputError(f"n_past must be >= 0, got {n_past}")
        L = self.spec.length
        pos = self.positions(n_past, seed)
        idx = np.full(L, -1, dtype=np.int64)
        mask = np.zeros(L, dtype=bool)
        if len(pos):
            idx[L - len(pos):] = pos
            mask[L - len(pos):] = True
        return idx, mask

    def sample_batch(self, n_past: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample` for many histories at once: (B, L) indices and mask.

        The choice depends only on the history length and the seed, so each distinct
        length is sampled once.
        """
        n_past = np.asarray(n_past, dtype=np.int64).reshape(-1)
        if (n_past < 0).any():
            raise InputError("n_past must be >= 0")
        L = self.spec.length
        idx = np.full((len(n_past), L), -1, dtype=np.int64)
        mask = np.zeros((len(n_past), L), dtype=bool)
        uniq, inv = np.unique(n_past, return_inverse=True)
        rows_idx = np.empty((len(uniq), L), dtype=np.int64)
        rows_mask = np.empty((len(uniq), L), dtype=bool)
        for u, n in enumerate(uniq):
            rows_idx[u], rows_mask[u] = self.sample(int(n), seed)
        idx[:] = rows_idx[inv]
        mask[:] = rows_mask[inv]
        return idx, mask
