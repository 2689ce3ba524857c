"""``Ranker``: rerank the items cached on a device with the user's latest behaviour.

Example:
    >>> from kdaliens.sdk import Ranker, ItemCache, BehaviorLog          # doctest: +SKIP
    >>> cache, log = ItemCache("device.db"), BehaviorLog("device.db")    # doctest: +SKIP
    >>> ranker = Ranker.load("bundles/executorch")                       # doctest: +SKIP
    >>> ranker.rerank("u42", ["50", "172", 181], cache=cache, log=log, k=2)   # doctest: +SKIP
    [('172', 1.93), (181, 0.41)]

``rerank`` encodes the user's history from the behaviour log (item attributes from the
cache) with the bundle's FeatureSpec and sampler settings, encodes the candidates, runs
the model in chunks of at most the bundle's candidate limit, and returns
``(item_id, score)`` pairs best first, with the caller's own id objects. Bad input raises
:class:`InputError`; a failing model call never crashes the host app: the candidates
come back in the order given, with ``result.meta["fallback"]`` set and the error logged.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from .backends import backend_for_target, get_backend
from .backends.base import Backend
from .bundle import Bundle
from .errors import InputError, KdaliensError, as_list, describe
from .features import N_RESERVED, OOV_ID, PAD_ID, FeatureEncoder, normalize_token
from .fields import as_seconds
from .names import BackendName
from .readers import EventReader, ItemReader, SampledColumnReader, SampledEventReader, VersionedItemReader
from .signature import Role
from .signing import public_keys

logger = logging.getLogger("kdaliens.sdk")

_UNKNOWN_HINTS = {
    "candidates": "item ids it never saw: was it trained on this catalogue?",
    "events": "event kinds outside the manifest's feature_spec.event_vocab; log those kinds, or none",
    "user_features": "keys that are not its user fields, or values it never saw: see feature_spec.user_fields",
}

BACKEND_NAMES = ("auto", *BackendName.choices())
MAX_ENCODED_ITEMS = 1_000_000  # encoded item rows kept between calls (about 100 MB at most)


class RankedList(list):
    """A list of ``(item_id, score)`` pairs, best first, with ``meta`` about the call.

    ``meta`` keys: ``backend``, ``runtime`` (the package and version that ran the model,
    e.g. ``"ai-edge-litert 2.3.0"``), ``fallback`` (bool), ``error`` (str or None),
    ``n_candidates``, ``n_history``, ``chunks``, ``encode_us``, ``model_us``, ``total_us``;
    ``unknown``: the shares of the ``candidates`` (distinct ids), the history's ``events``
    and the ``user_features`` given that the bundle does not know (None where there are
    none; over half of one logs a warning, once per Ranker); and ``warning`` (one line)
    when the bundle's origin was not verified (an unsigned bundle, or one loaded without
    ``trusted_keys``).
    """

    meta: dict[str, Any]

    def __init__(self, items: Iterable[tuple[Any, float]] = (), meta: dict[str, Any] | None = None):
        super().__init__(items)
        self.meta = meta or {}


_KINDS: dict[tuple[type, type], bool] = {}
# The methods of each reader protocol: an object is one when it has them all, callable.
_METHODS: dict[type, tuple[str, ...]] = {
    ItemReader: ("get_many",),
    VersionedItemReader: ("get_many", "generation", "get_many_timed", "expired_before"),
    EventReader: ("events",),
    SampledEventReader: ("events", "sampled_events"),
    SampledColumnReader: ("sampled_columns",),
}


def _has_methods(obj: Any, names: tuple[str, ...]) -> bool:
    try:
        return all(callable(getattr(obj, name, None)) for name in names)
    except Exception:  # a __getattr__ of the app's that raises: not a reader
        return False


def _is(obj: Any, protocol: type) -> bool:
    """Whether ``obj`` has the protocol's methods (isinstance of a runtime-checkable
    Protocol, which also wants them callable), memoized per class: rerank asks on every call."""
    key = (type(obj), protocol)
    known = _KINDS.get(key)
    if known is None:
        known = _KINDS[key] = _has_methods(obj, _METHODS[protocol])
    return known


def _is_versioned(cache: Any) -> bool:
    return _is(cache, VersionedItemReader)


class _EncodedItems:
    """Each cached item's encoded ids, kept between calls so rerank encodes only new items.

    Valid for one :class:`~kdaliens.sdk.readers.VersionedItemReader` (an
    :class:`~kdaliens.sdk.stores.ItemCache`) at one ``generation``. When the generation
    moves, a cache with ``changes_since`` (ItemCache) names the items upserted since, and
    only those are encoded again; a removal (TTL, size bound), or a cache without it,
    starts over. Items that expire by TTL (without a write) are caught per row through
    their upsert time. Rows are
    ``encode_items`` output, which encodes each item on its own, so gathering memoized
    rows gives the same arrays as encoding the batch.
    """

    def __init__(self, encoder: FeatureEncoder, id_field: str, dtype: Any = np.int64):
        self.encoder = encoder
        self.id_field = id_field
        self.dtype = np.dtype(dtype)  # the model's id dtype: rows go into its inputs without a cast
        self.cache_ref: Any = None
        self.generation: int | None = None
        self.state: Any = None  # the cache's changes_since state the rows reflect
        self.epoch = 0  # moves whenever kept rows are dropped: what was derived from them is stale
        self._reset()

    def _reset(self) -> None:
        self.epoch += 1
        self.index: dict[str, int] = {}
        # The caller's id objects (str and int) -> row, so a seen id skips canonicalization;
        # int_aliases: some are ints, so a hit must be type-checked (True == 1, but is not an id).
        self.aliases: dict[Any, int] = {}
        self.int_aliases = False
        self.arrays: dict[str, np.ndarray] = {}
        self.updated = np.empty(0)  # upsert time of each row (+inf: absent from the cache)
        self.valid = np.zeros(0, dtype=bool)  # False: upserted again since it was encoded
        self.n = 0

    def _store(self, keys: list[str], rows: dict[str, np.ndarray], updated: np.ndarray) -> np.ndarray:
        """Write encoded rows (new keys appended, known keys overwritten); their row numbers."""
        pos = np.empty(len(keys), dtype=np.int64)
        for j, k in enumerate(keys):
            i = self.index.get(k)
            if i is None:
                i = self.index[k] = self.n
                self.n += 1
            pos[j] = i
        if self.n > len(self.updated):  # grow by doubling
            cap = max(self.n, 2 * len(self.updated), 256)
            self.updated = np.concatenate([self.updated, np.full(cap - len(self.updated), -np.inf)])
            self.valid = np.concatenate([self.valid, np.zeros(cap - len(self.valid), dtype=bool)])
            for name, v in rows.items():
                old = self.arrays.get(name)
                grown = np.zeros((cap,) + v.shape[1:], dtype=self.dtype)
                if old is not None:
                    grown[: len(old)] = old
                self.arrays[name] = grown
        for name, v in rows.items():
            self.arrays[name][pos] = v
        self.updated[pos] = updated
        self.valid[pos] = True
        return pos

    def sync(self, cache: Any) -> None:
        """Bring the kept rows up to date with ``cache``: forget the items changed since, or start over."""
        gen = cache.generation()
        same = self.cache_ref is not None and self.cache_ref() is cache and self.n <= MAX_ENCODED_ITEMS
        if same and gen == self.generation:
            return
        changed = None
        if hasattr(cache, "changes_since"):
            self.state, changed = cache.changes_since(self.state if same else None)
        if same and changed is not None:
            rows = [i for i in map(self.index.get, changed) if i is not None]
            if rows:
                self.valid[rows] = False
                self.epoch += 1
        else:
            self._reset()
        # The generation read first: a write that lands in between only makes the next call look again.
        self.cache_ref, self.generation = weakref.ref(cache), gen

    def encode(self, keys: list[str], cache: Any) -> dict[str, np.ndarray]:
        """Encoded fields of ``keys`` (canonical ids); call :meth:`sync` first."""
        if not keys:
            return {k: v.astype(self.dtype) for k, v in self.encoder.encode_items([]).items()}
        pos = self.rows(keys, cache)
        return {name: v[pos] for name, v in self.arrays.items()}

    def width(self, field: str) -> tuple[int, ...]:
        """The trailing shape of a field's rows: ``(max_len,)`` for a multi field, else ``()``."""
        f = self.encoder.spec.item_field(field)
        return (f.width,) if f.kind == "multi" else ()

    def current(self, pos: np.ndarray, cache: Any) -> bool:
        """Rows ``pos`` are all encoded from the cache's current, unexpired items."""
        if not self.valid[pos].all():
            return False
        cutoff = cache.expired_before()
        return cutoff == -math.inf or bool(self.updated[pos].min() > cutoff)

    def rows(self, keys: list[str], cache: Any) -> np.ndarray:
        """Row numbers of ``keys`` (canonical ids) in :attr:`arrays`, encoding the missing
        and the stale ones; call :meth:`sync` first. ``keys`` must not be empty."""
        index = self.index
        pos = np.fromiter(map(index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        if pos.min() >= 0 and self.current(pos, cache):
            return pos  # the usual case: every row kept and current
        cutoff = cache.expired_before()
        known = pos >= 0
        known[known] = self.valid[pos[known]]
        if known.any():  # expired since they were encoded
            if cutoff > -np.inf:
                known[known] = self.updated[pos[known]] > cutoff
        miss = np.flatnonzero(~known)
        if len(miss):
            mkeys = [keys[j] for j in miss]
            found = cache.get_many_timed(mkeys)
            rows = self.encoder.encode_items([{**found[k][0], self.id_field: k} if k in found
                                              else {self.id_field: k} for k in mkeys])
            # An absent item stays absent until the next upsert (a new generation).
            updated = np.array([found[k][1] if k in found else np.inf for k in mkeys], dtype=np.float64)
            pos[miss] = self._store(mkeys, rows, updated)
        return pos

    def oldest(self, pos: np.ndarray) -> float:
        """The earliest upsert time among rows ``pos`` (+inf for none): they expire together after it."""
        return float(self.updated[pos].min()) if len(pos) else math.inf


class _NoItems:
    """The item reader of a rerank without a cache: every item is known by its id alone."""

    def generation(self) -> int:
        return 0

    def get_many(self, item_ids: Iterable[Any]) -> dict[str, Any]:
        return {}

    def get_many_timed(self, item_ids: Iterable[Any]) -> dict[str, Any]:
        return {}

    def expired_before(self) -> float:
        return -math.inf


_NO_ITEMS = _NoItems()
_NO_EVENTS: tuple[tuple[str, ...], tuple[str, ...], np.ndarray] = ((), (), np.zeros(0))
_MEMO_TYPES = frozenset((str, int))  # candidate id types memoized by their row (_EncodedItems.aliases)
MEMO_SIZE = 65_536  # candidate ids and user feature sets kept canonicalized / encoded between calls
HISTORY_USERS = 256  # users whose encoded history a Ranker keeps


def _event_share(history: Mapping[str, np.ndarray]) -> float | None:
    """Share of a history's real slots whose event kind is out of vocabulary (None: no events)."""
    real = history["hist_mask"]
    n = int(np.count_nonzero(real))
    return int(np.count_nonzero(history["hist_event"][real] == OOV_ID)) / n if n else None


class _History:
    """One user's encoded history inputs, kept while the kept events and their items' encodings hold."""

    __slots__ = ("items", "events", "epoch", "oldest", "inputs", "pad", "n", "gaps", "unknown")

    def __init__(self, items: tuple[str, ...], events: tuple[str, ...], epoch: int, oldest: float,
                 inputs: dict[str, np.ndarray], pad: np.ndarray, unknown: float | None = None):
        self.items, self.events, self.epoch, self.oldest = items, events, epoch, oldest
        self.inputs = inputs  # model inputs (1, L, ...) in the model's dtypes, but the time gaps
        self.pad = pad  # (L,) bool: empty slots
        self.n = int((~pad).sum())
        self.unknown = unknown  # share of the kept events of a kind the bundle does not know
        # (event times, valid from, valid until, time-gap input): one tuple, so threads swap it whole
        self.gaps: tuple[np.ndarray, float, float, np.ndarray] | None = None

    def time_gaps(self, ts: np.ndarray, now: float, encoder: FeatureEncoder, upper: np.ndarray,
                  dtype: np.dtype) -> np.ndarray:
        """The time-gap input (1, L) at ``now``, for kept events at times ``ts``.

        Computed by the encoder, then kept while ``now`` stays in the window where no
        event's gap reaches the upper boundary of its bucket (``upper``: the boundaries,
        then +inf), less a margin for float rounding: one rerank a minute (the
        smallest default bucket) or more often mostly reuses it.
        """
        got = self.gaps
        if got is not None and got[0] is ts and got[1] <= now < got[2]:
            return got[3]
        L = len(self.pad)
        full = np.zeros(L)
        if len(ts):
            full[L - len(ts):] = ts
        gap = encoder.encode_time_gaps(now, full)
        gap[self.pad] = PAD_ID
        real = ~self.pad
        # The margin covers the rounding of now - ts: 1 ms, more for clocks in ms or us since the epoch.
        margin = 1e-3 + 1e-12 * abs(now)
        until = float(np.min(full[real] + upper[gap[real] - N_RESERVED])) - margin if self.n else math.inf
        out = gap.astype(dtype)[None]
        self.gaps = (ts, now, until, out)
        return out


class Ranker:
    """A bundle's model plus the encoder that feeds it. Build it with :meth:`load`.

    Thread safety: one Ranker may serve any number of threads, with or without item
    upserts and logged events from other threads or processes. The kept encodings are
    shared under one lock (held for the tens of microseconds of encoding, not for the
    model call); candidate inputs go into per-thread buffers; the backend serializes or
    parallelizes its model calls (see :class:`~kdaliens.sdk.backends.base.Backend`).
    """

    def __init__(self, bundle: Bundle, backend: Backend):
        self.bundle = bundle
        self.backend = backend
        self.encoder = FeatureEncoder(bundle.spec)
        self.spec = bundle.spec
        self.max_candidates = backend.max_candidates
        self.signature = bundle.signature
        self.input_names = self.signature.names
        self._id_field = self.spec.item_id_field
        dtypes = backend.input_dtypes
        by_role = {r: [(i.name, i.key, dtypes[i.name]) for i in self.signature.inputs if i.role == r] for r in Role}
        self._user_inputs, self._cand_inputs = by_role[Role.USER], by_role[Role.CANDIDATE]
        self._hist_inputs = [x for x in by_role[Role.HISTORY] if x[1] != "hist_time_gap"]
        gap = [x for x in by_role[Role.HISTORY] if x[1] == "hist_time_gap"]
        self._gap_input = gap[0] if gap else None
        self._gap_upper = np.array([*self.spec.time_gap_boundaries, math.inf])  # each bucket's upper end
        self._items = _EncodedItems(self.encoder, self._id_field, self._cand_inputs[0][2])
        self._items_lock = threading.Lock()  # the kept item and history encodings are shared by every thread
        self._histories: OrderedDict[str, _History] = OrderedDict()
        self._users: dict[Any, tuple[dict[str, np.ndarray], float | None]] = {}  # features -> inputs, unknown share
        self._local = threading.local()  # per-thread candidate input buffers
        # meta["unknown"] counts the candidates' item-id input (and the history's kinds, the user's features).
        self._cand_id_input = next((name for name, key, _ in self._cand_inputs if key == self._id_field), None)
        self._user_field_names = {f.name for f in self.spec.user_fields}
        self._warned: set[str] = set()  # mismatches already logged by this Ranker

    @classmethod
    def load(cls, bundle: str | Path | Bundle, backend: str = "auto", threads: int = 1,
             trusted_keys: Iterable[str | os.PathLike | bytes] | None = None) -> Ranker:
        """Verify a bundle and load its model.

        Args:
            bundle: a bundle folder (or a loaded :class:`Bundle`).
            trusted_keys: ``signing.pub`` paths or key bytes; the bundle must be signed by
                one of them (see :meth:`Bundle.load`). Without them an unsigned bundle
                loads, and every ``rerank`` says so in ``meta["warning"]``.
            backend: ``"auto"``: the runtime for the bundle's format, and among those
                installed the cheapest (LiteRT: ai-edge-litert, then tflite-runtime on
                numpy < 2); ``rerank``'s ``meta["runtime"]`` names it. Or ``"executorch"``,
                ``"onnxruntime"`` or ``"litert"``.
            threads: intra-op threads of the runtime.

        Raises:
            BundleError: the bundle is missing, corrupt, tampered with or unsupported, or
                not signed by one of ``trusted_keys``.
            BackendUnavailable: the runtime is not installed (the message names the extra).
            InputError: an unknown backend, or one that cannot run this bundle's target;
                unusable ``trusted_keys``; a loaded :class:`Bundle` whose signature was not
                checked against ``trusted_keys`` (pass its path instead).
        """
        if backend != "auto":
            try:
                backend = BackendName.parse(backend, "backend")
            except InputError:
                raise InputError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}") from None
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise InputError(f"threads must be a positive int, got {threads!r}")
        if isinstance(bundle, Bundle):
            b = bundle
            if trusted_keys is not None and b.signed_by not in public_keys(trusted_keys):
                raise InputError(f"bundle {b.path} was loaded without checking its signature against these "
                                 "trusted_keys; pass its path, or Bundle.load(path, trusted_keys=...)")
        else:
            b = Bundle.load(bundle, trusted_keys=trusted_keys)
        own = backend_for_target(b.target)
        name = own if backend == "auto" else backend
        if name != own:
            raise InputError(f"bundle {b.path} targets {b.target!r}, which the {own!r} backend runs, not {name!r}")
        return cls(b, get_backend(name)(b.model_path, b.manifest, threads=threads, model_bytes=b.model_bytes))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _candidate_list(candidates: Any) -> list[Any]:
        """The caller's ids as a list (the container checked, not the ids)."""
        return as_list(candidates, "candidates must be a list of item ids")

    @staticmethod
    def _keys(items: list[Any]) -> list[str]:
        """The canonical forms of the caller's ids, each one validated."""
        keys = []
        for i, c in enumerate(items):
            if isinstance(c, float) and not math.isfinite(c):
                raise InputError(f"candidates[{i}] is not a usable id: {c!r}")
            if not isinstance(c, (str, int, float, np.integer, np.floating, bytes)) or isinstance(c, bool):
                raise InputError(f"candidates[{i}] must be a string or int id, got {type(c).__name__}")
            try:
                key = normalize_token(c)
            except InputError as e:  # an int of too many digits, a lone surrogate
                raise InputError(f"candidates[{i}]: {e}") from None
            if key is None:
                raise InputError(f"candidates[{i}] is an empty id")
            keys.append(key)
        return keys

    @staticmethod
    def _dedupe(keys: list[Any]) -> tuple[list[Any], np.ndarray | None]:
        """Each key once, at its first place: (unique keys, their first positions, or None with no repeats)."""
        if len(set(keys)) == len(keys):
            return keys, None
        first: dict[Any, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        return list(first), np.fromiter(first.values(), dtype=np.int64, count=len(first))

    @staticmethod
    def _check_user(user_id: Any) -> None:
        """InputError unless ``user_id`` is an id: a non-empty string (valid Unicode) or a number."""
        if type(user_id) is str and user_id.isascii():  # the common case: no surrogate possible
            if user_id.strip():
                return
        else:
            try:
                if normalize_token(user_id) is not None:
                    return
            except InputError as e:
                raise InputError(f"user_id must be a non-empty id: {e}") from None
        raise InputError(f"user_id must be a non-empty id, got {describe(user_id)}")

    @staticmethod
    def _check_readers(cache: Any, log: Any) -> None:
        """InputError unless ``cache`` and ``log`` are None or readers the plain path can use."""
        if cache is not None and not _is(cache, ItemReader):
            raise InputError(f"cache must be an ItemCache, or an object with get_many(item_ids) (an ItemReader), "
                             f"got {type(cache).__name__}")
        if log is not None and not (_is(log, EventReader) or _is(log, SampledColumnReader)):
            raise InputError(f"log must be a BehaviorLog, or an object with events(user_id, before) (an EventReader) "
                             f"or sampled_columns(user_id, before, positions), got {type(log).__name__}")

    @staticmethod
    def _k(k: Any, n: int) -> int:
        if k is None:
            return n
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
            raise InputError(f"k must be None or an int >= 0, got {describe(k)}")
        return min(int(k), n)

    def encode_request(self, history: dict[str, np.ndarray], user: dict[str, np.ndarray],
                       cands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model inputs (1, ...) from encoder outputs; candidates are sliced later."""
        return self.signature.request(history, user, cands)

    def _encode_user(self, features: Mapping[str, Any] | None) -> tuple[dict[str, np.ndarray], float | None]:
        """The user inputs in the model's dtypes and the share of the features the bundle does not
        know, memoized per feature set (shared: never write to them)."""
        try:
            key = tuple((k, type(v), v) for k, v in features.items()) if features else ()
            hash(key)
        except TypeError:  # a list-valued feature: encode every time
            key = None
        got = self._users.get(key) if key is not None else None
        if got is None:
            enc = self.encoder.encode_user(features)
            inputs = {name: np.ascontiguousarray(enc[field], dtype=dtype) for name, field, dtype in self._user_inputs}
            got = (inputs, self._user_share(features, enc))
            if key is not None:
                if len(self._users) >= MEMO_SIZE:
                    self._users.clear()
                self._users[key] = got
        return got

    def _user_share(self, features: Mapping[str, Any] | None, encoded: Mapping[str, np.ndarray]) -> float | None:
        """Share of the given user features that are no field of the bundle or encode out of vocabulary."""
        if not features:
            return None
        unknown = 0
        for key in features:
            got = encoded.get(key) if key in self._user_field_names else None
            if got is None or not (np.asarray(got) >= N_RESERVED).any():
                unknown += 1
        return unknown / len(features)

    def _history(self, user_id: Any, columns: tuple[tuple[str, ...], tuple[str, ...], np.ndarray], cache: Any,
                 now: float) -> _History:
        """The user's kept history encoding, rebuilt when its events or their items changed.

        Call with ``_items_lock`` held, after ``self._items.sync(cache)``.
        """
        ids, events, ts = columns
        user = normalize_token(user_id) or ""
        items = self._items
        h = self._histories.get(user)
        if (h is None or h.epoch != items.epoch or h.items != ids or h.events != events
                or h.oldest <= cache.expired_before()):
            if ids:
                pos = items.rows([normalize_token(i) or "" for i in ids], cache)
                arrays = {name: v[pos] for name, v in items.arrays.items()}
                oldest = items.oldest(pos)
            else:
                arrays, oldest = items.encode([], cache), math.inf
            enc = self.encoder.encode_kept(arrays, events, ts, now)
            inputs = {name: np.ascontiguousarray(enc[key][None], dtype=dtype) for name, key, dtype in self._hist_inputs}
            h = _History(tuple(ids), tuple(events), items.epoch, oldest, inputs, ~enc["hist_mask"],
                         _event_share(enc))
            self._histories[user] = h
            if len(self._histories) > HISTORY_USERS:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(user)
        return h

    def _candidate_rows(self, items: list[Any], cache: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows in ``self._items`` of the distinct candidates, and the first place of each
        (None: no repeats). Call with ``_items_lock`` held, after ``self._items.sync(cache)``.

        Ids seen before cost one dict lookup each (``_EncodedItems.aliases``; a hit by
        equality is trusted when only strings were memoized, since only a str equals one).
        Others are validated and canonicalized, and their rows encoded when missing or stale.
        """
        enc = self._items
        memo = enc.aliases
        try:
            rows = [memo[c] for c in items]
        except (KeyError, TypeError):  # an id not seen yet, or an unhashable one (rejected below)
            rows = None
        if rows is not None and (not enc.int_aliases or set(map(type, items)) <= _MEMO_TYPES):
            uniq, firsts = self._dedupe(rows)  # one row per canonical id
            pos = np.fromiter(uniq, dtype=np.int64, count=len(uniq))
            if enc.current(pos, cache):
                return pos, firsts
        every = self._keys(items)
        keys, firsts = self._dedupe(every)
        pos = enc.rows(keys, cache)
        if len(memo) + len(items) > MEMO_SIZE:
            memo.clear()
        index = enc.index
        for c, key in zip(items, every):  # every form of an id ("5" and 5) maps to its row
            if type(c) is str:
                memo[c] = index[key]
            elif type(c) is int:
                enc.int_aliases = True  # before the id goes in: another thread may look it up at once
                memo[c] = index[key]
        return pos, firsts

    def _fast_inputs(self, user_id: Any, items: list[Any], cache: Any, log: Any,
                     user_features: Mapping[str, Any] | None, now: float
                     ) -> tuple[dict[str, np.ndarray], int, int, np.ndarray | None]:
        """Model inputs from kept encodings: a log that reads only the kept events, a
        versioned item cache (or none). The cost does not grow with the log, and per
        candidate it is a dict lookup and a row gather.

        Returns the inputs, the history length, the number of distinct candidates and their
        first places in ``items`` (None: no repeats).
        """
        columns = _NO_EVENTS if log is None else log.sampled_columns(
            user_id, before=now, positions=self.encoder.sampler.positions)
        cache = _NO_ITEMS if cache is None else cache
        inputs: dict[str, np.ndarray] = {}
        with self._items_lock:
            enc = self._items
            enc.sync(cache)
            pos, firsts = self._candidate_rows(items, cache)
            n = len(pos)
            bufs = getattr(self._local, "bufs", None)
            if bufs is None or bufs[0] < n:
                cap = max(n, self.max_candidates)
                bufs = self._local.bufs = (cap, {name: np.zeros((1, cap) + enc.width(field), dtype=dtype)
                                                 for name, field, dtype in self._cand_inputs})
            h = self._history(user_id, columns, cache, now)
            for name, field, _ in self._cand_inputs:
                out = bufs[1][name][:, :n]
                np.take(enc.arrays[field], pos, axis=0, out=out[0], mode="clip")
                inputs[name] = out
        inputs.update(h.inputs)
        user, user_share = self._encode_user(user_features)
        inputs.update(user)
        if self._gap_input is not None:
            name, _, dtype = self._gap_input
            inputs[name] = h.time_gaps(columns[2], now, self.encoder, self._gap_upper, dtype)
        return inputs, h.n, n, firsts, (h.unknown, user_share)

    def _encode_candidates(self, keys: list[str], cache) -> dict[str, np.ndarray]:
        """Encoded candidate fields; a :class:`VersionedItemReader` gets its encoded rows kept between calls."""
        if _is_versioned(cache):
            with self._items_lock:
                self._items.sync(cache)
                return self._items.encode(keys, cache)
        attrs = cache.get_many(keys) if cache is not None else {}
        return self.encoder.encode_items([{**attrs.get(u, {}), self._id_field: u} for u in keys])

    def _plain_inputs(self, user_id: Any, keys: list[str], cache: Any, log: Any,
                      user_features: Mapping[str, Any] | None, now: float) -> tuple[dict[str, np.ndarray], int]:
        """Model inputs through the encoder for any reader: the log's events are read and sampled here."""
        if log is None:
            events = []
        elif _is(log, SampledEventReader):  # only the events the sampler keeps, whatever the log's length
            events = log.sampled_events(user_id, before=now, positions=self.encoder.sampler.positions)
        elif _is(log, EventReader):
            events = log.events(user_id, before=now)
        else:  # a SampledColumnReader alone: its columns are the kept events
            ids, kinds, ts = log.sampled_columns(user_id, before=now, positions=self.encoder.sampler.positions)
            events = [{self._id_field: i, "event": e, "ts": t} for i, e, t in zip(ids, kinds, np.asarray(ts).tolist())]
        # Attributes only for the candidates and the history events the sampler keeps;
        # an ItemCache's items are encoded once and kept (see _EncodedItems).
        if _is_versioned(cache):
            with self._items_lock:
                self._items.sync(cache)  # one generation check per call
                hist = self.encoder.encode_history(events, now=now, encoded_items=lambda ids: self._items.encode(
                    [normalize_token(i) for i in ids], cache))
                cands = self._items.encode(keys, cache)
        else:
            lookup = (lambda ids: cache.get_many(ids)) if cache is not None else None
            hist = self.encoder.encode_history(events, now=now, item_attributes=lookup)
            cands = self._encode_candidates(keys, cache)
        user = self.encoder.encode_user(user_features)
        shares = (_event_share(hist), self._user_share(user_features, user))
        return self.encode_request(hist, user, cands), int(hist["hist_mask"].sum()), shares

    def _score(self, inputs: dict[str, np.ndarray], n: int, meta: dict[str, Any]) -> np.ndarray:
        """The model's scores of ``n`` candidates, in chunks of at most ``max_candidates``."""
        scores = np.empty(n, dtype=np.float64)
        m = self.max_candidates
        for s in range(0, n, m):  # one chunk (the usual case) runs on the inputs as they are
            out = self.backend.run(inputs if n <= m else self.signature.slice_candidates(inputs, s, s + m))
            got = np.asarray(out["score"], dtype=np.float64).reshape(-1)
            if len(got) != min(m, n - s):
                raise ValueError(f"the model returned {len(got)} scores for {min(m, n - s)} candidates")
            scores[s:s + m] = got
            meta["chunks"] += 1
        if not np.isfinite(scores).all():
            raise FloatingPointError("the model returned non-finite scores")
        return scores

    def _unknown_shares(self, inputs: dict[str, np.ndarray], n: int, events: float | None,
                        user_features: float | None) -> dict[str, float | None]:
        """Shares unknown to the bundle: candidates whose id it never saw, history events of a
        kind it does not know, user features it has no field or value for (None: nothing to
        count; the last two come memoized with the history and the user's inputs). Logs a
        warning, once per Ranker and kind, when most of one are unknown: data that does not
        match the bundle (another catalogue, misspelled keys) ranks silently badly."""
        cands = None
        if self._cand_id_input is not None and n:
            cands = int(np.count_nonzero(inputs[self._cand_id_input][..., :n] == OOV_ID)) / n
        out = {"candidates": cands, "events": events, "user_features": user_features}
        if (cands or 0) > 0.5 or (events or 0) > 0.5 or (user_features or 0) > 0.5:
            for what, share in out.items():
                if share is not None and share > 0.5 and what not in self._warned:
                    self._warned.add(what)
                    logger.warning("kdaliens: %.0f%% of the %s of a request are unknown to the bundle %s (%s); "
                                   "meta['unknown'] has the shares of every request", 100 * share,
                                   what.replace("_", " "), self.bundle.path, _UNKNOWN_HINTS[what])
        return out

    # ------------------------------------------------------------------ rerank
    def rerank(self, user_id: Any, candidates: Iterable[Any], cache=None, log=None,
               user_features: Mapping[str, Any] | None = None, k: int | None = None,
               now: float | None = None) -> RankedList:
        """Score ``candidates`` for ``user_id`` and return them best first.

        Args:
            user_id: the user whose events in ``log`` make the history.
            candidates: item ids (strings or ints); duplicates keep their first place;
                ids the model never saw are scored from their cached attributes.
            cache: an :class:`~kdaliens.sdk.stores.ItemCache` with item attributes, or
                any :class:`~kdaliens.sdk.readers.ItemReader` (optional: without it
                items are scored by id alone).
            log: a :class:`~kdaliens.sdk.stores.BehaviorLog`, or any
                :class:`~kdaliens.sdk.readers.EventReader` or ``SampledColumnReader``
                (optional: without it, or for a new user, the history is empty: cold start).
            user_features: the user's attributes (``age``, ``gender``, ...), optional.
            k: return only the best ``k`` (None: all).
            now: the request time in seconds (default: the current time).

        Returns:
            A :class:`RankedList` of ``(item_id, score)``.

        Raises:
            InputError: a bad argument: ids that are not strings or numbers (or are empty,
                hold a lone surrogate, or have more digits than Python prints), a ``now``
                that is not a finite number, a ``k`` that is not an int >= 0, a ``cache``
                or ``log`` that is not a reader, user features that cannot be encoded; or
                a bad value read from the stores.
            StoreError: the cache or the log cannot be read (locked, corrupt, closed).
        """
        t0 = time.perf_counter()
        items = self._candidate_list(candidates)
        k = self._k(k, len(items))
        if user_features is not None and type(user_features) is not dict and not isinstance(user_features, Mapping):
            raise InputError(f"user_features must be a dict or None, got {type(user_features).__name__}")
        if type(user_id) is not str or not user_id.isascii() or not user_id.strip():  # the usual case: skipped
            self._check_user(user_id)
        if now is None:
            now = time.time()
        elif type(now) is not float or not -math.inf < now < math.inf:
            try:
                now = as_seconds(now, "now")
            except InputError:
                raise InputError(f"now must be a finite number of seconds, got {describe(now)}") from None
        meta: dict[str, Any] = {"backend": self.backend.name, "runtime": self.backend.runtime,
                                "fallback": False, "error": None,
                                "n_candidates": len(items), "n_history": 0, "chunks": 0}
        if self.bundle.warning:
            meta["warning"] = self.bundle.warning
        if not items:
            meta["total_us"] = (time.perf_counter() - t0) * 1e6
            return RankedList([], meta)
        now = float(now)
        # Duplicates: score each id once, keep its first place.
        if (cache is None or _is_versioned(cache)) and (log is None or _is(log, SampledColumnReader)):
            inputs, meta["n_history"], n, firsts, shares = self._fast_inputs(user_id, items, cache, log,
                                                                             user_features, now)
        else:
            self._check_readers(cache, log)
            uniq, firsts = self._dedupe(self._keys(items))
            n = len(uniq)
            inputs, meta["n_history"], shares = self._plain_inputs(user_id, uniq, cache, log, user_features, now)
        meta["unknown"] = self._unknown_shares(inputs, n, *shares)
        t1 = time.perf_counter()
        try:
            scores = self._score(inputs, n, meta)
        except KdaliensError:
            raise
        except Exception as e:  # a runtime failure must not crash the host app
            logger.exception("kdaliens: model call failed; returning candidates in the given order")
            meta.update(fallback=True, error=f"{type(e).__name__}: {e}", encode_us=(t1 - t0) * 1e6)
            kept = range(len(items)) if firsts is None else firsts.tolist()
            ranked = [(items[j], float("nan")) for j in kept][:k]
            meta["model_us"] = (time.perf_counter() - t1) * 1e6
            meta["total_us"] = (time.perf_counter() - t0) * 1e6
            return RankedList(ranked, meta)
        t2 = time.perf_counter()
        # Best first; ties keep the caller's order (distinct ids are in order of first appearance).
        order = np.argsort(-scores, kind="stable")[:k]
        at = order if firsts is None else firsts[order]
        ranked = list(zip(map(items.__getitem__, at.tolist()), scores[order].tolist()))
        meta.update(encode_us=(t1 - t0) * 1e6, model_us=(t2 - t1) * 1e6, total_us=(time.perf_counter() - t0) * 1e6)
        return RankedList(ranked, meta)
