"""BehaviorLog.sampled_events: exactly events()[positions], kept current under every kind of write."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kdaliens.sdk.history import HistorySampler, HistorySpec
from kdaliens.sdk.stores import TIMELINE_USERS, BehaviorLog

SAMPLER = HistorySampler(HistorySpec(short_len=4, long_len=3, seed=11))


def _expected(log: BehaviorLog, user, before: float) -> list[dict]:
    ev = log.events(user, before=before)
    return [ev[j] for j in SAMPLER.positions(len(ev)).tolist()]


def _check(log: BehaviorLog, user, befores) -> None:
    for b in befores:
        assert log.sampled_events(user, before=b, positions=SAMPLER.positions) == _expected(log, user, b), b


def test_matches_events_for_any_cutoff_and_tied_times(tmp_path):
    rng = np.random.default_rng(0)
    log = BehaviorLog(tmp_path / "log.db")
    ts = np.round(rng.uniform(0, 100, size=300))  # many equal timestamps: append order breaks ties
    log.extend({"user_id": "u", "item_id": int(i), "event": f"e{i % 3}", "ts": float(t)}
               for i, t in zip(rng.integers(0, 50, size=300), ts))
    _check(log, "u", [-1.0, 0.0, 0.5, 10.0, 50.0, 99.0, 100.0, float("inf")])
    assert log.sampled_events("nobody", before=1e9, positions=SAMPLER.positions) == []


def test_own_writes_other_connections_and_processes_are_seen(tmp_path):
    db = tmp_path / "log.db"
    log = BehaviorLog(db)
    log.extend({"user_id": "u", "item_id": i, "ts": float(i)} for i in range(40))
    _check(log, "u", [100.0])
    log.append("u", 1000, ts=50.0)  # this object, this thread's connection
    _check(log, "u", [100.0, 50.0, 51.0])
    other = BehaviorLog(db)  # another connection of this process
    other.extend([{"user_id": "u", "item_id": 2000, "ts": 60.0}, {"user_id": "u", "item_id": 2001, "ts": 5.5}])
    _check(log, "u", [100.0, 6.0])  # the second one is back-filled into the past
    code = textwrap.dedent(f"""
        from kdaliens.sdk.stores import BehaviorLog
        BehaviorLog({str(db)!r}).extend([{{"user_id": "u", "item_id": 3000 + i, "ts": 70.0 + i}} for i in range(5)])
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    _check(log, "u", [100.0, 72.0])
    assert len(log.events("u")) == 48


def test_trims_by_another_writer_drop_the_oldest(tmp_path):
    db = tmp_path / "log.db"
    log = BehaviorLog(db)
    log.extend({"user_id": "u", "item_id": i, "ts": float(i)} for i in range(30))
    _check(log, "u", [100.0])
    capped = BehaviorLog(db, max_events_per_user=12)
    for i in range(30, 35):  # each append trims the user's log back to its newest 12
        capped.append("u", i, ts=float(i))
        _check(log, "u", [100.0, 33.0])
    assert [e["item_id"] for e in log.events("u")] == [str(i) for i in range(23, 35)]


def test_timelines_kept_are_bounded(tmp_path):
    log = BehaviorLog(tmp_path / "log.db")
    users = TIMELINE_USERS + 20
    log.extend({"user_id": f"u{u}", "item_id": u, "ts": 1.0} for u in range(users))
    for u in range(users):
        _check(log, f"u{u}", [2.0])
    assert len(log._timelines) == TIMELINE_USERS


@pytest.mark.parametrize("n_events", [10, 2_000])
def test_ranker_reads_the_same_history_either_way(et_bundle, tmp_path, n_events):
    """The Ranker's fast path (sampled_events) and the plain one (events) feed the model the same."""
    from kdaliens.sdk import Ranker
    from kdaliens.sdk.readers import MemoryEvents

    ranker = Ranker.load(et_bundle)
    vocab = list(ranker.spec.item_field(ranker.spec.item_id_field).vocab)
    rng = np.random.default_rng(n_events)
    log = BehaviorLog(tmp_path / "log.db")
    rows = [{"user_id": "u", "item_id": vocab[int(i)], "event": ranker.spec.event_vocab[0], "ts": float(t)}
            for i, t in zip(rng.integers(0, len(vocab), size=n_events), np.sort(rng.uniform(0, 1e6, size=n_events)))]
    log.extend(rows)
    memory = MemoryEvents({"u": log.events("u")})  # sampled_columns over a dict

    class Plain:  # an EventReader with events() alone: the Ranker samples and encodes every call
        def events(self, user_id, before=None):
            return memory.events(user_id, before=before)

    cands = vocab[:50]
    for now in (5e5, 1e6 + 1):
        a = ranker.rerank("u", cands, log=log, now=now)
        b = ranker.rerank("u", cands, log=Plain(), now=now)
        c = ranker.rerank("u", cands, log=memory, now=now)
        assert list(a) == list(b) == list(c) and a.meta["n_history"] == b.meta["n_history"] == c.meta["n_history"] > 0
