"""On-device SQLite stores: an item attribute cache and an append-only behaviour log.

Both stores live in an ordinary SQLite file (the standard library's :mod:`sqlite3`, no
other dependency) and can share one file: they use their own tables, prefixed
``kdaliens_``, so the file may also hold tables of the host app.

* :class:`ItemCache` keeps item attributes (JSON objects) keyed by canonical item id,
  with a size bound (least recently *upserted* items go first) and an optional TTL.
* :class:`BehaviorLog` keeps ``(user_id, item_id, event, ts)`` rows. :meth:`BehaviorLog.append`
  returns only once the event is committed with ``synchronous=FULL`` in WAL mode, so an
  acknowledged event survives the process being killed (and, on a disk that honours
  ``fsync``, a power cut).

Ids go through :func:`~kdaliens.sdk.features.normalize_token`, so ``7``, ``7.0`` and
``"7"`` name the same item or user everywhere.

Concurrency: every store object opens one SQLite connection per thread that uses it, in
WAL mode with a busy timeout, and every write is one ``BEGIN IMMEDIATE`` transaction. So
any number of threads and processes may read and write the same file at once; readers
never block, writers queue for up to ``busy_timeout`` seconds (SQLite allows one writer
per file at a time). Do not carry a store object across ``fork``: the child opens fresh
connections automatically, but open a new object there to be safe.

Schema: the file records its layout version in the ``kdaliens_meta`` table (the host
app keeps ``PRAGMA user_version`` for itself). A file without kdaliens tables (version
0) or of an older version (1: every event had a kind) is brought up to
:data:`SCHEMA_VERSION` on open; a file of a newer version or an
unreadable one, or a file that is not SQLite, raises :class:`StoreError` naming the file.

Errors: :class:`StoreError` is for the file (cannot be opened, locked too long,
read-only, corrupt pages, closed); :class:`~kdaliens.sdk.errors.InputError` is for bad
arguments and for bad values in the rows, such as another program may write into the
``kdaliens_*`` tables: attributes that are not a JSON object, a time or counter that is
not a number, text that is not UTF-8. Reads raise it naming the file; rows they do not
touch still read.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "device.db")
    >>> with ItemCache(path) as cache, BehaviorLog(path) as log:
    ...     cache.upsert([{"item_id": 7, "title": "Heat", "genres": ["Crime"]}])
    ...     log.append("u1", 7, ts=100.0)
    ...     cache.get("7"), log.events("u1")
    1
    ({'item_id': '7', 'title': 'Heat', 'genres': ['Crime']}, [{'item_id': '7', 'event': None, 'ts': 100.0}])
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .errors import InputError, as_list, describe
from .store_base import (
    _BUSY_TIMEOUT_S,
    _CHUNK,
    _GENERATION_KEY,
    _META_TABLE,
    SCHEMA_VERSION,
    StoreError,
    _attrs_json,
    _chunks,
    _event,
    _id,
    _Store,
    _stored_int,
    _ts,
)

__all__ = ["SCHEMA_VERSION", "BehaviorLog", "ItemCache", "StoreError"]

# --------------------------------------------------------------------------------------
# Item cache.


_REMOVALS_KEY = "items_removals"  # meta counter: bumped whenever items leave the cache
_MAX_LIMIT = 2**63 - 1  # SQLite's LIMIT is a 64-bit int; any larger limit is no limit


def _texts(values: list[Any], what: str, path: str) -> list[Any]:
    """``values`` (ids read back), checked to be text: another program may have stored blobs."""
    for v in values:
        if type(v) is not str:
            raise InputError(f"{path}: a stored {what} is not text: {describe(v)}")
    return values


def _check_events(rows: list[tuple], path: str, at: int = 0) -> None:
    """Event rows read back (``item_id, event, ts`` from column ``at``), as another program may
    have written them: text ids and kinds, finite times; InputError naming the file otherwise."""
    for r in rows:
        item, event, ts = r[at], r[at + 1], r[at + 2]
        if type(ts) is not float or not -math.inf < ts < math.inf:  # REAL affinity makes every number a float
            raise InputError(f"{path}: a stored event time (ts) is not a finite number: {describe(ts)}")
        if type(item) is not str:
            raise InputError(f"{path}: a stored event's item_id is not text: {describe(item)}")
        if event is not None and type(event) is not str:  # None: logged without a kind
            raise InputError(f"{path}: a stored event kind is not text: {describe(event)}")


def _bump_counter(conn: sqlite3.Connection, key: str) -> None:
    conn.execute(
        f"INSERT INTO {_META_TABLE} (key, value) VALUES (?, '1')"
        " ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        (key,),
    )


class ItemCache(_Store):
    """Item attributes on the device, keyed by canonical item id, bounded in size and age.

    Each item is a dict ``{"item_id": ..., <attribute>: <value>, ...}``; the attributes are
    stored as one JSON object, so values keep their JSON types (strings, numbers, booleans,
    None, lists, nested dicts; numpy scalars and arrays are turned into Python values).
    An upsert *replaces* the attributes of an id already cached. Reads return the
    attributes plus ``"item_id"`` as the canonical string.

    Bounds: when more than ``max_items`` items are cached, the least recently upserted ones
    are evicted (reads do not refresh an item). With ``ttl_seconds``, an item upserted
    more than that long ago is invisible to every read and is deleted by
    :meth:`evict_expired`, which each :meth:`upsert` also runs.

    Args:
        path: the SQLite file (created if missing; may be shared with a :class:`BehaviorLog`).
        max_items: most items kept, or None for no bound.
        ttl_seconds: item lifetime in seconds since its last upsert, or None to keep items forever.
        busy_timeout: seconds a write waits for another writer of the file before failing.
        clock: returns the current time in seconds (``time.time``); TTL checks use it.

    Raises:
        StoreError: the file is not SQLite, has a newer schema, or cannot be opened.
        InputError: bad arguments.

    Example:
        >>> import os, tempfile
        >>> cache = ItemCache(os.path.join(tempfile.mkdtemp(), "device.db"), max_items=2)
        >>> cache.upsert([{"item_id": 1, "year": 1995}, {"item_id": "2", "tags": ["a", "b"]}])
        2
        >>> cache.upsert([{"item_id": 3.0, "year": 2001}])  # evicts item 1, the oldest upsert
        1
        >>> cache.item_ids(), 1 in cache, cache.get(3)
        (['3', '2'], False, {'item_id': '3', 'year': 2001})
        >>> sorted(cache.get_many([2, "3", 99]))
        ['2', '3']
        >>> cache.close()
    """

    _synchronous = "NORMAL"  # a cache can be refilled; NORMAL in WAL mode still survives a crashed process

    def __init__(
        self,
        path: str | os.PathLike,
        max_items: int | None = 100_000,
        ttl_seconds: float | None = None,
        *,
        busy_timeout: float = _BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ):
        if max_items is not None and (
            isinstance(max_items, bool) or not isinstance(max_items, numbers.Integral) or max_items < 1
        ):
            raise InputError(f"max_items must be a positive integer or None, got {describe(max_items)}")
        if ttl_seconds is not None and (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, numbers.Real)
            or not 0 < _ts(ttl_seconds, "ttl_seconds", allow_inf=True) < math.inf
        ):
            raise InputError(f"ttl_seconds must be a positive number of seconds or None, got {describe(ttl_seconds)}")
        if not callable(clock):
            raise InputError(f"clock must be callable, got {describe(clock)}")
        self.max_items = None if max_items is None else int(max_items)
        self.ttl_seconds = None if ttl_seconds is None else float(ttl_seconds)
        self._clock = clock
        super().__init__(path, busy_timeout)

    def _now(self) -> float:
        t = self._clock()
        if type(t) is float and -math.inf < t < math.inf:
            return t
        try:
            return _ts(t, "clock()")
        except InputError as e:
            raise InputError(f"{self.path}: the cache's {e}") from None

    def expired_before(self) -> float:
        """Items upserted at or before this time are expired (-inf without a TTL)."""
        if self.ttl_seconds is None:
            return -math.inf
        return self._now() - self.ttl_seconds

    def upsert(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace items in one transaction, then apply the TTL and the size bound.

        Later items of the batch count as more recently upserted; a repeated id keeps its
        last attributes. The whole batch is validated before anything is written.

        Args:
            items: dicts with an ``"item_id"`` and attribute fields by name.

        Returns:
            The number of items written (repeats included).

        Raises:
            InputError: an item is not a dict, lacks an ``item_id``, or has attributes JSON cannot hold.
        """
        if isinstance(items, Mapping):
            raise InputError("upsert takes an iterable of item dicts, got a single dict; wrap it in a list")
        if isinstance(items, (str, bytes)):
            raise InputError(f"upsert takes an iterable of item dicts, got {type(items).__name__}")
        try:
            iterator = iter(items)
        except TypeError:
            raise InputError(f"upsert takes an iterable of item dicts, got {type(items).__name__}") from None
        rows: list[tuple[str, str]] = []
        for i, item in enumerate(iterator):
            if not isinstance(item, Mapping):
                raise InputError(f"item #{i} must be a dict, got {type(item).__name__}: {describe(item)}")
            if "item_id" not in item:
                raise InputError(f"item #{i} has no 'item_id': {describe(item)}")
            item_id = _id(item["item_id"], f"item #{i}: item_id")
            rows.append((item_id, _attrs_json(item, item_id)))
        if not rows:
            return 0
        now = self._now()
        with self._write("upsert") as conn:
            base = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM kdaliens_items").fetchone()[0]
            conn.executemany(
                "INSERT INTO kdaliens_items (item_id, attrs, updated_at, seq) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (item_id) DO UPDATE SET"
                " attrs = excluded.attrs, updated_at = excluded.updated_at, seq = excluded.seq",
                ((item_id, attrs, now, base + k + 1) for k, (item_id, attrs) in enumerate(rows)),
            )
            self._evict(conn)
            self._bump_generation(conn)
        return len(rows)

    @staticmethod
    def _bump_generation(conn: sqlite3.Connection) -> None:
        _bump_counter(conn, _GENERATION_KEY)

    def changes_since(self, state: tuple[int, int, int] | None) -> tuple[tuple[int, int, int], list[str] | None]:
        """What changed since ``state`` (a value this method returned; None: unknown).

        Returns the new state and the ids upserted since ``state`` (by any process), or
        None when items were removed since (TTL, size bound) or ``state`` is None: then
        everything a reader derived must be rebuilt. The :class:`~kdaliens.sdk.Ranker` uses
        it to re-encode only the items an upsert changed.

        Raises:
            InputError: ``state`` is not None nor a state this method returned, or the file
                holds counters that are not integers (another program wrote them).
        """
        if state is not None and not (type(state) is tuple and len(state) == 3 and all(type(x) is int for x in state)):
            raise InputError(f"state must be None or a state changes_since returned, got {describe(state)}")
        with self._read("changes_since") as conn:
            conn.execute("BEGIN")
            try:
                meta = dict(conn.execute(f"SELECT key, value FROM {_META_TABLE} WHERE key IN (?, ?)",
                                         (_GENERATION_KEY, _REMOVALS_KEY)).fetchall())
                top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM kdaliens_items").fetchone()[0]
                new_state = (_stored_int(meta.get(_GENERATION_KEY, 0), _GENERATION_KEY, self.path),
                             _stored_int(meta.get(_REMOVALS_KEY, 0), _REMOVALS_KEY, self.path),
                             _stored_int(top, "seq", self.path))
                if state is None or state[1] != new_state[1] or state[2] > new_state[2]:
                    return new_state, None
                ids = [r[0] for r in conn.execute("SELECT item_id FROM kdaliens_items WHERE seq > ?", (state[2],))]
            finally:
                conn.execute("COMMIT")
        return new_state, ids

    def generation(self) -> int:
        """A counter that changes whenever any process writes or evicts items in this file.

        Readers that keep derived data (the :class:`~kdaliens.sdk.Ranker` keeps each
        item's encoded ids) compare it to know their copy is current; TTL expiry, which
        happens without a write, is theirs to check with the items' upsert times. Raises
        InputError when another program stored a counter that is not an integer.
        """
        conn = self._conn()  # not the _read context manager: the Ranker asks on every call
        try:
            token = self._change_token(conn)
            local = self._local
            if getattr(local, "generation_token", None) == token:  # nothing written since: no table read
                return local.generation
            row = conn.execute(f"SELECT value FROM {_META_TABLE} WHERE key = ?", (_GENERATION_KEY,)).fetchone()
        except sqlite3.Error as e:
            raise self._store_error(e, "generation") from e
        local.generation = gen = 0 if row is None else _stored_int(row[0], _GENERATION_KEY, self.path)
        local.generation_token = token
        return gen

    def get_many_timed(self, item_ids: Iterable[Any]) -> dict[str, tuple[dict[str, Any], float]]:
        """Like :meth:`get_many`, with each item's upsert time: id -> (attributes, updated_at)."""
        return {k: (self._item(k, attrs), t) for k, (attrs, t) in self._fetch(item_ids).items()}

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Apply the TTL and the size bound; counts the removals in the file (see :meth:`changes_since`)."""
        removed = self._evict_rows(conn)
        if removed:
            _bump_counter(conn, _REMOVALS_KEY)
        return removed

    def _evict_rows(self, conn: sqlite3.Connection) -> int:
        removed = 0
        if self.ttl_seconds is not None:
            removed += conn.execute("DELETE FROM kdaliens_items WHERE updated_at <= ?", (self.expired_before(),)).rowcount
        if self.max_items is not None:
            excess = conn.execute("SELECT COUNT(*) FROM kdaliens_items").fetchone()[0] - self.max_items
            if excess > 0:
                removed += conn.execute(
                    "DELETE FROM kdaliens_items WHERE seq <= (SELECT seq FROM kdaliens_items ORDER BY seq LIMIT 1 OFFSET ?)",
                    (excess - 1,),
                ).rowcount
        return removed

    def evict_expired(self) -> int:
        """Delete items older than ``ttl_seconds`` (and any above ``max_items``); returns how many."""
        with self._write("evict_expired") as conn:
            removed = self._evict(conn)
            if removed:
                self._bump_generation(conn)
            return removed

    def _item(self, item_id: str, attrs: str) -> dict[str, Any]:
        """A row's attributes as a dict; InputError when another program stored something else."""
        try:
            value = json.loads(attrs)
        except (ValueError, TypeError, RecursionError) as e:
            raise InputError(f"{self.path}: item {describe(item_id)}: the stored attributes are not readable JSON "
                             f"({type(e).__name__}: {str(e)[:100]})") from None
        if type(value) is not dict:
            raise InputError(f"{self.path}: item {describe(item_id)}: the stored attributes are not a JSON object, "
                             f"got {type(value).__name__}")
        out: dict[str, Any] = {"item_id": item_id}
        out.update(value)
        return out

    def _updated(self, item_id: str, t: Any) -> float:
        if type(t) is not float:  # REAL affinity makes every number a float
            raise InputError(f"{self.path}: item {describe(item_id)}: the stored upsert time is not a number: "
                             f"{describe(t)}")
        return t

    def get(self, item_id: Any) -> dict[str, Any] | None:
        """The attributes of one item (with ``"item_id"``), or None when absent or expired.

        Raises:
            InputError: a bad id, or a stored row that another program left unreadable.
        """
        key = _id(item_id, "item_id")
        with self._read("get") as conn:
            row = conn.execute(
                "SELECT attrs, updated_at FROM kdaliens_items WHERE item_id = ? AND updated_at > ?",
                (key, self.expired_before()),
            ).fetchone()
        if row is None:
            return None
        self._updated(key, row[1])
        return self._item(key, row[0])

    def get_many(self, item_ids: Iterable[Any]) -> dict[str, dict[str, Any]]:
        """Canonical id -> attributes for the cached ids, in request order; absent ids are omitted.

        One query per 900 ids (SQLite's limit on bound variables), all in one read transaction.
        Raises InputError for a bad id, or for a row of these ids that another program left
        unreadable (attributes that are not a JSON object, an upsert time that is not a number).
        """
        return {k: self._item(k, attrs) for k, (attrs, _) in self._fetch(item_ids).items()}

    def _fetch(self, item_ids: Iterable[Any]) -> dict[str, tuple[str, float]]:
        """Canonical id -> (attributes JSON, updated_at) of the unexpired cached ids, in request order."""
        item_ids = as_list(item_ids, "get_many takes an iterable of ids")
        keys = list(dict.fromkeys(_id(v, "item_id") for v in item_ids))
        if not keys:
            return {}
        found: dict[str, tuple[str, float]] = {}
        cutoff = self.expired_before()
        with self._read("get_many") as conn:
            if len(keys) > _CHUNK:
                conn.execute("BEGIN")  # one snapshot across chunks
            try:
                for chunk in _chunks(keys):
                    marks = ",".join("?" * len(chunk))
                    for item_id, attrs, t in conn.execute(
                        f"SELECT item_id, attrs, updated_at FROM kdaliens_items WHERE item_id IN ({marks})"
                        " AND updated_at > ?",
                        (*chunk, cutoff),
                    ):
                        found[item_id] = (attrs, self._updated(item_id, t))
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        return {k: found[k] for k in keys if k in found}

    def item_ids(self, limit: int | None = None) -> list[str]:
        """Cached (unexpired) ids, most recently upserted first; at most ``limit`` of them."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0):
            raise InputError(f"limit must be a non-negative integer or None, got {describe(limit)}")
        with self._read("item_ids") as conn:
            rows = conn.execute(
                "SELECT item_id FROM kdaliens_items WHERE updated_at > ? ORDER BY seq DESC LIMIT ?",
                (self.expired_before(), -1 if limit is None else min(int(limit), _MAX_LIMIT)),
            ).fetchall()
        return _texts([r[0] for r in rows], "item_id", self.path)

    def __len__(self) -> int:
        with self._read("len") as conn:
            if self.ttl_seconds is None:
                return conn.execute("SELECT COUNT(*) FROM kdaliens_items").fetchone()[0]
            return conn.execute(
                "SELECT COUNT(*) FROM kdaliens_items WHERE updated_at > ?", (self.expired_before(),)
            ).fetchone()[0]

    def __contains__(self, item_id: Any) -> bool:
        try:
            key = _id(item_id, "item_id")
        except InputError:
            return False
        with self._read("contains") as conn:
            row = conn.execute(
                "SELECT 1 FROM kdaliens_items WHERE item_id = ? AND updated_at > ?", (key, self.expired_before())
            ).fetchone()
        return row is not None


# --------------------------------------------------------------------------------------
# Behaviour log.


#: Users whose timelines a BehaviorLog keeps in memory for :meth:`BehaviorLog.sampled_events`.
TIMELINE_USERS = 256


class _Timeline:
    """One user's events sorted by (ts, id), as arrays and lists, and the state they reflect."""

    __slots__ = ("ids", "ts", "items", "events", "last_id", "token", "last_pick")

    def __init__(self, ids: np.ndarray, ts: np.ndarray, items: list[str], events: list[str | None], token: tuple):
        self.ids, self.ts, self.items, self.events, self.token = ids, ts, items, events, token
        self.last_id = int(ids.max()) if len(ids) else -1
        self.last_pick: tuple[int, Any, Any] | None = None  # (n, positions, columns) of the last call

    @classmethod
    def of(cls, rows: list[tuple[int, str, str | None, float]], token: tuple) -> _Timeline:
        return cls(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[3] for r in rows], dtype=np.float64),
                   [r[1] for r in rows], [r[2] for r in rows], token)

    def updated(self, new: list[tuple[int, str, str | None, float]], first: tuple[float, int] | None,
                token: tuple) -> _Timeline:
        """With ``new`` rows merged in and everything before ``first`` (the oldest row left) dropped."""
        if first is None:
            return _Timeline.of([], token)
        ids, ts, items, events = self.ids, self.ts, self.items, self.events
        if new:
            new = sorted(new, key=lambda r: (r[3], r[0]))
            if len(ts) and (new[0][3], new[0][0]) < (float(ts[-1]), int(ids[-1])):  # back-filled: merge all
                rows = sorted(list(zip(ids.tolist(), items, events, ts.tolist())) + new, key=lambda r: (r[3], r[0]))
                merged = _Timeline.of(rows, token)
                ids, ts, items, events = merged.ids, merged.ts, merged.items, merged.events
            else:  # appended in time order: the usual case
                ids = np.concatenate([ids, np.array([r[0] for r in new], dtype=np.int64)])
                ts = np.concatenate([ts, np.array([r[3] for r in new], dtype=np.float64)])
                items = items + [r[1] for r in new]
                events = events + [r[2] for r in new]
        lo = int(np.searchsorted(ts, first[0], side="left"))
        while lo < len(ts) and ts[lo] == first[0] and ids[lo] < first[1]:
            lo += 1
        if lo:  # trimmed: the oldest rows are gone
            ids, ts, items, events = ids[lo:], ts[lo:], items[lo:], events[lo:]
        tl = _Timeline(ids, ts, items, events, token)
        tl.last_id = max(self.last_id, tl.last_id)
        return tl


