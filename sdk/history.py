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

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError, describe

#: Most past events a sampler takes (it keys every older one: 8 bytes each, so 128 MiB at most).
MAX_PAST_EVENTS = 1 << 24
#: Most events of ``short_len`` and of ``long_len`` (a bundle's manifest allows 10,000 in all).
MAX_HISTORY_LENGTH = 1 << 16

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _whole(value: Any, what: str, hi: int) -> int:
    """``value`` as an int in ``[0, hi]``: an int, a numpy int or an integral float; InputError otherwise."""
    if type(value) is int:
        n = value
    elif isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        n = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        n = int(value)
    else:
        raise InputError(f"{what} must be an int, got {type(value).__name__}: {describe(value)}")
    if not 0 <= n <= hi:
        raise InputError(f"{what} must be in [0, {hi}], got {describe(n)}")
    return n


def _counts(n_past: Any) -> np.ndarray:
    """``n_past`` as a flat int64 array of counts in ``[0, MAX_PAST_EVENTS]``; InputError otherwise."""
    try:
        a = np.asarray(n_past)
    except (TypeError, ValueError, OverflowError) as e:  # ragged lists and the like
        raise InputError(f"n_past must be an array of ints: {e}") from None
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.floor(a)).all():
        pass  # integral floats count, as in sample()
    elif a.dtype.kind not in "iu":
        raise InputError(f"n_past must be an array of ints, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > MAX_PAST_EVENTS):
        raise InputError(f"n_past must be in [0, {MAX_PAST_EVENTS}], got values from {a.min()} to {a.max()}")
    return a.astype(np.int64).reshape(-1)


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

    Raises:
        InputError: a length that is not an int in ``[0, MAX_HISTORY_LENGTH]`` (or both
            zero), or a seed that is not an int of 64 unsigned bits.
    """

    short_len: int = 20
    long_len: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        short = _whole(self.short_len, "history short_len", MAX_HISTORY_LENGTH)
        long = _whole(self.long_len, "history long_len", MAX_HISTORY_LENGTH)
        if short + long < 1:
            raise InputError(f"history lengths must be >= 0 and sum to >= 1, got short_len={short}, long_len={long}")
        seed = _whole(self.seed, "history seed (64 unsigned bits)", _MASK64)
        object.__setattr__(self, "short_len", short)  # plain ints: the spec goes into JSON
        object.__setattr__(self, "long_len", long)
        object.__setattr__(self, "seed", seed)

    @property
    def length(self) -> int:
        return self.short_len + self.long_len

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistorySpec:
        if not isinstance(d, Mapping):
            raise InputError(f"a history spec must be a JSON object, got {type(d).__name__}")
        try:
            return cls(short_len=int(d.get("short_len", 20)), long_len=int(d.get("long_len", 10)),
                       seed=int(d.get("seed", 0)))
        except (TypeError, ValueError, OverflowError) as e:  # InputError is a ValueError
            raise InputError(f"bad history spec {describe(dict(d))}: {e}") from None


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
        """Chosen positions (oldest first) among ``n_past`` time-ordered past events.

        Raises:
            InputError: ``n_past`` is not an int in ``[0, MAX_PAST_EVENTS]``, or ``seed``
                not None nor an int of 64 unsigned bits.
        """
        if type(n_past) is not int or not 0 <= n_past <= MAX_PAST_EVENTS:
            n_past = _whole(n_past, "n_past", MAX_PAST_EVENTS)
        k, m = self.spec.short_len, self.spec.long_len
        seed = self.spec.seed if seed is None else _whole(seed, "seed (64 unsigned bits)", _MASK64)
        n_short = min(n_past, k)
        n_old = n_past - n_short
        if n_old <= m:
            long_pos = np.arange(n_old, dtype=np.int64)
        else:
            long_pos = self._long_positions(seed, n_old, m)
        return np.concatenate([long_pos, np.arange(n_old, n_past, dtype=np.int64)])

    def sample(self, n_past: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the past events (oldest first) and a mask, both of length L.

        Padding slots come first, hold index -1 and mask False. Raises InputError as
        :meth:`positions` does.
        """
        n_past = _whole(n_past, "n_past", MAX_PAST_EVENTS)
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
        length is sampled once. Raises InputError for counts that are not ints in
        ``[0, MAX_PAST_EVENTS]`` (integral floats count) or a bad ``seed``.
        """
        n_past = _counts(n_past)
        if seed is not None:
            seed = _whole(seed, "seed (64 unsigned bits)", _MASK64)
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
