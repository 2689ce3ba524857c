"""What the Ranker reads from the device's stores, written down as interfaces.

:class:`~kdaliens.sdk.stores.ItemCache` and :class:`~kdaliens.sdk.stores.BehaviorLog`
are the SQLite stores an app keeps; any object with the same read methods works in
their place (an app's own database, a test's dicts). :class:`MemoryItems` and
:class:`MemoryEvents` are such objects, in plain dicts.

Example:
    >>> items = MemoryItems({"42": {"item_id": "42", "genres": ["Drama"]}})
    >>> sorted(items.get_many(["42", "7"]))
    ['42']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InputError, describe
from .features import normalize_token, past_events


@runtime_checkable
class ItemReader(Protocol):
    """Item attributes by id: what ``Ranker.rerank(cache=...)`` reads."""

    def get_many(self, item_ids: Iterable[Any]) -> Mapping[str, Mapping[str, Any]]:
        """Attribute dicts of the ids that are known; unknown ids are left out."""
        ...


@runtime_checkable
class EventReader(Protocol):
    """A user's past events, oldest first: what ``Ranker.rerank(log=...)`` reads."""

    def events(self, user_id: Any, before: float | None = None) -> list[dict[str, Any]]:
        """Dicts with ``item_id``, ``ts`` (seconds) and optionally ``event``, with ``ts < before``."""
        ...


@runtime_checkable
class SampledEventReader(EventReader, Protocol):
    """An :class:`EventReader` that can return only the events a history sampler keeps.

    :class:`~kdaliens.sdk.stores.BehaviorLog` is one: the Ranker then reads a user's
    ``short_len + long_len`` kept events, whatever the length of the log.
    """

    def sampled_events(self, user_id: Any, before: float, positions: Callable[[int], Any]) -> list[dict[str, Any]]:
        """``events(user_id, before)`` indexed by ``positions(n)``, n being how many there are."""
        ...


@runtime_checkable
class SampledColumnReader(Protocol):
    """A log that returns only the events a history sampler keeps, as columns.

    :class:`~kdaliens.sdk.stores.BehaviorLog` and :class:`MemoryEvents` are such logs: with
    one (and a :class:`VersionedItemReader` or no cache) the Ranker keeps each user's encoded
    history and encodes it again only when the kept events change.
    """

    def sampled_columns(self, user_id: Any, before: float, positions: Callable[[int], Any]
                        ) -> tuple[tuple[Any, ...], tuple[Any, ...], Any]:
        """Item ids, event kinds and times (float array) of ``events(user_id, before)`` at ``positions(n)``."""
        ...


@runtime_checkable
class VersionedItemReader(ItemReader, Protocol):
    """An :class:`ItemReader` that says when it changed, so a reader may keep derived data.

    The :class:`~kdaliens.sdk.Ranker` keeps each item's encoded ids between calls for such
    a store (:class:`~kdaliens.sdk.stores.ItemCache` is one) and encodes only new items.
    """

    def generation(self) -> int:
        """A counter that changes whenever any item is written or evicted."""
        ...

    def get_many_timed(self, item_ids: Iterable[Any]) -> Mapping[str, tuple[Mapping[str, Any], float]]:
        """Like ``get_many``, with each item's upsert time: id -> (attributes, updated_at)."""
        ...

    def expired_before(self) -> float:
        """Items upserted at or before this time are expired (-inf: nothing expires)."""
        ...


class MemoryItems:
    """A :class:`VersionedItemReader` over a dict of item id -> attributes, with ItemCache's answers.

    Ids are matched the way :class:`~kdaliens.sdk.stores.ItemCache` matches them (``42``
    and ``"42"`` are one id), and each answer is ``{"item_id": canonical id, **attributes}``
    in request order, duplicates once. An empty id raises :class:`InputError`. The items
    are copied when it is built and never change (build a new one for new items), so a
    :class:`~kdaliens.sdk.Ranker` keeps their encodings between calls.
    """

    def __init__(self, attrs: Mapping[Any, Mapping[str, Any]]):
        self._attrs: dict[str, dict[str, Any]] = {}
        for k, v in attrs.items():
            key = _key(k)
            self._attrs[key] = {"item_id": key, **{f: x for f, x in v.items() if f != "item_id"}}

    def get_many(self, item_ids: Iterable[Any]) -> dict[str, Mapping[str, Any]]:
        a, out = self._attrs, {}
        for v in item_ids:
            k = _key(v)
            if k in a and k not in out:
                out[k] = a[k]
        return out


    def get_many_timed(self, item_ids: Iterable[Any]) -> dict[str, tuple[Mapping[str, Any], float]]:
        return {k: (v, 0.0) for k, v in self.get_many(item_ids).items()}

    def generation(self) -> int:
        return 0  # the items never change

    def expired_before(self) -> float:
        return -math.inf  # nor expire


def _key(value: Any) -> str:
    key = normalize_token(value)
    if key is None:
        raise InputError(f"item_id is missing or empty: {describe(value)}")
    return key


class MemoryEvents:
    """An :class:`EventReader` over a dict of user id -> events (oldest first).

    It reads the dict on every call (append to its lists at will), and
    :meth:`sampled_columns` hands a :class:`~kdaliens.sdk.Ranker` only the events its
    sampler keeps, so the Ranker encodes a history again only when those change.
    """

    def __init__(self, events: Mapping[str, list[dict[str, Any]]]):
        self._events = events

    def sampled_columns(self, user_id: Any, before: float, positions: Callable[[int], Any]
                        ) -> tuple[tuple[Any, ...], tuple[Any, ...], np.ndarray]:
        """Item ids, event kinds and times of the events at ``positions(n)`` among the
        user's ``n`` events before ``before``, in time order (as the encoder orders them)."""
        past = past_events(self._events.get(normalize_token(user_id) or "", []), before)
        kept = [past[j] for j in np.asarray(positions(len(past))).tolist()]
        return (tuple(e["item_id"] for _, _, e in kept), tuple(e.get("event") for _, _, e in kept),
                np.array([t for t, _, _ in kept], dtype=np.float64))

    def events(self, user_id: Any, before: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        ev = self._events.get(normalize_token(user_id) or "", [])
        if before is not None:
            ev = [e for e in ev if e["ts"] < before]
        return ev[-limit:] if limit else ev
