"""The machinery under the device stores: one SQLite file, its schema, its connections.

:class:`_Store` opens one connection per thread in WAL mode, takes writes in ``BEGIN
IMMEDIATE`` transactions, retries SQLite's refusals that skip the busy handler, and
migrates the file's ``kdaliens_*`` tables to :data:`SCHEMA_VERSION`. The public stores
(:mod:`kdaliens.sdk.stores`) add their tables' reads and writes on top.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from .errors import InputError, KdaliensError, describe
from .features import normalize_token
from .fields import as_seconds, utf8

#: Layout version this SDK writes. Bump it and append a step to ``_MIGRATIONS`` to change it.
SCHEMA_VERSION = 2

_BUSY_TIMEOUT_S = 5.0
_MAX_BUSY_TIMEOUT_S = 2_000_000  # SQLite keeps it in milliseconds, in a 32-bit int
# Ids per ``IN (...)`` query: below SQLITE_MAX_VARIABLE_NUMBER of every SQLite build (999 before 3.32).
_CHUNK = 900
_META_TABLE = "kdaliens_meta"
_GENERATION_KEY = "items_generation"

# One writer lock per database file and process: threads of this process that write the same
# file queue here (promptly woken) instead of in SQLite's busy handler, which polls with sleeps
# of up to 100 ms. Other processes still wait in the busy handler.
_FILE_LOCKS: dict[str, threading.Lock] = {}
_CONNECTION_SERIALS = itertools.count(1)
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: str) -> threading.Lock:
    key = os.path.normcase(os.path.realpath(path))
    with _FILE_LOCKS_GUARD:
        lock = _FILE_LOCKS.get(key)
        if lock is None:
            lock = _FILE_LOCKS[key] = threading.Lock()
        return lock


_OPEN_STORES: weakref.WeakSet = weakref.WeakSet()


def _reset_file_locks_in_child() -> None:
    # A lock held by a parent thread at fork time would never be released in the child.
    global _FILE_LOCKS, _FILE_LOCKS_GUARD
    _FILE_LOCKS = {}
    _FILE_LOCKS_GUARD = threading.Lock()
    for store in list(_OPEN_STORES):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_file_locks_in_child)


class StoreError(KdaliensError):
    """A store file cannot be opened or used: not SQLite, a newer schema, locked too long, closed.

    The file as a whole is the store's (its pages, its schema and schema version); a bad
    value in one of its rows, say one that another program wrote (attributes that are not
    a JSON object, a time that is not a number, text that is not UTF-8), is an
    :class:`~kdaliens.sdk.errors.InputError` naming the file, like any bad input.
    """


# --------------------------------------------------------------------------------------
# Schema and migrations.


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # seq: monotonic upsert order (size-bound eviction and item_ids order);
    # updated_at: wall-clock time of the upsert (TTL).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS kdaliens_items ("
        " item_id TEXT PRIMARY KEY NOT NULL,"
        " attrs TEXT NOT NULL,"
        " updated_at REAL NOT NULL,"
        " seq INTEGER NOT NULL)"
    )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS kdaliens_items_seq ON kdaliens_items (seq)")
    conn.execute("CREATE INDEX IF NOT EXISTS kdaliens_items_updated ON kdaliens_items (updated_at)")
    # id (the rowid) is insertion order; it breaks ties between equal timestamps.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS kdaliens_events ("
        " id INTEGER PRIMARY KEY,"
        " user_id TEXT NOT NULL,"
        " item_id TEXT NOT NULL,"
        " event TEXT NOT NULL,"
        " ts REAL NOT NULL)"
    )
    # Every index entry ends with the rowid, so this index serves
    # ``WHERE user_id = ? AND ts < ? ORDER BY ts DESC, id DESC LIMIT ?`` without sorting.
    conn.execute("CREATE INDEX IF NOT EXISTS kdaliens_events_user_ts ON kdaliens_events (user_id, ts)")


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    # An event may have no kind (NULL): BehaviorLog.append without ``event``; a Ranker reads
    # it as the bundle's default kind. SQLite cannot drop NOT NULL in place, so the table is
    # rebuilt with the same row ids (the append order) and its index.
    conn.execute(
        "CREATE TABLE kdaliens_events_v2 ("
        " id INTEGER PRIMARY KEY,"
        " user_id TEXT NOT NULL,"
        " item_id TEXT NOT NULL,"
        " event TEXT,"
        " ts REAL NOT NULL)"
    )
    conn.execute("INSERT INTO kdaliens_events_v2 (id, user_id, item_id, event, ts)"
                 " SELECT id, user_id, item_id, event, ts FROM kdaliens_events")
    conn.execute("DROP TABLE kdaliens_events")
    conn.execute("ALTER TABLE kdaliens_events_v2 RENAME TO kdaliens_events")
    conn.execute("CREATE INDEX IF NOT EXISTS kdaliens_events_user_ts ON kdaliens_events (user_id, ts)")


# _MIGRATIONS[v] brings a file from version v to v + 1.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _migrate_0_to_1, 1: _migrate_1_to_2}


def _read_version(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_META_TABLE,)).fetchone()
    if row is None:
        return 0
    row = conn.execute(f"SELECT value FROM {_META_TABLE} WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StoreError(f"{name}: unreadable kdaliens schema version {describe(row[0])}") from None


def _ensure_schema(conn: sqlite3.Connection, name: str) -> None:
    version = _read_version(conn, name)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION or version < 0:
        raise StoreError(
            f"{name}: kdaliens store schema version {version} is newer than this SDK supports "
            f"({SCHEMA_VERSION}); upgrade kdaliens to open it"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _read_version(conn, name)  # another process may have migrated meanwhile
        if version > SCHEMA_VERSION:
            raise StoreError(f"{name}: kdaliens store schema version {version} is newer than this SDK supports")
        while version < SCHEMA_VERSION:
            _MIGRATIONS[version](conn)
            version += 1
            conn.execute(
                f"INSERT INTO {_META_TABLE} (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction without hiding the error that got us here."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# --------------------------------------------------------------------------------------
# Input validation.


def _id(value: Any, what: str) -> str:
    if type(value) is str:  # the common case, checked first: every rerank reads the log by user id
        token = value.strip()
        if token and token.isascii():  # other text is checked for lone surrogates below
            return token
    if isinstance(value, (Mapping, list, tuple, set)):
        raise InputError(f"{what} must be a string or a number, got {type(value).__name__}: {describe(value)}")
    try:
        token = normalize_token(value)
    except InputError as e:
        if isinstance(value, (str, int, np.integer)):  # the right type, an unusable value: say why
            raise InputError(f"{what}: {e}") from None
        raise InputError(f"{what} must be a string or a number, got {type(value).__name__}: {describe(value)}") from None
    if token is None:
        raise InputError(f"{what} is missing or empty: {describe(value)}")
    return token


def _ts(value: Any, what: str = "ts", allow_inf: bool = False) -> float:
    if type(value) is float and -math.inf < value < math.inf:  # the common case first
        return value
    return as_seconds(value, what, allow_inf)


def _event(value: Any) -> str | None:
    """An event kind to store: a non-empty string, or None for no kind (InputError otherwise)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"event must be a string, got {type(value).__name__}: {describe(value)}")
    if not value.strip():
        raise InputError("event must be a non-empty string")
    if not value.isascii():
        utf8(value, "event")
    return value


