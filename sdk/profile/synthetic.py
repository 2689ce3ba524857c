"""Synthetic but valid requests for ``kdaliens-profile``, drawn from a bundle's FeatureSpec.

Users with a history of events from the bundle's item vocabulary, candidates drawn from
it too (ids past the vocabulary when more are asked for: new items), every item with
plausible attributes. Served from dicts (:mod:`kdaliens.sdk.readers`) or from the SDK's
own SQLite stores in a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..features import MultiField, NumericField

N_REQUESTS = 16  # distinct synthetic requests, cycled through
NOW = 1_700_000_000.0  # request time of the synthetic requests (seconds)


def _value(field: Any, rng: np.random.Generator) -> Any:
    """A plausible raw value for one field of the spec."""
    if isinstance(field, NumericField):
        b = field.boundaries
        if not b:
            return round(float(rng.normal()), 3)
        lo, hi = b[0], b[-1]
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        return round(float(rng.uniform(lo - pad, hi + pad)), 3)
    if isinstance(field, MultiField):
        k = int(rng.integers(1, min(3, field.max_len) + 1))
        if field.vocab:
            picks = rng.choice(len(field.vocab), size=min(k, len(field.vocab)), replace=False)
            return [field.vocab[int(i)] for i in picks]
        return [f"t{int(x)}" for x in rng.integers(0, 1000, size=k)]
    if field.vocab:
        return field.vocab[int(rng.integers(len(field.vocab)))]
    return f"v{int(rng.integers(0, 100_000))}"


class World:
    """Synthetic users, events, items and attributes drawn from a bundle's FeatureSpec."""

    def __init__(self, spec: Any, history_len: int, max_candidates: int, attributes: bool, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.spec = spec
        idf = spec.item_id_field
        vocab = getattr(spec.item_field(idf), "vocab", None)
        self.vocab_ids: list[str] = list(vocab) if vocab else [f"item{i}" for i in range(10_000)]
        self.from_vocab = bool(vocab)
        n_items = len(self.vocab_ids)
        self.candidates: list[list[str]] = []
        self.users: list[tuple[str, dict[str, Any]]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        kinds = list(spec.event_vocab) or ["click"]
        for u in range(N_REQUESTS):
            uid = f"profile-user-{u}"
            feats = {f.name: _value(f, rng) for f in spec.user_fields}
            self.users.append((uid, feats))
            items = rng.integers(0, n_items, size=history_len)
            # Spread over about 90 days before the request, oldest first.
            ts = np.sort(NOW - rng.uniform(60.0, 90 * 86400.0, size=history_len))
            self.events[uid] = [{"item_id": self.vocab_ids[int(i)], "event": kinds[int(rng.integers(len(kinds)))],
                                 "ts": float(t)} for i, t in zip(items, ts)]
        self._rng = rng
        self.item_fields = [f for f in spec.item_fields if f.name != idf]
        self.attributes = attributes
        self.attrs: dict[str, dict[str, Any]] = {}
        if attributes:
            for i in self.vocab_ids:
                self._add_item(i)

    def _add_item(self, item_id: str) -> None:
        if self.attributes and item_id not in self.attrs:
            row = {f.name: _value(f, self._rng) for f in self.item_fields}
            row[self.spec.item_id_field] = item_id
            self.attrs[item_id] = row

    def candidate_lists(self, n: int) -> list[list[str]]:
        """N_REQUESTS lists of n distinct ids: vocabulary items, then new ids past it."""
        out = []
        n_vocab = len(self.vocab_ids)
        for r in range(N_REQUESTS):
            take = min(n, n_vocab)
            picks = [self.vocab_ids[int(i)] for i in self._rng.choice(n_vocab, size=take, replace=False)]
            for j in range(n - take):
                new = f"new-item-{r}-{j}"
                self._add_item(new)
                picks.append(new)
            out.append(picks)
        return out


class SqliteStores:
    """The SDK's own SQLite stores, filled with the synthetic world in a temporary folder."""

    def __init__(self, world: World):
        from ..stores import BehaviorLog, ItemCache

        self._dir = tempfile.TemporaryDirectory(prefix="kdaliens-profile-")
        db = os.path.join(self._dir.name, "device.db")
        self.cache = ItemCache(db, max_items=None) if world.attributes else None
        self.log = BehaviorLog(db)
        if self.cache is not None:
            self.cache.upsert(world.attrs.values())
        self.log.extend({"user_id": u, **e} for u, evs in world.events.items() for e in evs)

    def add_items(self, world: World, ids: Iterable[str]) -> None:
        if self.cache is not None:
            self.cache.upsert(world.attrs[i] for i in ids if i in world.attrs)

    def close(self) -> None:
        for s in (self.cache, self.log):
            if s is not None:
                s.close()
        self._dir.cleanup()
