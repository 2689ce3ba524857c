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
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .backends import backend_for_target, get_backend
from .backends.base import Backend
from .bundle import Bundle
from .errors import InputError, KdaliensError
from .features import FeatureEncoder, normalize_token
from .names import BackendName
from .readers import SampledEventReader, VersionedItemReader

logger = logging.getLogger("kdaliens.sdk")

BACKEND_NAMES = ("auto", *BackendName.choices())
MAX_ENCODED_ITEMS = 1_000_000  # encoded item rows kept between calls (about 100 MB at most)


class RankedList(list):
    """A list of ``(item_id, score)`` pairs, best first, with ``meta`` about the call.

    ``meta`` keys: ``backend``, ``fallback`` (bool), ``error`` (str or None),
    ``n_candidates``, ``n_history``, ``chunks``, ``encode_us``, ``model_us``, ``total_us``.
    """

    meta: dict[str, Any]

    def __init__(self, items: Iterable[tuple[Any, float]] = (), meta: dict[str, Any] | None = None):
        super().__init__(items)
        self.meta = meta or {}


_KINDS: dict[tuple[type, type], bool] = {}


def _is(obj: Any, protocol: type) -> bool:
    """isinstance(obj, protocol), memoized per class (a Protocol check costs microseconds,
    and rerank asks on every call)."""
    key = (type(obj), protocol)
    known = _KINDS.get(key)
    if known is None:
        known = _KINDS[key] = isinstance(obj, protocol)
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

    def __init__(self, encoder: FeatureEncoder, id_field: str):
        self.encoder = encoder
        self.id_field = id_field
        self.cache_ref: Any = None
        self.generation: int | None = None
        self.state: Any = None  # the cache's changes_since state the rows reflect
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}
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
                grown = np.zeros((cap,) + v.shape[1:], dtype=v.dtype)
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
            self.valid[rows] = False
        else:
            self._reset()
        # The generation read first: a write that lands in between only makes the next call look again.
        self.cache_ref, self.generation = weakref.ref(cache), gen

    def encode(self, keys: list[str], cache: Any) -> dict[str, np.ndarray]:
        """Encoded fields of ``keys`` (canonical ids); call :meth:`sync` first."""
        if not keys:
            return self.encoder.encode_items([])
        pos = np.fromiter((self.index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        known = pos >= 0
        known[known] = self.valid[pos[known]]
        if known.any():  # expired since they were encoded
            cutoff = cache.expired_before()
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
        return {name: v[pos] for name, v in self.arrays.items()}


class Ranker:
    """A bundle's model plus the encoder that feeds it. Build it with :meth:`load`."""

    def __init__(self, bundle: Bundle, backend: Backend):
        self.bundle = bundle
        self.backend = backend
        self.encoder = FeatureEncoder(bundle.spec)
        self.spec = bundle.spec
        self.max_candidates = backend.max_candidates
        self.signature = bundle.signature
        self.input_names = self.signature.names
        self._id_field = self.spec.item_id_field
        self._items = _EncodedItems(self.encoder, self._id_field)
        self._items_lock = threading.Lock()  # the kept item encodings are shared by every thread

    @classmethod
    def load(cls, bundle: str | Path | Bundle, backend: str = "auto", threads: int = 1) -> Ranker:
        """Verify a bundle and load its model.

        Args:
            bundle: a bundle folder (or a loaded :class:`Bundle`).
            backend: ``"auto"`` (the bundle's own runtime), ``"executorch"``,
                ``"onnxruntime"`` or ``"litert"``.
            threads: intra-op threads of the runtime.

        Raises:
            BundleError: the bundle is missing, corrupt, tampered with or unsupported.
            BackendUnavailable: the runtime is not installed (the message names the extra).
            InputError: an unknown backend, or one that cannot run this bundle's target.
        """
        if backend != "auto":
            try:
                backend = BackendName.parse(backend, "backend")
            except InputError:
                raise InputError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}") from None
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise InputError(f"threads must be a positive int, got {threads!r}")
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        own = backend_for_target(b.target)
        name = own if backend == "auto" else backend
        if name != own:
            raise InputError(f"bundle {b.path} targets {b.target!r}, which the {own!r} backend runs, not {name!r}")
        return cls(b, get_backend(name)(b.model_path, b.manifest, threads=threads))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _candidates(candidates: Any) -> tuple[list[Any], list[str]]:
        """The caller's ids and their canonical forms (validated once)."""
        if candidates is None or isinstance(candidates, (str, bytes, Mapping)):
            raise InputError(f"candidates must be a list of item ids, got {type(candidates).__name__}")
        try:
            items = list(candidates)
        except TypeError as e:
            raise InputError(f"candidates must be iterable, got {type(candidates).__name__}") from e
        keys = []
        for i, c in enumerate(items):
            if isinstance(c, float) and not math.isfinite(c):
                raise InputError(f"candidates[{i}] is not a usable id: {c!r}")
            if not isinstance(c, (str, int, float, np.integer, np.floating, bytes)) or isinstance(c, bool):
                raise InputError(f"candidates[{i}] must be a string or int id, got {type(c).__name__}")
            key = normalize_token(c)
            if key is None:
                raise InputError(f"candidates[{i}] is an empty id")
            keys.append(key)
        return items, keys

    @staticmethod
    def _k(k: Any, n: int) -> int:
        if k is None:
            return n
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
            raise InputError(f"k must be None or an int >= 0, got {k!r}")
        return min(int(k), n)

    def encode_request(self, history: dict[str, np.ndarray], user: dict[str, np.ndarray],
                       cands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model inputs (1, ...) from encoder outputs; candidates are sliced later."""
        return self.signature.request(history, user, cands)

    def _encode_candidates(self, keys: list[str], cache) -> dict[str, np.ndarray]:
        """Encoded candidate fields; a :class:`VersionedItemReader` gets its encoded rows kept between calls."""
        if _is_versioned(cache):
            with self._items_lock:
                self._items.sync(cache)
                return self._items.encode(keys, cache)
        attrs = cache.get_many(keys) if cache is not None else {}
        return self.encoder.encode_items([{**attrs.get(u, {}), self._id_field: u} for u in keys])

    def _score(self, inputs: dict[str, np.ndarray], n: int, meta: dict[str, Any]) -> np.ndarray:
        """The model's scores of ``n`` candidates, in chunks of at most ``max_candidates``."""
        scores = np.empty(n, dtype=np.float64)
        for s in range(0, n, self.max_candidates):
            out = self.backend.run(self.signature.slice_candidates(inputs, s, s + self.max_candidates))
            scores[s:s + self.max_candidates] = np.asarray(out["score"], dtype=np.float64).reshape(-1)
            meta["chunks"] += 1
        if not np.isfinite(scores).all():
            raise FloatingPointError("the model returned non-finite scores")
        return scores

    # ------------------------------------------------------------------ rerank
    def rerank(self, user_id: Any, candidates: Iterable[Any], cache=None, log=None,
               user_features: Mapping[str, Any] | None = None, k: int | None = None,
               now: float | None = None) -> RankedList:
        """Score ``candidates`` for ``user_id`` and return them best first.

        Args:
            user_id: the user whose events in ``log`` make the history.
            candidates: item ids (strings or ints); duplicates keep their first place;
                ids the model never saw are scored from their cached attributes.
            cache: an :class:`~kdaliens.sdk.stores.ItemCache` with item attributes
                (optional: without it items are scored by id alone).
            log: a :class:`~kdaliens.sdk.stores.BehaviorLog` (optional: without it,
                or for a new user, the history is empty: cold start).
            user_features: the user's attributes (``age``, ``gender``, ...), optional.
            k: return only the best ``k`` (None: all).
            now: the request time in seconds (default: the current time).

        Returns:
            A :class:`RankedList` of ``(item_id, score)``.
        """
        t0 = time.perf_counter()
        items, keys = self._candidates(candidates)
        k = self._k(k, len(items))
        if user_features is not None and not isinstance(user_features, Mapping):
            raise InputError(f"user_features must be a dict or None, got {type(user_features).__name__}")
        if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
            raise InputError("user_id must be a non-empty id")
        if now is None:
            now = time.time()
        elif not isinstance(now, (int, float)) or not math.isfinite(float(now)):
            raise InputError(f"now must be a finite number of seconds, got {now!r}")
        meta: dict[str, Any] = {"backend": self.backend.name, "fallback": False, "error": None,
                                "n_candidates": len(items), "n_history": 0, "chunks": 0}
        if not items:
            meta["total_us"] = (time.perf_counter() - t0) * 1e6
            return RankedList([], meta)
        # Duplicates: score each id once, keep its first position.
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        uniq = list(first)
        if log is None:
            events = []
        elif _is(log, SampledEventReader):  # only the events the sampler keeps, whatever the log's length
            events = log.sampled_events(user_id, before=float(now), positions=self.encoder.sampler.positions)
        else:
            events = log.events(user_id, before=float(now))
        # Attributes only for the candidates and the history events the sampler keeps;
        # an ItemCache's items are encoded once and kept (see _EncodedItems).
        if _is_versioned(cache):
            with self._items_lock:
                self._items.sync(cache)  # one generation check per call
                hist = self.encoder.encode_history(events, now=float(now), encoded_items=lambda ids: self._items.encode(
                    [normalize_token(i) for i in ids], cache))
                cands = self._items.encode(uniq, cache)
        else:
            lookup = (lambda ids: cache.get_many(ids)) if cache is not None else None
            hist = self.encoder.encode_history(events, now=float(now), item_attributes=lookup)
            cands = self._encode_candidates(uniq, cache)
        user = self.encoder.encode_user(user_features)
        meta["n_history"] = int(hist["hist_mask"].sum())
        inputs = self.encode_request(hist, user, cands)
        t1 = time.perf_counter()
        try:
            scores = self._score(inputs, len(uniq), meta)
        except KdaliensError:
            raise
        except Exception as e:  # a runtime failure must not crash the host app
            logger.exception("kdaliens: model call failed; returning candidates in the given order")
            meta.update(fallback=True, error=f"{type(e).__name__}: {e}", encode_us=(t1 - t0) * 1e6)
            order = sorted(range(len(uniq)), key=lambda j: first[uniq[j]])
            ranked = [(items[first[uniq[j]]], float("nan")) for j in order][:k]
            meta["model_us"] = (time.perf_counter() - t1) * 1e6
            meta["total_us"] = (time.perf_counter() - t0) * 1e6
            return RankedList(ranked, meta)
        t2 = time.perf_counter()
        # Best first; ties keep the caller's order (uniq is in order of first appearance).
        order = np.argsort(-scores, kind="stable")[:k]
        pos = list(first.values())
        ranked = [(items[pos[j]], float(scores[j])) for j in order.tolist()]
        meta.update(encode_us=(t1 - t0) * 1e6, model_us=(t2 - t1) * 1e6, total_us=(time.perf_counter() - t0) * 1e6)
        return RankedList(ranked, meta)