def _stored_int(value: Any, what: str, path: str) -> int:
    """An integer the store wrote (a counter in ``kdaliens_meta`` is text); InputError when
    another program left something else there."""
    if type(value) is int:
        return value
    if type(value) is str and len(value) < 32:
        try:
            return int(value)
        except ValueError:
            pass
    raise InputError(f"{path}: the stored {what} is not an integer: {describe(value)}")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON-serializable: {describe(value)}")


def _attrs_json(item: Mapping, item_id: str) -> str:
    attrs = {}
    for key, value in item.items():
        if key == "item_id":
            continue
        if not isinstance(key, str):
            raise InputError(f"item {describe(item_id)}: attribute names must be strings, got {describe(key)}")
        attrs[key] = value
    try:
        text = json.dumps(attrs, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default)
    except ValueError as e:  # NaN / inf (strict JSON has neither), a circular reference, an int of too many digits
        raise InputError(
            f"item {describe(item_id)}: attributes cannot be stored as JSON ({e}); use None for a missing value"
        ) from None
    except TypeError as e:
        raise InputError(f"item {describe(item_id)}: attributes cannot be stored as JSON: {e}") from None
    except RecursionError:
        raise InputError(f"item {describe(item_id)}: attributes cannot be stored as JSON: nested too deeply") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"item {describe(item_id)}: attributes cannot be stored: they hold a string with a lone "
                             f"surrogate, which is not valid Unicode (SQLite stores UTF-8)") from None
    return text


def _chunks(seq: list, n: int = _CHUNK) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# --------------------------------------------------------------------------------------
# Connections.


