"""The on-device SQLite stores: item cache and behaviour log, on real files, no mocks."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from kdaliens.sdk.errors import InputError, KdaliensError
from kdaliens.sdk.stores import SCHEMA_VERSION, BehaviorLog, ItemCache, StoreError


class FakeClock:
    """A settable clock for TTL tests (injected, nothing patched)."""

    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _schema_version(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT value FROM kdaliens_meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# ItemCache


def test_cache_round_trip_and_json_types(tmp_path):
    with ItemCache(tmp_path / "device.db") as cache:
        n = cache.upsert(
            [
                {"item_id": 7, "title": "Heat", "year": 1995, "score": 4.5, "genres": ["Crime", "Drama"]},
                {"item_id": "8", "title": "Up", "meta": {"kids": True, "tags": [1, 2]}, "missing": None},
            ]
        )
        assert n == 2
        got = cache.get("7")
        assert got == {"item_id": "7", "title": "Heat", "year": 1995, "score": 4.5, "genres": ["Crime", "Drama"]}
        assert isinstance(got["year"], int) and isinstance(got["score"], float) and isinstance(got["genres"], list)
        assert cache.get(8) == {"item_id": "8", "title": "Up", "meta": {"kids": True, "tags": [1, 2]}, "missing": None}
        # 7, 7.0, "7" and " 7 " are one id.
        assert cache.get(7) == cache.get(7.0) == cache.get(" 7 ") == got
        assert 7 in cache and "7" in cache and 9 not in cache
        assert None not in cache and [1] not in cache
        assert cache.get(9) is None
        assert len(cache) == 2


def test_cache_get_many_order_absent_and_chunking(tmp_path):
    with ItemCache(tmp_path / "device.db") as cache:
        cache.upsert({"item_id": i, "v": i} for i in range(2500))
        assert len(cache) == 2500
        many = cache.get_many([5, "3", 99_999, 3.0, 4])
        assert list(many) == ["5", "3", "4"]  # request order, duplicates and absent ids dropped
        assert many["3"] == {"item_id": "3", "v": 3}
        # More ids than one query binds: chunked, all found.
        ids = list(range(2499, -1, -1)) + [10_000]
        big = cache.get_many(ids)
        assert list(big) == [str(i) for i in range(2499, -1, -1)]
        assert all(v["v"] == int(k) for k, v in big.items())
        assert cache.get_many([]) == {}


def test_cache_upsert_replaces_and_refreshes(tmp_path):
    with ItemCache(tmp_path / "device.db") as cache:
        cache.upsert([{"item_id": 1, "a": 1, "b": 2}, {"item_id": 2, "a": 2}])
        assert cache.item_ids() == ["2", "1"]
        cache.upsert([{"item_id": "1", "a": 10}])
        assert cache.get(1) == {"item_id": "1", "a": 10}  # replaced, not merged
        assert cache.item_ids() == ["1", "2"]  # most recently upserted first
        assert cache.item_ids(limit=1) == ["1"] and cache.item_ids(limit=0) == []
        # A repeated id in one batch keeps its last attributes.
        assert cache.upsert([{"item_id": 3, "x": "first"}, {"item_id": 3.0, "x": "last"}]) == 2
        assert cache.get(3) == {"item_id": "3", "x": "last"}
        assert len(cache) == 3
        assert cache.upsert([]) == 0


def test_cache_numpy_values_become_json(tmp_path):
    with ItemCache(tmp_path / "device.db") as cache:
        cache.upsert([{"item_id": np.int64(5), "n": np.int32(3), "f": np.float32(0.5), "v": np.arange(3)}])
        assert cache.get(5) == {"item_id": "5", "n": 3, "f": 0.5, "v": [0, 1, 2]}


def test_cache_size_bound_evicts_oldest_upserted(tmp_path):
    with ItemCache(tmp_path / "device.db", max_items=3) as cache:
        cache.upsert([{"item_id": i} for i in (1, 2, 3)])
        cache.get(1)  # reads do not refresh
        cache.upsert([{"item_id": 2, "again": True}])  # upserts do: 1 is now the oldest
        cache.upsert([{"item_id": 4}])
        assert cache.item_ids() == ["4", "2", "3"]
        assert 1 not in cache and len(cache) == 3
        # A batch larger than the bound keeps its own last items.
        cache.upsert([{"item_id": i} for i in range(10, 20)])
        assert cache.item_ids() == ["19", "18", "17"]
    # The bound holds across reopening, also with a smaller bound.
    with ItemCache(tmp_path / "device.db", max_items=2) as cache:
        assert len(cache) == 3
        assert cache.evict_expired() == 1
        assert cache.item_ids() == ["19", "18"]


def test_cache_ttl_with_injected_clock(tmp_path):
    clock = FakeClock(1_000.0)
    with ItemCache(tmp_path / "device.db", ttl_seconds=60, clock=clock) as cache:
        cache.upsert([{"item_id": 1}, {"item_id": 2}])
        clock.now = 1_030.0
        cache.upsert([{"item_id": 3}])
        clock.now = 1_061.0  # 1 and 2 expired, 3 alive
        assert cache.get(1) is None and 1 not in cache
        assert cache.get(3) == {"item_id": "3"}
        assert list(cache.get_many([1, 2, 3])) == ["3"]
        assert cache.item_ids() == ["3"] and len(cache) == 1
        assert cache.evict_expired() == 2
        assert cache.evict_expired() == 0
        clock.now = 1_100.0
        cache.upsert([{"item_id": 4}])  # upsert evicts expired items too
        assert cache.item_ids() == ["4"]
    raw = sqlite3.connect(tmp_path / "device.db")
    assert raw.execute("SELECT COUNT(*) FROM kdaliens_items").fetchone()[0] == 1
    raw.close()


def test_cache_ttl_with_real_time(tmp_path):
    with ItemCache(tmp_path / "device.db", ttl_seconds=0.2) as cache:
        cache.upsert([{"item_id": "a"}])
        assert "a" in cache
        time.sleep(0.3)
        assert cache.get("a") is None
        assert cache.evict_expired() == 1


@pytest.mark.parametrize(
    "items, message",
    [
        ([{"title": "no id"}], "has no 'item_id'"),
        ([{"item_id": None}], "missing or empty"),
        ([{"item_id": "  "}], "missing or empty"),
        ([{"item_id": [1, 2]}], "must be a string or a number"),
        (["not a dict"], "must be a dict"),
        ([{"item_id": 1}, 5], "item #1 must be a dict"),
        ([{"item_id": 1, "when": object()}], "cannot be stored as JSON"),
        ([{"item_id": 1, "tags": {1, 2}}], "cannot be stored as JSON"),
        ([{"item_id": 1, "year": math.nan}], "use None for a missing value"),
        ([{"item_id": 1, 5: "x"}], "attribute names must be strings"),
        ({"item_id": 1}, "wrap it in a list"),
        (42, "iterable of item dicts"),
    ],
)
def test_cache_bad_input(tmp_path, items, message):
    with ItemCache(tmp_path / "device.db") as cache:
        cache.upsert([{"item_id": "keep"}])
        with pytest.raises(InputError, match=message):
            cache.upsert(items)
        assert cache.item_ids() == ["keep"]  # validated before writing: nothing half-written


def test_cache_bad_arguments(tmp_path):
    db = tmp_path / "device.db"
    for kwargs, message in [
        ({"max_items": 0}, "max_items"),
        ({"max_items": 1.5}, "max_items"),
        ({"ttl_seconds": -1}, "ttl_seconds"),
        ({"ttl_seconds": math.inf}, "ttl_seconds"),
    ]:
        with pytest.raises(InputError, match=message):
            ItemCache(db, **kwargs)
    with pytest.raises(InputError, match="database file"):
        ItemCache(":memory:")
    with ItemCache(db) as cache:
        with pytest.raises(InputError, match="item_id is missing"):
            cache.get(None)
        with pytest.raises(InputError, match="iterable of ids"):
            cache.get_many("123")
        with pytest.raises(InputError, match="limit"):
            cache.item_ids(limit=-1)


# --------------------------------------------------------------------------------------
# BehaviorLog


def test_log_order_before_limit_and_len(tmp_path):
    with BehaviorLog(tmp_path / "device.db") as log:
        assert len(log) == 0 and log.users() == [] and log.events("u1") == []
        log.append("u1", 10, ts=3.0)
        log.append("u1", 11, "buy", ts=1.0)  # out of order on purpose
        log.append(2, "12", ts=2.0)
        log.append("u1", 12.0, "view", ts=3.0)  # same ts as the first: append order breaks the tie
        assert (
            log.extend([{"user_id": "u1", "item_id": 13, "event": "click", "ts": 5.0}, {"user_id": 2.0, "item_id": 1}])
            == 2
        )
        assert len(log) == 6
        assert log.users() == ["2", "u1"]
        assert log.events("u1") == [
            {"item_id": "11", "event": "buy", "ts": 1.0},
            {"item_id": "10", "event": None, "ts": 3.0},  # no kind given: none stored
            {"item_id": "12", "event": "view", "ts": 3.0},
            {"item_id": "13", "event": "click", "ts": 5.0},
        ]
        # before excludes events at or after that time.
        assert [e["item_id"] for e in log.events("u1", before=3.0)] == ["11"]
        assert [e["item_id"] for e in log.events("u1", before=3.5)] == ["11", "10", "12"]
        assert log.events("u1", before=1.0) == []
        # limit keeps the most recent events, still oldest first.
        assert [e["item_id"] for e in log.events("u1", limit=2)] == ["12", "13"]
        assert [e["item_id"] for e in log.events("u1", before=5.0, limit=2)] == ["10", "12"]
        assert log.events("u1", limit=0) == []
        assert len(log.events("u1", limit=100)) == 4
        # ids normalize: user 2 == "2" == 2.0; a default ts is now.
        events_2 = log.events(2)
        assert [e["item_id"] for e in events_2] == ["12", "1"]
        assert [e["event"] for e in events_2] == [None, None]
        assert abs(events_2[-1]["ts"] - time.time()) < 60


def test_log_max_events_per_user(tmp_path):
    with BehaviorLog(tmp_path / "device.db", max_events_per_user=3) as log:
        for i in range(5):
            log.append("a", i, ts=float(i))
        log.extend([{"user_id": "b", "item_id": i, "ts": float(10 - i)} for i in range(5)])
        log.append("a", "old", ts=-1.0)  # older than everything kept: trimmed at once
        assert [e["item_id"] for e in log.events("a")] == ["2", "3", "4"]
        assert [e["ts"] for e in log.events("b")] == [8.0, 9.0, 10.0]
        assert len(log) == 6


def test_log_events_fast_for_long_history(tmp_path):
    with BehaviorLog(tmp_path / "device.db") as log:
        log.extend({"user_id": f"other{u}", "item_id": i, "ts": float(i)} for u in range(20) for i in range(500))
        log.extend({"user_id": "heavy", "item_id": i, "ts": float(i)} for i in range(5000))
        start = time.perf_counter()
        for _ in range(20):
            recent = log.events("heavy", before=4000.0, limit=50)
        per_call = (time.perf_counter() - start) / 20
        assert [e["ts"] for e in recent] == [float(t) for t in range(3950, 4000)]
        assert per_call < 0.05, per_call  # about 0.05 ms here; an unindexed scan+sort would be far slower
        assert len(log.events("heavy")) == 5000
        conn = sqlite3.connect(tmp_path / "device.db")
        plan = " ".join(
            r[-1]
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT item_id, event, ts FROM kdaliens_events WHERE user_id = ? AND ts < ?"
                " ORDER BY ts DESC, id DESC LIMIT ?",
                ("heavy", 4000.0, 50),
            )
        )
        conn.close()
        assert "kdaliens_events_user_ts" in plan and "TEMP B-TREE" not in plan, plan


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((None, 1), {}, "user_id is missing"),
        (("", 1), {}, "user_id is missing"),
        (("u", None), {}, "item_id is missing"),
        (("u", " "), {}, "item_id is missing"),
        (("u", {"a": 1}), {}, "item_id must be a string or a number"),
        (("u", 1), {"event": 3}, "event must be a string"),
        (("u", 1), {"event": ""}, "event must be a non-empty string"),
        (("u", 1), {"ts": math.nan}, "ts must be finite"),
        (("u", 1), {"ts": math.inf}, "ts must be finite"),
        (("u", 1), {"ts": "yesterday"}, "ts must be a number"),
        (("u", 1), {"ts": True}, "ts must be a number"),
    ],
)
def test_log_append_bad_input(tmp_path, args, kwargs, message):
    with BehaviorLog(tmp_path / "device.db") as log:
        with pytest.raises(InputError, match=message):
            log.append(*args, **kwargs)
        assert len(log) == 0


def test_log_extend_bad_input_is_all_or_nothing(tmp_path):
    with BehaviorLog(tmp_path / "device.db") as log:
        good = {"user_id": "u", "item_id": 1, "ts": 1.0}
        with pytest.raises(InputError, match=r"event #1: ts must be finite"):
            log.extend([good, {"user_id": "u", "item_id": 2, "ts": math.inf}])
        with pytest.raises(InputError, match=r"event #1 has no 'item_id'"):
            log.extend([good, {"user_id": "u"}])
        with pytest.raises(InputError, match=r"event #0 must be a dict"):
            log.extend([("u", 1)])
        with pytest.raises(InputError, match="iterable of event dicts"):
            log.extend(good)
        assert len(log) == 0
        with pytest.raises(InputError, match="before must be finite"):
            log.events("u", before=math.nan)
        with pytest.raises(InputError, match="limit"):
            log.events("u", limit=-1)
        with pytest.raises(InputError, match="max_events_per_user"):
            BehaviorLog(tmp_path / "device.db", max_events_per_user=0)


def test_cache_and_log_share_a_file(tmp_path):
    db = tmp_path / "device.db"
    with ItemCache(db) as cache, BehaviorLog(db) as log:
        cache.upsert([{"item_id": 1, "title": "x"}])
        log.append("u", 1, ts=1.0)
    with ItemCache(db) as cache, BehaviorLog(db) as log:
        assert cache.get(1) == {"item_id": "1", "title": "x"}
        assert log.events("u") == [{"item_id": "1", "event": None, "ts": 1.0}]


def test_closed_store_raises(tmp_path):
    log = BehaviorLog(tmp_path / "device.db")
    log.close()
    log.close()  # idempotent
    assert log.closed
    with pytest.raises(StoreError, match="closed"):
        log.append("u", 1)
    cache = ItemCache(tmp_path / "device.db")
    cache.close()
    with pytest.raises(StoreError, match="closed"):
        cache.get(1)


# --------------------------------------------------------------------------------------
# Durability and concurrency


_DURABLE_CHILD = textwrap.dedent(
    """
    import sys
    from kdaliens.sdk.stores import BehaviorLog
    log = BehaviorLog(sys.argv[1])
    print("ready", flush=True)
    for i in range(1_000_000):
        log.append("dur", i, "click", ts=float(i))
        print(f"ack {i}", flush=True)
    """
)


def test_acknowledged_appends_survive_sigkill(tmp_path):
    db = tmp_path / "device.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _DURABLE_CHILD, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    acked: list[int] = []
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        while len(acked) < 300:
            line = child.stdout.readline()
            assert line.startswith("ack "), (line, child.stderr.read() if not line else "")
            acked.append(int(line.split()[1]))
        child.send_signal(signal.SIGKILL)  # mid-stream: the child is appending as fast as it can
        # Acks already in the pipe when the child died were also sent after a committed append.
        rest, _ = child.communicate(timeout=30)
        acked += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack ")]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    with BehaviorLog(db) as log:
        stored = {int(e["item_id"]) for e in log.events("dur")}
        assert len(log) >= len(acked)
    assert set(acked) <= stored
    assert acked == list(range(len(acked)))


def test_threads_write_and_read_concurrently(tmp_path):
    db = tmp_path / "device.db"
    log = BehaviorLog(db)
    errors: list[BaseException] = []
    done = threading.Event()
    seen_lengths: list[int] = []

    def writer(user: str) -> None:
        try:
            for i in range(500):
                log.append(user, i, ts=float(i))
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        try:
            while not done.is_set():
                seen_lengths.append(len(log))
                for user in ("w0", "w1"):
                    ts = [e["ts"] for e in log.events(user, limit=20)]
                    assert ts == sorted(ts)
        except BaseException as e:
            errors.append(e)

    writers = [threading.Thread(target=writer, args=(f"w{k}",)) for k in range(2)]
    read_thread = threading.Thread(target=reader)
    read_thread.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    read_thread.join()
    assert not errors, errors
    assert len(log) == 1000
    assert seen_lengths == sorted(seen_lengths) and seen_lengths
    for user in ("w0", "w1"):
        assert [e["item_id"] for e in log.events(user)] == [str(i) for i in range(500)]
    log.close()


def test_cache_threads_upsert_and_read(tmp_path):
    cache = ItemCache(tmp_path / "device.db", max_items=300)
    errors: list[BaseException] = []

    def upserter(k: int) -> None:
        try:
            for i in range(100):
                cache.upsert([{"item_id": f"{k}-{i}-{j}", "k": k} for j in range(3)])
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(200):
                assert len(cache) <= 300
                ids = cache.item_ids(limit=50)
                cache.get_many(ids)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=upserter, args=(k,)) for k in range(2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(cache) == 300
    cache.close()


_WRITER_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from kdaliens.sdk.stores import BehaviorLog
    db, user, go = sys.argv[1], sys.argv[2], sys.argv[3]
    log = BehaviorLog(db)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(500):
        log.append(user, i, ts=float(i))
    log.extend({"user_id": user, "item_id": f"batch{i}", "ts": 1000.0 + i} for i in range(100))
    print("done", flush=True)
    """
)


