"""Declarative feature spec and the one feature encoder shared by training and devices.

A :class:`FeatureSpec` lists every model input: user fields, item fields, and the
behaviour history. It serializes to JSON (it goes into checkpoints and bundle
manifests), and :class:`FeatureEncoder` turns raw dicts (as an app or a log file has
them) into the integer arrays the model eats. Training calls this same encoder, so what
a device feeds the model is what the model was trained on.

Id conventions, the same for every field:

* ``0`` is padding (an empty slot of a multi-valued field or of the history);
* ``1`` is out-of-vocabulary or missing;
* ``2..cardinality-1`` are real values.

Categorical values are normalized to strings before lookup (:func:`normalize_token`):
``5``, ``5.0``, ``"5"`` and ``" 5 "`` are the same token. A field either has a
vocabulary (a list of tokens; token ``vocab[i]`` gets id ``i + 2``) or hashes tokens into
``hash_buckets`` buckets with :func:`stable_hash` (32-bit FNV-1a over UTF-8 bytes; id
``2 + hash % hash_buckets``), which a Java or Kotlin port reproduces bit for bit.

Numeric fields are bucketized: id ``2 + bisect_right(boundaries, value)``; a missing or
non-finite value gets ``1``.

Example:
    >>> spec = FeatureSpec(
    ...     user_fields=[CategoricalField("gender", vocab=("F", "M"))],
    ...     item_fields=[CategoricalField("item_id", vocab=("10", "20")),
    ...                  NumericField("year", boundaries=(1980.0, 2000.0)),
    ...                  MultiField("genres", vocab=("Comedy", "Drama"), max_len=3)],
    ... )
    >>> enc = FeatureEncoder(spec)
    >>> items = enc.encode_items([{"item_id": 20, "year": 1995, "genres": "Drama"}])
    >>> items["item_id"].tolist(), items["year"].tolist(), items["genres"].tolist()
    ([3], [3], [[3, 0, 0]])
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, as_list, describe
from .fields import (
    N_RESERVED,
    OOV_ID,
    PAD_ID,
    SPEC_FORMAT_VERSION,
    CategoricalField,
    Field,
    MultiField,
    NumericField,
    as_seconds,
    field_from_dict,
    normalize_token,
    spec_errors,
    stable_hash,
    to_float,
)
from .history import HistorySampler, HistorySpec

__all__ = [
    "DEFAULT_TIME_GAP_BOUNDARIES", "N_RESERVED", "OOV_ID", "PAD_ID", "SPEC_FORMAT_VERSION", "CategoricalField",
    "FeatureEncoder", "FeatureSpec", "Field", "MultiField", "NumericField", "field_from_dict", "normalize_token",
    "stable_hash", "to_float",
]


# Time since an event, in seconds: 1 min, 10 min, 1 h, 6 h, 1 d, 3 d, 1 w, 1 mo, 3 mo, 1 y.
DEFAULT_TIME_GAP_BOUNDARIES: tuple[float, ...] = (
    60.0, 600.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0, 2592000.0, 7776000.0, 31536000.0,
)


@dataclass(frozen=True)
class FeatureSpec:
    """Every model input, declared once.

    Args:
        user_fields: attributes of the user (not the user id unless you list it).
        item_fields: attributes of an item; one of them is ``item_id_field``.
        item_id_field: name of the item id field.
        user_id_field: name of the user id column in the data and in logs.
        history: history length and sampling (see :class:`HistorySpec`).
        history_item_fields: item fields gathered for every history event
            (default: all item fields).
        event_vocab: event kinds in the behaviour log ("click", "5", ...).
        default_event: the kind an event without one is read as (training sets the
            most common kind of its log); None reads it as out of vocabulary.
        time_gap_boundaries: buckets for the time between an event and the request.

    Raises:
        InputError: fields, names or values of the wrong type or out of range (also
            from :meth:`from_dict` and :meth:`from_json`, for a bad dict or JSON text).
    """

    user_fields: tuple[Field, ...]
    item_fields: tuple[Field, ...]
    item_id_field: str = "item_id"
    user_id_field: str = "user_id"
    history: HistorySpec = field(default_factory=HistorySpec)
    history_item_fields: tuple[str, ...] | None = None
    event_vocab: tuple[str, ...] = ()
    time_gap_boundaries: tuple[float, ...] = DEFAULT_TIME_GAP_BOUNDARIES
    default_event: str | None = None

    def __post_init__(self) -> None:
        with spec_errors("feature spec"):  # values of the wrong type: InputError, like bad values
            self._build()

    def _build(self) -> None:
        object.__setattr__(self, "user_fields", tuple(self.user_fields))
        object.__setattr__(self, "item_fields", tuple(self.item_fields))
        object.__setattr__(self, "event_vocab", tuple(str(e) for e in self.event_vocab))
        object.__setattr__(self, "time_gap_boundaries", tuple(float(x) for x in self.time_gap_boundaries))
        names = [f.name for f in self.item_fields]
        if self.item_id_field not in names:
            raise InputError(f"item_fields must include the item id field {describe(self.item_id_field)}")
        for group in (self.user_fields, self.item_fields):
            seen = [f.name for f in group]
            if len(set(seen)) != len(seen):
                raise InputError(f"duplicate field names in {describe(seen)}")
        if self.history_item_fields is None:
            object.__setattr__(self, "history_item_fields", tuple(names))
        else:
            object.__setattr__(self, "history_item_fields", tuple(self.history_item_fields))
            missing = set(self.history_item_fields) - set(names)
            if missing:
                raise InputError(f"history_item_fields not among item fields: {describe(missing)}")
        # Built (and so validated) once: a bad event vocabulary or gap boundaries fail here.
        object.__setattr__(self, "_event_field", CategoricalField("event", vocab=self.event_vocab))
        if self.default_event is not None and (type(self.default_event) is not str
                                               or self.default_event not in self.event_vocab):
            raise InputError(f"default_event {describe(self.default_event)} is not in the event vocabulary "
                             f"{describe(list(self.event_vocab))}")
        object.__setattr__(self, "_time_gap_field", NumericField("time_gap", boundaries=self.time_gap_boundaries))

    # -- derived fields -------------------------------------------------------------
    @property
    def event_field(self) -> CategoricalField:
        return self._event_field  # type: ignore[attr-defined]

    @property
    def time_gap_field(self) -> NumericField:
        return self._time_gap_field  # type: ignore[attr-defined]

    def item_field(self, name: str) -> Field:
        """The item field called ``name``; InputError when there is none."""
        for f in self.item_fields:
            if f.name == name:
                return f
        raise InputError(f"no item field named {describe(name)} (the item fields: {[f.name for f in self.item_fields]})")

    def with_history(self, history: HistorySpec) -> FeatureSpec:
        """The same fields with other history settings (the teacher's long history)."""
        d = self.to_dict()
        d["history"] = history.to_dict()
        return FeatureSpec.from_dict(d)

    # -- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format_version": SPEC_FORMAT_VERSION,
            "user_id_field": self.user_id_field,
            "item_id_field": self.item_id_field,
            "user_fields": [f.to_dict() for f in self.user_fields],
            "item_fields": [f.to_dict() for f in self.item_fields],
            "history": self.history.to_dict(),
            "history_item_fields": list(self.history_item_fields or ()),
            "event_vocab": list(self.event_vocab),
            "time_gap_boundaries": list(self.time_gap_boundaries),
            **({"default_event": self.default_event} if self.default_event is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        if not isinstance(d, Mapping):
            raise InputError(f"a feature spec must be a JSON object, got {type(d).__name__}")
        version = d.get("format_version", SPEC_FORMAT_VERSION)
        if type(version) is not int or version != SPEC_FORMAT_VERSION:
            raise InputError(f"feature spec format_version {describe(version)} is not supported "
                             f"(this SDK reads {SPEC_FORMAT_VERSION})")
        try:
            return cls(
                user_fields=tuple(field_from_dict(f) for f in d["user_fields"]),
                item_fields=tuple(field_from_dict(f) for f in d["item_fields"]),
                item_id_field=d.get("item_id_field", "item_id"),
                user_id_field=d.get("user_id_field", "user_id"),
                history=HistorySpec.from_dict(d.get("history", {})),
                history_item_fields=tuple(d["history_item_fields"]) if d.get("history_item_fields") else None,
                event_vocab=tuple(d.get("event_vocab", ())),
                time_gap_boundaries=tuple(d.get("time_gap_boundaries", DEFAULT_TIME_GAP_BOUNDARIES)),
                default_event=d.get("default_event"),
            )
        except KeyError as e:
            raise InputError(f"feature spec lacks key {describe(e.args[0])}") from None
        except (TypeError, ValueError, OverflowError, AttributeError, IndexError, RecursionError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"bad feature spec: {type(e).__name__}: {str(e)[:200]}") from None

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        try:
            d = json.loads(text)
        except (ValueError, TypeError, RecursionError) as e:  # JSONDecodeError is a ValueError
            raise InputError(f"feature spec is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None
        return cls.from_dict(d)


def _rows(rows: Any, what: str) -> Sequence[Mapping[str, Any]]:
    if isinstance(rows, Mapping):
        raise InputError(f"{what}: expected a list of dicts, got one dict")
    try:
        rows = list(rows)
    except TypeError as e:
        raise InputError(f"{what}: expected an iterable of dicts, got {type(rows).__name__}") from e
    for i, r in enumerate(rows):
        if type(r) is not dict and not isinstance(r, Mapping):
            raise InputError(f"{what}[{i}]: expected a dict, got {type(r).__name__}")
    return rows


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def past_events(events: Iterable[Mapping[str, Any]], now: float, id_field: str = "item_id"
                ) -> list[tuple[float, int, Mapping[str, Any]]]:
    """``(ts, index, event)`` of the events before ``now``, by time (ties in the given order).

    The order the history sampler's positions refer to. Raises :class:`InputError` for an
    event without ``id_field`` or a usable ``ts``, or a ``now`` that is not a number (or NaN).
    """
    if type(now) is not float:
        now = as_seconds(now, "now", allow_inf=True)
    elif now != now:
        raise InputError("now must be a number of seconds, got nan")
    parsed = []
    for i, e in enumerate(_rows(events, "events")):
        if id_field not in e:
            raise InputError(f"events[{i}] has no {id_field!r}")
        t = to_float(e.get("ts"))
        if not math.isfinite(t):
            raise InputError(f"events[{i}] has no usable 'ts': {describe(e.get('ts'))}")
        if t < now:
            parsed.append((t, i, e))
    parsed.sort(key=lambda p: (p[0], p[1]))
    return parsed


class FeatureEncoder:
    """Turns raw dicts into model arrays, following a :class:`FeatureSpec`.

    Outputs are dicts of int64 numpy arrays keyed by field name: ``(N,)`` for
    categorical and numeric fields, ``(N, max_len)`` for multi fields. History arrays are
    keyed ``hist_<field>`` plus ``hist_event``, ``hist_time_gap`` and ``hist_mask``, of
    length ``spec.history.length``.

    Example:
        >>> enc = FeatureEncoder(spec)                                  # doctest: +SKIP
        >>> enc.encode_history(events=[{"item_id": 3, "ts": 10.0, "event": "click"}],
        ...                    now=20.0, item_attributes={3: {"genres": "Drama"}})  # doctest: +SKIP
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.sampler = HistorySampler(spec.history)
        self._event = spec.event_field
        self._gap = spec.time_gap_field
        # An event logged without a kind reads as the spec's default kind.
        self._no_kind = OOV_ID if spec.default_event is None else self._event.encode_one(spec.default_event)

    # -- rows of attributes ---------------------------------------------------------
    def _encode_rows(self, fields: Sequence[Field], rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        n = len(rows)
        out: dict[str, np.ndarray] = {}
        for f in fields:
            if isinstance(f, NumericField):
                vals = np.fromiter((to_float(r.get(f.name)) for r in rows), dtype=np.float64, count=n)
                out[f.name] = f.encode_array(vals)
            elif isinstance(f, MultiField):
                arr = np.zeros((n, f.max_len), dtype=np.int64)
                for i, r in enumerate(rows):
                    arr[i] = f.encode_one(r.get(f.name))
                out[f.name] = arr
            else:
                out[f.name] = np.fromiter((f.encode_one(r.get(f.name)) for r in rows), dtype=np.int64, count=n)
        return out

    def encode_items(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Encode item attribute dicts; unknown keys are ignored, missing ones are OOV.

        Numbers that cannot be bucketized (NaN, infinities, ints past float range, text
        that is no number) are OOV too. Raises InputError for rows that are not dicts, or
        a categorical value that is no token (a list or dict where one value belongs, a
        lone surrogate, an int of more digits than Python prints): see
        :func:`~kdaliens.sdk.fields.normalize_token`.
        """
        return self._encode_rows(self.spec.item_fields, _rows(rows, "items"))

    def encode_users(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Encode user attribute dicts, as :meth:`encode_items` encodes items (and raises)."""
        return self._encode_rows(self.spec.user_fields, _rows(rows, "users"))

    def encode_user(self, features: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        """One user's attributes -> arrays of shape (1,) or (1, max_len)."""
        if features is None:
            features = {}
        if not isinstance(features, Mapping):
            raise InputError(f"user features must be a dict, got {type(features).__name__}")
        return self.encode_users([features])

    # -- events ---------------------------------------------------------------------
    def encode_events(self, events: Sequence[Any]) -> np.ndarray:
        """Event kinds -> ids (int64); None (no kind) is the spec's ``default_event``.

        Raises InputError for events that are not a list of kinds."""
        if not isinstance(events, (list, tuple)):
            events = as_list(events, "events must be a list of event kinds")
        enc, none = self._event.encode_one, self._no_kind
        return np.fromiter((none if e is None else enc(e) for e in events), dtype=np.int64, count=len(events))

    def encode_time_gaps(self, now: float | np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Seconds between each event and ``now`` (broadcast) -> bucket ids.

        Future events count as 0 s; a non-finite gap is out of vocabulary. Raises
        InputError for values that are not numbers, or shapes that do not broadcast.
        """
        try:
            gaps = np.maximum(np.asarray(now, dtype=np.float64) - np.asarray(ts, dtype=np.float64), 0.0)
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(f"time gaps need numbers of seconds (now, ts): {str(e)[:200]}") from None
        return self._gap.encode_array(gaps)

    def gather_history(
        self,
        event_items: Mapping[str, np.ndarray],
        event_ids: np.ndarray,
        event_ts: np.ndarray,
        starts: np.ndarray,
        n_past: np.ndarray,
        now: np.ndarray,
        seed: int | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Sample and gather the histories of a batch of requests from a flat event store.

        The store holds E events grouped by user, each user's events in time order:
        ``event_items`` (encoded item fields per event, (E,) or (E, max_len)),
        ``event_ids`` (encoded event kinds, (E,)) and ``event_ts`` (seconds, (E,)).
        Request b sees the ``n_past[b]`` events starting at ``starts[b]`` (its past)
        and is made at time ``now[b]``. Training calls this on its whole log; a device
        calls it (through :meth:`encode_history`) on one user's events. It is the one
        place where sampling, gathering, time gaps and padding happen.

        ``extra`` gathers more per-event arrays the same way (key ``hist_<name>``).

        Returns:
            ``hist_<field>`` (B, L) or (B, L, max_len), ``hist_event`` (B, L),
            ``hist_time_gap`` (B, L) and ``hist_mask`` (B, L) bool.
        """
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        n_past = np.asarray(n_past, dtype=np.int64).reshape(-1)
        now = np.broadcast_to(np.asarray(now, dtype=np.float64), starts.shape)
        idx, mask = self.sampler.sample_batch(n_past, seed)  # (B, L)
        flat = np.where(mask, starts[:, None] + idx, 0)  # (B, L)
        n_events = len(event_ids)
        if n_events == 0:
            flat_ok = np.zeros_like(mask)
        else:
            if mask.any() and int(flat[mask].max()) >= n_events:
                raise InputError("history indices run past the event store")
            flat_ok = mask
        out: dict[str, np.ndarray] = {}
        B, L = mask.shape
        sources = [(name, event_items[name]) for name in self.spec.history_item_fields or ()]
        sources += list((extra or {}).items())
        for name, arr in sources:
            a = np.asarray(arr, dtype=np.int64)
            if n_events == 0:
                out["hist_" + name] = np.zeros((B, L) + a.shape[1:], dtype=np.int64)
                continue
            g = a[flat]
            g[~flat_ok] = PAD_ID
            out["hist_" + name] = g
        if n_events == 0:
            out["hist_event"] = np.zeros((B, L), dtype=np.int64)
            out["hist_time_gap"] = np.zeros((B, L), dtype=np.int64)
        else:
            ev = np.asarray(event_ids, dtype=np.int64)[flat]
            ev[~flat_ok] = PAD_ID
            out["hist_event"] = ev
            gap = self.encode_time_gaps(now[:, None], np.asarray(event_ts, dtype=np.float64)[flat])
            gap[~flat_ok] = PAD_ID
            out["hist_time_gap"] = gap
        out["hist_mask"] = flat_ok.copy()
        return out

    def encode_history(
        self,
        events: Sequence[Mapping[str, Any]],
        now: float,
        item_attributes: Mapping[Any, Mapping[str, Any]] | Callable[[list[Any]], Mapping[Any, Any]] | None = None,
        seed: int | None = None,
        encoded_items: Callable[[list[Any]], Mapping[str, np.ndarray]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Encode one user's raw behaviour events into fixed-length history arrays.

        Args:
            events: dicts with ``item_id`` (the spec's item id field), ``ts`` (seconds)
                and optionally ``event``; in any order (they are sorted by time,
                stably). Events at or after ``now`` are dropped: the model only sees
                the past.
            now: the request time, in seconds.
            item_attributes: item id -> attribute dict (from the item cache), or a
                function taking the list of needed item ids and returning such a dict
                (so a device fetches attributes only for the events the sampler keeps);
                an item missing from it still gets its id, with OOV attributes.
            seed: overrides the spec's sampler seed.
            encoded_items: instead of ``item_attributes``, a function taking the list of
                needed item ids and returning their encoded fields, as :meth:`encode_items`
                would (the Ranker keeps encoded items between calls).

        Raises:
            InputError: ``now`` is not a finite number, an event lacks the item id or a
                usable ``ts``, ``item_attributes`` is not a dict (or does not return one)
                of attribute dicts, or a value cannot be encoded.
        """
        idf = self.spec.item_id_field
        if type(now) is not float or not -math.inf < now < math.inf:
            now = as_seconds(now, "now")
        if item_attributes is not None and not callable(item_attributes) and not isinstance(item_attributes, Mapping):
            raise InputError(f"item_attributes must be a dict or a function, got {type(item_attributes).__name__}")
        parsed = past_events(events, now, idf)
        # Only the events the sampler keeps are encoded. gather_history then sees at most
        # L events, which its sampler keeps whole and in order.
        keep = [parsed[j] for j in self.sampler.positions(len(parsed), seed)]
        ids = [e[idf] for _, _, e in keep]
        if encoded_items is not None:
            item_arrays = dict(encoded_items(ids))
        else:
            attrs = item_attributes(ids) if callable(item_attributes) else item_attributes
            if attrs is None:
                attrs = {}
            elif not isinstance(attrs, Mapping):
                raise InputError(f"item_attributes must give a dict of item id -> attributes, got {type(attrs).__name__}")
            rows = []
            for iid in ids:
                a = attrs.get(iid) if _hashable(iid) else None
                if a is None:
                    a = attrs.get(normalize_token(iid), {})  # InputError for an id that is no token
                if not isinstance(a, Mapping):
                    raise InputError(f"item_attributes[{describe(iid)}] must be a dict, got {type(a).__name__}")
                row = dict(a)
                row[idf] = iid
                rows.append(row)
            item_arrays = self.encode_items(rows)
        return self.encode_kept(item_arrays, [e.get("event") for _, _, e in keep],
                                np.array([p[0] for p in keep], dtype=np.float64), now, seed)

    def encode_kept(self, item_arrays: Mapping[str, np.ndarray], events: Sequence[Any], ts: np.ndarray,
                    now: float, seed: int | None = None) -> dict[str, np.ndarray]:
        """History arrays of events the sampler already kept: at most ``L``, oldest first, before ``now``.

        ``item_arrays`` holds their encoded item fields (as :meth:`encode_items` gives them),
        ``events`` their kinds, ``ts`` their times. :meth:`gather_history` keeps them whole
        and in order; this is the tail of :meth:`encode_history`, for a caller that read
        only the kept events (a :class:`~kdaliens.sdk.stores.BehaviorLog`).
        """
        ts = np.asarray(ts, dtype=np.float64)
        if len(ts) > self.spec.history.length:
            raise InputError(f"{len(ts)} kept events exceed the history length {self.spec.history.length}")
        batch = self.gather_history(item_arrays, self.encode_events(events), ts, starts=np.zeros(1),
                                    n_past=np.array([len(ts)]), now=np.array([now], dtype=np.float64), seed=seed)
        return {k: v[0] for k, v in batch.items()}