class _Store:
    """One SQLite file, one connection per thread, writes in ``BEGIN IMMEDIATE`` transactions."""

    _synchronous = "NORMAL"

    def __init__(self, path: str | os.PathLike, busy_timeout: float = _BUSY_TIMEOUT_S):
        if isinstance(path, (bytes, bytearray)):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"path must be a file path, got {type(path).__name__}: {describe(path)}")
        path = os.fspath(path)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        if not path or path == ":memory:" or path.startswith("file:"):
            raise InputError(f"path must name a database file (each thread opens its own connection), got {path!r}")
        try:
            if "\x00" in path:
                raise ValueError("a NUL character")
            self._fs_path = os.fsencode(path)  # what sqlite3 opens: a name of undecodable bytes stays that name
        except (UnicodeEncodeError, ValueError) as e:
            raise InputError(f"path {describe(path)} cannot name a file: {e}") from None
        try:
            timeout_ok = isinstance(busy_timeout, numbers.Real) and 0 <= float(busy_timeout) <= _MAX_BUSY_TIMEOUT_S
        except (OverflowError, ValueError):
            timeout_ok = False
        if not timeout_ok:
            raise InputError(f"busy_timeout must be a number of seconds in [0, {_MAX_BUSY_TIMEOUT_S}], "
                             f"got {describe(busy_timeout)}")
        self.path = path
        self._busy_timeout = float(busy_timeout)
        self._lock = threading.Lock()
        self._write_lock = _file_lock(path)
        self._local = threading.local()
        self._writes = 0  # write transactions this object began (see _change_token)
        self._conns: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._inherited: list[sqlite3.Connection] = []  # opened by a parent process: never used, never closed
        self._pid = os.getpid()
        self._closed = False
        _OPEN_STORES.add(self)
        conn = self._conn()
        with self._errors("open"):
            mode = self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            self._retry_busy(lambda: _ensure_schema(conn, self.path))
        self.journal_mode = str(mode).lower()

    def _retry_busy(self, step):
        """Run one opening step, retrying SQLITE_BUSY until busy_timeout has passed.

        SQLite skips the busy handler where waiting could deadlock: two processes that
        both hold a read lock on a fresh file and both ask to switch it to WAL. One of
        them gets "database is locked" at once; trying again after the other has
        finished is the documented remedy.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.005
        while True:
            try:
                return step()
            except sqlite3.OperationalError as e:
                msg = str(e)
                if not ("locked" in msg or "busy" in msg) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _open_connection(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._fs_path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the store ({e})") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise self._store_error(e, "opening the store") from e
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")
        if os.getpid() != self._pid:
            self._after_fork()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._open_connection()
        with self._lock:
            if self._closed:
                conn.close()
                raise StoreError(f"{self.path}: the store is closed")
            # Close the connections of threads that have ended (their ids may be reused).
            for ident, (thread, old) in list(self._conns.items()):
                if not thread.is_alive():
                    del self._conns[ident]
                    old.close()
            self._conns[threading.get_ident()] = (threading.current_thread(), conn)
        self._local.conn = conn
        self._local.serial = next(_CONNECTION_SERIALS)
        return conn

    def _change_token(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """Equal on two calls only if no process wrote the file in between: ``conn``'s
        serial (``id()`` of a closed connection can come back on a new one, and data_version
        values are only comparable on one connection), its ``PRAGMA data_version`` (which moves on other connections' commits)
        and this object's own writes (which do not move it). About 4 us."""
        return (self._local.serial, conn.execute("PRAGMA data_version").fetchone()[0], self._writes)

    def _after_fork(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                return
            # SQLite connections must not cross fork; keep the parent's alive (closing them
            # here could checkpoint a WAL the parent is using) and start afresh.
            self._inherited.extend(conn for _, conn in self._conns.values())
            self._conns = {}
            self._local = threading.local()
            self._write_lock = _file_lock(self.path)
            self._pid = os.getpid()

    def _store_error(self, e: sqlite3.Error, action: str) -> KdaliensError:
        """The StoreError that says what a failed SQLite call means for ``action``; an
        InputError for a stored value that is not UTF-8 text (another program wrote it)."""
        msg = str(e)
        if "Could not decode to UTF-8" in msg:
            return InputError(f"{self.path}: {action}: a stored text value is not UTF-8 ({msg[:200]})")
        if "not a database" in msg or "malformed" in msg:
            return StoreError(f"{self.path}: not a SQLite database, or it is corrupt ({msg})")
        if "locked" in msg or "busy" in msg:
            return StoreError(f"{self.path}: locked: {action} timed out after {self._busy_timeout:g} s waiting for "
                              f"another connection or process that holds the database ({msg})")
        if "readonly" in msg or "read-only" in msg:
            return StoreError(f"{self.path}: read-only: {action} cannot write (file permissions, a read-only file "
                              f"system or an immutable file) ({msg})")
        return StoreError(f"{self.path}: {action} failed ({msg})")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise self._store_error(e, action) from e

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken up front, so it never deadlocks on upgrade."""
        conn = self._conn()
        if not self._write_lock.acquire(timeout=self._busy_timeout):
            raise StoreError(
                f"{self.path}: {action} timed out after {self._busy_timeout:g} s waiting for another writer thread"
            )
        try:
            with self._errors(action):
                conn.execute("BEGIN IMMEDIATE")
                self._writes += 1  # this object's own commits do not move its connections' data_version
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
        finally:
            self._write_lock.release()

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._errors(action):
            yield conn

    def close(self) -> None:
        """Close every connection this object opened. Call it once other threads are done with it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns, self._conns = list(self._conns.values()), {}
            if os.getpid() != self._pid:
                conns = []
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({self.path!r}, {state})"