def _run_children(code: str, args: list[list[str]], go: Callable[[], None]) -> None:
    """Start one process per argument list, wait until each says "ready", call ``go``,
    then require every one to print "done" and exit 0 (stragglers are killed)."""
    children = [subprocess.Popen([sys.executable, "-c", code, *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for a in args]
    try:
        for c in children:
            assert c.stdout.readline().strip() == "ready", c.stderr.read()
        go()
        for c in children:
            out, err = c.communicate(timeout=120)
            assert c.returncode == 0, err
            assert out.strip() == "done"
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()


def test_two_writer_processes(tmp_path):
    db = tmp_path / "device.db"  # not created yet: both processes race to create the schema too
    go = tmp_path / "go"
    _run_children(_WRITER_CHILD, [[str(db), f"p{k}", str(go)] for k in range(2)], go.touch)
    with BehaviorLog(db) as log:
        assert len(log) == 1200
        assert log.users() == ["p0", "p1"]
        for user in ("p0", "p1"):
            events = log.events(user)
            assert [e["item_id"] for e in events] == [str(i) for i in range(500)] + [f"batch{i}" for i in range(100)]


_OPENER_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from kdaliens.sdk.stores import BehaviorLog
    folder, user, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    for t in range(trials):
        while not os.path.exists(os.path.join(folder, f"go{t}")):
            time.sleep(0.0002)
        # every child switches the same fresh file to WAL at once
        with BehaviorLog(os.path.join(folder, f"fresh{t}.db")) as log:
            log.append(user, t, ts=1.0)
    print("done", flush=True)
    """
)


def test_processes_opening_one_fresh_file_at_once(tmp_path):
    # SQLite answers "database is locked" at once, without waiting, to one of two
    # processes that switch a fresh file to WAL together; opening must retry, not fail.
    trials, n = 20, 6

    def release_one_file_at_a_time() -> None:
        for t in range(trials):
            (tmp_path / f"go{t}").touch()
            time.sleep(0.05)

    _run_children(_OPENER_CHILD, [[str(tmp_path), f"p{k}", str(trials)] for k in range(n)], release_one_file_at_a_time)
    for t in range(trials):
        with BehaviorLog(tmp_path / f"fresh{t}.db") as log:
            assert log.users() == [f"p{k}" for k in range(n)]


# --------------------------------------------------------------------------------------
# Schema


def test_fresh_file_gets_current_schema_and_reopen_keeps_data(tmp_path):
    db = tmp_path / "device.db"
    with BehaviorLog(db) as log:
        log.append("u", 1, ts=1.0)
        assert log.journal_mode == "wal"
    assert _schema_version(db) == SCHEMA_VERSION
    with BehaviorLog(db) as log, ItemCache(db) as cache:
        assert log.events("u") == [{"item_id": "1", "event": None, "ts": 1.0}]
        assert len(cache) == 0
    assert _schema_version(db) == SCHEMA_VERSION


def test_version_1_file_is_migrated_keeping_rows_and_order(tmp_path):
    # Version 1 (every event had a kind: event TEXT NOT NULL), as an older SDK wrote it.
    db = tmp_path / "v1.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE kdaliens_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    raw.execute("INSERT INTO kdaliens_meta VALUES ('schema_version', '1')")
    raw.execute("CREATE TABLE kdaliens_events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,"
                " item_id TEXT NOT NULL, event TEXT NOT NULL, ts REAL NOT NULL)")
    raw.execute("CREATE INDEX kdaliens_events_user_ts ON kdaliens_events (user_id, ts)")
    raw.executemany("INSERT INTO kdaliens_events (id, user_id, item_id, event, ts) VALUES (?, ?, ?, ?, ?)",
                    [(5, "u", "a", "4", 2.0), (7, "u", "b", "5", 2.0), (9, "v", "c", "1", 1.0)])
    raw.commit()
    raw.close()
    with BehaviorLog(db) as log:
        assert log.events("u") == [{"item_id": "a", "event": "4", "ts": 2.0},
                                   {"item_id": "b", "event": "5", "ts": 2.0}]  # row ids kept: same tie order
        log.append("u", "d", ts=2.0)  # no kind: the migrated table takes NULL
        assert [e["event"] for e in log.events("u")] == ["4", "5", None]
        assert len(log) == 4
    assert _schema_version(db) == SCHEMA_VERSION
    raw = sqlite3.connect(db)
    plan = raw.execute("EXPLAIN QUERY PLAN SELECT item_id FROM kdaliens_events WHERE user_id = 'u' AND ts < 3"
                       " ORDER BY ts").fetchall()
    raw.close()
    assert any("kdaliens_events_user_ts" in str(row) for row in plan)  # the index survived the rebuild


def test_app_database_without_kdaliens_tables_is_migrated(tmp_path):
    # Version 0: an existing SQLite file of the host app, with its own table and user_version.
    db = tmp_path / "app.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE app_settings (k TEXT PRIMARY KEY, v TEXT)")
    raw.execute("INSERT INTO app_settings VALUES ('theme', 'dark')")
    raw.execute("PRAGMA user_version = 42")
    raw.commit()
    raw.close()
    with ItemCache(db) as cache:
        cache.upsert([{"item_id": 1}])
    assert _schema_version(db) == SCHEMA_VERSION
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT v FROM app_settings").fetchone() == ("dark",)
    assert raw.execute("PRAGMA user_version").fetchone() == (42,)  # the app's, left alone
    raw.close()
    with BehaviorLog(db) as log, ItemCache(db) as cache:
        assert 1 in cache and len(log) == 0


def test_newer_schema_raises_naming_the_file(tmp_path):
    db = tmp_path / "device.db"
    BehaviorLog(db).close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE kdaliens_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    raw.commit()
    raw.close()
    for cls in (BehaviorLog, ItemCache):
        with pytest.raises(StoreError, match="newer than this SDK") as info:
            cls(db)
        assert str(db) in str(info.value)
        assert isinstance(info.value, KdaliensError)


def test_not_sqlite_raises_naming_the_file(tmp_path):
    db = tmp_path / "notes.db"
    db.write_bytes(b"this is not a SQLite database, just some text\n" * 200)
    for cls in (BehaviorLog, ItemCache):
        with pytest.raises(StoreError, match="not a SQLite database") as info:
            cls(db)
        assert str(db) in str(info.value)
    assert db.read_bytes().startswith(b"this is not")  # left untouched
    with pytest.raises(StoreError, match="cannot open"):
        BehaviorLog(tmp_path / "no-such-dir" / "device.db")


def test_attributes_are_stored_as_json(tmp_path):
    db = tmp_path / "device.db"
    with ItemCache(db) as cache:
        cache.upsert([{"item_id": 1, "title": "Amélie", "tags": ["a"]}])
    raw = sqlite3.connect(db)
    (attrs,) = raw.execute("SELECT attrs FROM kdaliens_items WHERE item_id = '1'").fetchone()
    raw.close()
    assert json.loads(attrs) == {"title": "Amélie", "tags": ["a"]}


# --------------------------------------------------------------------------------------
# Imports


def test_stores_import_with_heavy_modules_blocked(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        for name in ("torch", "pandas", "onnxruntime", "executorch", "ai_edge_litert", "tflite_runtime"):
            sys.modules[name] = None  # any import of these now raises ImportError
        from kdaliens.sdk.stores import BehaviorLog, ItemCache
        db = sys.argv[1]
        with ItemCache(db) as cache, BehaviorLog(db) as log:
            cache.upsert([{"item_id": 1}])
            log.append("u", 1, ts=1.0)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pandas", "onnxruntime", "executorch")
                       and sys.modules[m] is not None)
        assert not heavy, heavy
        print("ok")
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "device.db")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_many_open_close_cycles_do_not_leak_threads_connections(tmp_path):
    # Connections of finished threads are closed when the next thread opens one.
    log = BehaviorLog(tmp_path / "device.db")
    for i in range(20):
        t = threading.Thread(target=log.append, args=("u", i), kwargs={"ts": float(i)})
        t.start()
        t.join()
    assert len(log._conns) <= 2
    assert len(log) == 20
    log.close()
    assert os.path.exists(tmp_path / "device.db")


def test_writer_waits_at_most_busy_timeout_and_readers_never_block(tmp_path):
    db = tmp_path / "device.db"
    log = BehaviorLog(db, busy_timeout=0.2)
    log.append("u", 1, ts=1.0)
    other = sqlite3.connect(db, isolation_level=None)  # another process's writer, holding the write lock
    other.execute("BEGIN IMMEDIATE")
    try:
        start = time.perf_counter()
        with pytest.raises(StoreError, match="timed out after 0.2 s"):
            log.append("u", 2, ts=2.0)
        assert time.perf_counter() - start < 2.0
        assert [e["item_id"] for e in log.events("u")] == ["1"]  # WAL: reads go on meanwhile
    finally:
        other.execute("ROLLBACK")
        other.close()
    log.append("u", 2, ts=2.0)  # the failed write left no transaction open
    assert len(log) == 2
    log.close()


def test_item_generation_changes_on_every_write_by_anyone(tmp_path):
    clock = [100.0]
    db = tmp_path / "device.db"
    cache = ItemCache(db, ttl_seconds=10, clock=lambda: clock[0])
    other = ItemCache(db, ttl_seconds=10, clock=lambda: clock[0])
    g0 = cache.generation()
    cache.upsert([{"item_id": 1, "year": 1995}])
    g1 = cache.generation()
    assert g1 != g0 and other.generation() == g1
    cache.get_many([1]), len(cache), 1 in cache  # reads change nothing
    assert cache.generation() == g1
    other.upsert([{"item_id": 2}])
    g2 = cache.generation()
    assert g2 != g1
    assert cache.evict_expired() == 0 and cache.generation() == g2  # nothing removed
    clock[0] += 11
    assert cache.evict_expired() == 2 and cache.generation() != g2
    assert cache.get_many_timed([1, 2]) == {}
    cache.upsert([{"item_id": 3, "tags": ["a"]}])
    assert cache.get_many_timed(["3", 4]) == {"3": ({"item_id": "3", "tags": ["a"]}, clock[0])}