class BehaviorLog(_Store):
    """A durable, append-only log of user behaviour: ``(user_id, item_id, event, ts)`` rows.

    :meth:`append` and :meth:`extend` commit before they return, in WAL mode with
    ``synchronous=FULL``: an event they acknowledged is on disk even if the process is
    killed right after. :meth:`events` reads a user's history oldest first, the shape
    :meth:`~kdaliens.sdk.features.FeatureEncoder.encode_history` takes, through an index on
    ``(user_id, ts)``, so it stays fast for users with many thousands of events. Events
    with the same ``ts`` keep their append order.

    Args:
        path: the SQLite file (created if missing; may be shared with an :class:`ItemCache`).
        max_events_per_user: keep only each user's most recent events (by ``ts``), or None to keep all.
        busy_timeout: seconds a write waits for another writer of the file before failing.

    Raises:
        StoreError: the file is not SQLite, has a newer schema, or cannot be opened.
        InputError: bad arguments.

    Example:
        >>> import os, tempfile
        >>> log = BehaviorLog(os.path.join(tempfile.mkdtemp(), "device.db"))
        >>> log.append("u1", 10, "click", ts=1.0)
        >>> log.extend([{"user_id": "u1", "item_id": 11, "event": "buy", "ts": 2.0},
        ...             {"user_id": 2, "item_id": 10, "event": "click", "ts": 2.5}])
        2
        >>> len(log), log.users()
        (3, ['2', 'u1'])
        >>> log.events("u1", before=2.0)
        [{'item_id': '10', 'event': 'click', 'ts': 1.0}]
        >>> [e["item_id"] for e in log.events("u1", limit=1)]
        ['11']
        >>> log.close()
    """

    _synchronous = "FULL"

    def __init__(
        self,
        path: str | os.PathLike,
        max_events_per_user: int | None = None,
        *,
        busy_timeout: float = _BUSY_TIMEOUT_S,
    ):
        if max_events_per_user is not None and (
            isinstance(max_events_per_user, bool)
            or not isinstance(max_events_per_user, numbers.Integral)
            or max_events_per_user < 1
        ):
            raise InputError(f"max_events_per_user must be a positive integer or None, got {describe(max_events_per_user)}")
        self.max_events_per_user = None if max_events_per_user is None else int(max_events_per_user)
        self._timelines: OrderedDict[str, _Timeline] = OrderedDict()
        self._timelines_lock = threading.Lock()
        super().__init__(path, busy_timeout)

    @staticmethod
    def _row(user_id: Any, item_id: Any, event: Any, ts: Any, where: str = "") -> tuple[str, str, str | None, float]:
        prefix = f"{where}: " if where else ""
        try:
            u = _id(user_id, "user_id")
            i = _id(item_id, "item_id")
            e = _event(event)
            t = time.time() if ts is None else _ts(ts)
        except InputError as err:
            if not prefix:
                raise
            raise InputError(prefix + str(err)) from None
        return u, i, e, t

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple[str, str, str | None, float]]) -> None:
        conn.executemany("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES (?, ?, ?, ?)", rows)
        if self.max_events_per_user is not None:
            for user in dict.fromkeys(r[0] for r in rows):
                conn.execute(
                    "DELETE FROM kdaliens_events WHERE id IN ("
                    " SELECT id FROM kdaliens_events WHERE user_id = ? ORDER BY ts DESC, id DESC LIMIT -1 OFFSET ?)",
                    (user, min(self.max_events_per_user, _MAX_LIMIT)),
                )

    def append(self, user_id: Any, item_id: Any, event: str | None = None, ts: float | None = None) -> None:
        """Append one event and commit it durably before returning.

        Args:
            user_id: the user (a string or a number; normalized like every id).
            item_id: the item.
            event: the event kind, a non-empty string, or None (the default) to store no
                kind: a :class:`~kdaliens.sdk.Ranker` reads an event without a kind as its
                bundle's default kind (``spec.default_event`` in the manifest; on
                MovieLens-100K the most common rating, ``"4"``). Log the kinds the bundle
                was trained on (its ``spec.event_vocab``) where the app knows them: a kind
                the bundle does not know is read as out of vocabulary.
            ts: seconds since the epoch; ``time.time()`` when None.

        Raises:
            InputError: an empty id, an id that is neither a string nor a number (or holds
                a lone surrogate, or is an int of more digits than Python prints), an event
                that is not a non-empty string, or a ``ts`` that is not a finite number.
            StoreError: the write failed or waited longer than ``busy_timeout`` for another writer.
        """
        row = self._row(user_id, item_id, event, ts)
        with self._write("append") as conn:
            self._insert(conn, [row])

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append many events in one durable transaction (all or nothing); returns how many.

        Args:
            rows: dicts with ``user_id`` and ``item_id``, and optionally ``event``
                (no kind, as in :meth:`append`) and ``ts`` (now).
        """
        if isinstance(rows, (Mapping, str, bytes)):
            raise InputError(f"extend takes an iterable of event dicts, got {type(rows).__name__}")
        try:
            iterator = iter(rows)
        except TypeError:
            raise InputError(f"extend takes an iterable of event dicts, got {type(rows).__name__}") from None
        clean = []
        for k, r in enumerate(iterator):
            if not isinstance(r, Mapping):
                raise InputError(f"event #{k} must be a dict, got {type(r).__name__}: {describe(r)}")
            for key in ("user_id", "item_id"):
                if key not in r:
                    raise InputError(f"event #{k} has no {key!r}: {describe(r)}")
            clean.append(self._row(r["user_id"], r["item_id"], r.get("event"), r.get("ts"), f"event #{k}"))
        if not clean:
            return 0
        with self._write("extend") as conn:
            self._insert(conn, clean)
        return len(clean)

    def events(self, user_id: Any, before: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """A user's events ``{"item_id", "event", "ts"}``, oldest first (``event`` None: logged without a kind).

        Args:
            user_id: the user.
            before: keep only events with ``ts < before`` (None: all).
            limit: keep only the most recent ``limit`` of those (None: all).

        Raises:
            InputError: a bad argument, or a stored row of the user's that another program
                left unreadable (a time that is not a finite number, an id that is not text).
        """
        key = _id(user_id, "user_id")
        # Without a cutoff every row is read: one whose ts another program left as text
        # (which SQLite orders after every number) is then refused, not skipped.
        where, args = ("user_id = ?", (key,)) if before is None else \
            ("user_id = ? AND ts < ?", (key, _ts(before, "before", allow_inf=True)))
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0):
            raise InputError(f"limit must be a non-negative integer or None, got {describe(limit)}")
        if limit == 0:
            return []
        with self._read("events") as conn:
            if limit is None:
                rows = conn.execute(
                    f"SELECT item_id, event, ts FROM kdaliens_events WHERE {where} ORDER BY ts, id", args
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT item_id, event, ts FROM kdaliens_events WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?",
                    (*args, min(int(limit), _MAX_LIMIT)),
                ).fetchall()
                rows.reverse()
        _check_events(rows, self.path)
        return [{"item_id": i, "event": e, "ts": t} for i, e, t in rows]

    def sampled_events(self, user_id: Any, before: float, positions: Callable[[int], np.ndarray]
                       ) -> list[dict[str, Any]]:
        """The events at ``positions(n)`` (indices, oldest first) among the user's ``n``
        events with ``ts < before``: what a history sampler keeps, without reading the rest.

        ``events(user_id, before)`` indexed by ``positions(n)``, in a cost that does not grow
        with the log (see :meth:`sampled_columns`).
        """
        items, events, ts = self.sampled_columns(user_id, before, positions)
        return [{"item_id": i, "event": e, "ts": t} for i, e, t in zip(items, events, ts.tolist())]

    def sampled_columns(self, user_id: Any, before: float, positions: Callable[[int], np.ndarray]
                        ) -> tuple[tuple[str, ...], tuple[str | None, ...], np.ndarray]:
        """:meth:`sampled_events` as columns: item ids, event kinds, and times (a read-only float64 array).

        Each user's timeline (row ids, times, items, events) is kept in memory by this
        object (the :data:`TIMELINE_USERS` most recent users) and checked on every call
        against the file's ``PRAGMA data_version`` and this object's own writes. After a
        write only the new rows are read (by row id), and rows trimmed by
        ``max_events_per_user`` (the oldest, by any process) are dropped. A repeated call
        with nothing new returns the same objects.

        Raises:
            InputError: a bad argument, or a stored row of the user's that another program
                left unreadable (a time that is not a finite number, an id that is not text).
        """
        key = _id(user_id, "user_id")
        cutoff = _ts(before, "before", allow_inf=True)
        if not callable(positions):
            raise InputError(f"positions must be a function of the event count, got {type(positions).__name__}")
        conn = self._conn()  # not the _read context manager: the Ranker asks on every call
        try:
            token = self._change_token(conn)
            with self._timelines_lock:
                tl = self._timelines.get(key)
                if tl is not None:
                    self._timelines.move_to_end(key)
            if tl is None or tl.token != token:
                tl = self._refresh(conn, key, tl, token)
        except sqlite3.Error as e:
            raise self._store_error(e, "sampled_events") from e
        n = int(np.searchsorted(tl.ts, cutoff, side="left"))
        last = tl.last_pick
        if last is not None and last[0] == n and last[1] == positions:  # a bound method: ==, not is
            return last[2]
        picks = positions(n).tolist()
        items, events = tl.items, tl.events
        ts = tl.ts[picks]
        ts.flags.writeable = False
        got = (tuple([items[j] for j in picks]), tuple([events[j] for j in picks]), ts)
        tl.last_pick = (n, positions, got)
        return got

    def _refresh(self, conn: sqlite3.Connection, key: str, old: _Timeline | None, token: tuple) -> _Timeline:
        """``old`` brought up to date in one read snapshot (a new timeline when ``old`` is None)."""
        conn.execute("BEGIN")
        try:
            if old is None:
                rows = conn.execute("SELECT id, item_id, event, ts FROM kdaliens_events WHERE user_id = ?"
                                    " ORDER BY ts, id", (key,)).fetchall()
                _check_events(rows, self.path, 1)
                tl = _Timeline.of(rows, token)
            else:
                # New rows by row id (the rowid range, not the user index: "+user_id");
                # trims delete a prefix in (ts, id) order, so the current oldest row says
                # how much of the cached prefix is gone.
                new = conn.execute("SELECT id, item_id, event, ts FROM kdaliens_events WHERE id > ? AND +user_id = ?",
                                   (old.last_id, key)).fetchall()
                first = conn.execute("SELECT ts, id FROM kdaliens_events WHERE user_id = ? ORDER BY ts, id LIMIT 1",
                                     (key,)).fetchone()
                _check_events(new, self.path, 1)
                if first is not None:
                    _check_events([("", "", first[0])], self.path)
                tl = old.updated(new, first, token)
        finally:
            conn.execute("COMMIT")
        with self._timelines_lock:
            self._timelines[key] = tl
            self._timelines.move_to_end(key)
            while len(self._timelines) > TIMELINE_USERS:
                self._timelines.popitem(last=False)
        return tl

    def users(self) -> list[str]:
        """Every user with at least one event, sorted."""
        with self._read("users") as conn:
            users = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM kdaliens_events ORDER BY user_id")]
        return _texts(users, "user_id", self.path)

    def __len__(self) -> int:
        with self._read("len") as conn:
            return conn.execute("SELECT COUNT(*) FROM kdaliens_events").fetchone()[0]
