"""The Ranker's kept encodings (candidates, histories, time gaps) feed the model exactly
what a fresh encoding of the same stores would, through every kind of change."""

from __future__ import annotations

import numpy as np
import pytest

from kdaliens.sdk import InputError, Ranker
from kdaliens.sdk.readers import MemoryEvents, MemoryItems, VersionedItemReader
from kdaliens.sdk.stores import BehaviorLog, ItemCache
from kdaliens.training.data import load_dataset


class _Events:
    """A plain EventReader (no sampled_columns): the Ranker reads, sorts and samples every call."""

    def __init__(self, log: BehaviorLog, user):
        self.user, self.rows = str(user), log.events(user)

    def events(self, user_id, before=None):
        return [e for e in self.rows if before is None or e["ts"] < before] if str(user_id) == self.user else []


class _Attrs:
    """A plain ItemReader (no generation): the Ranker encodes everything it reads each call."""

    def __init__(self, cache: ItemCache):
        self.items = cache.get_many(cache.item_ids())

    def get_many(self, ids):
        return {k: self.items[k] for k in map(str, ids) if k in self.items}


def _same_inputs(ranker: Ranker, user, cands, cache, log, feats, now):
    got, n_got, n, firsts, shares = ranker._fast_inputs(user, list(cands), cache, log, feats, now)
    keys, want_firsts = ranker._dedupe(ranker._keys(list(cands)))
    assert n == len(keys) and (firsts is None) == (want_firsts is None)
    plain_log = _Events(log, user) if log is not None else None
    want, n_want, want_shares = ranker._plain_inputs(user, keys, _Attrs(cache) if cache is not None else None,
                                                     plain_log, feats, now)
    assert n_got == n_want and shares == want_shares  # the unknown shares (meta) agree too
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], np.asarray(want[name], dtype=got[name].dtype), err_msg=name)
    return n_got


@pytest.fixture()
def device(et_bundle, tmp_path):
    ds = load_dataset("movielens-100k")
    items = ds.items.head(400).to_dict("records")
    clock = [1_000.0]
    db = tmp_path / "device.db"
    cache = ItemCache(db, ttl_seconds=10_000, clock=lambda: clock[0])
    cache.upsert(items)
    log = BehaviorLog(db)
    ranker = Ranker.load(et_bundle)
    kinds = ranker.spec.event_vocab
    rng = np.random.default_rng(0)
    ids = [str(i["item_id"]) for i in items]
    log.extend({"user_id": "u", "item_id": ids[int(i)], "event": kinds[int(rng.integers(len(kinds)))],
                "ts": float(t)} for i, t in zip(rng.integers(0, 300, size=700), np.sort(rng.uniform(0, 9e5, 700))))
    return ranker, cache, log, ids, clock, db


def test_kept_encodings_follow_time_writes_and_expiry(device):
    ranker, cache, log, ids, clock, db = device
    cands = ids[250:350] + ["not-cached"]
    feats = {"age": 31, "gender": "F", "occupation": "writer"}
    # Time moves on (across bucket boundaries, and back), the history stays the same.
    for now in (9e5 + 1, 9e5 + 30, 9e5 + 59.5, 9e5 + 61, 9e5 + 3_000, 9e5 + 1e6, 9e5 + 2, 9e5 + 700_000):
        assert _same_inputs(ranker, "u", cands, cache, log, feats, now) == ranker.spec.history.length
    # A request in the past sees a shorter history.
    _same_inputs(ranker, "u", cands, cache, log, feats, 1_000.0)
    # New events from another connection (another process would do the same).
    other_log = BehaviorLog(db)
    other_log.append("u", ids[7], event=ranker.spec.event_vocab[0], ts=9.5e5)
    _same_inputs(ranker, "u", cands, cache, log, feats, 9.6e5)
    # An item in the history changes attributes (another connection).
    hist_item = log.events("u")[-1]["item_id"]
    other = ItemCache(db, ttl_seconds=10_000, clock=lambda: clock[0])
    row = cache.get(hist_item)
    other.upsert([{**row, "release_year": "1931", "class": "Western"}])
    _same_inputs(ranker, "u", cands, cache, log, feats, 9.6e5)
    # Everything but the re-upserted items expires, with no write.
    clock[0] += 9_000
    other.upsert([{**cache.get(i), "item_id": i} for i in ids[300:320]])
    clock[0] += 2_000
    _same_inputs(ranker, "u", cands, cache, log, feats, 9.6e5)
    # No cache, no log, a new user.
    _same_inputs(ranker, "u", cands, None, log, None, 9.6e5)
    _same_inputs(ranker, "u", cands, cache, None, feats, 9.6e5)
    assert _same_inputs(ranker, "new-user", cands, cache, log, feats, 9.6e5) == 0


def test_rerank_is_the_same_through_kept_and_fresh_encodings(device):
    ranker, cache, log, ids, _, _ = device
    cands = ids[:120]
    fresh = ranker.rerank("u", cands, cache=_Attrs(cache), log=_Events(log, "u"), now=1e6)
    for _ in range(3):
        got = ranker.rerank("u", cands, cache=cache, log=log, now=1e6)
        assert got == fresh
    mem = MemoryItems(cache.get_many(cache.item_ids()))  # versioned too: its rows are kept
    assert isinstance(mem, VersionedItemReader)
    for _ in range(2):
        assert ranker.rerank("u", cands, cache=mem, log=log, now=1e6) == fresh
        # MemoryEvents hands over only the kept events too (unsorted input: the encoder's order)
        shuffled = MemoryEvents({"u": log.events("u")[::-1]})
        assert ranker.rerank("u", cands, cache=mem, log=shuffled, now=1e6) == fresh
    assert got.meta["runtime"].startswith("executorch ") and got.meta["runtime"] == fresh.meta["runtime"]


def test_memoized_candidate_ids_keep_their_checks(device):
    ranker, cache, log, ids, _, _ = device
    first = ranker.rerank("u", [int(i) for i in ids[:20]], cache=cache, log=log, now=1e6)  # int ids memoized
    again = ranker.rerank("u", [int(i) for i in ids[:20]], cache=cache, log=log, now=1e6)
    assert first == again and all(type(i) is int for i, _ in again)
    with pytest.raises(InputError, match="string or int"):
        ranker.rerank("u", [True, int(ids[0])], cache=cache, log=log, now=1e6)  # True == 1, but not an id
    mixed = ranker.rerank("u", [ids[0], int(ids[0]), np.int64(ids[1]), float(ids[2])], cache=cache, log=log, now=1e6)
    assert sorted(map(str, (i for i, _ in mixed))) == sorted([ids[0], ids[1], str(float(ids[2]))])
    assert len(mixed) == 3  # "x" and int x are one id, kept at its first place
    repeat = [ids[0], int(ids[0]), ids[1], int(ids[1]), ids[0]]
    a = ranker.rerank("u", repeat, cache=cache, log=log, now=1e6)
    b = ranker.rerank("u", repeat, cache=cache, log=log, now=1e6)  # every form memoized: the lookup path
    assert a == b and [i for i, _ in a] in ([ids[0], ids[1]], [ids[1], ids[0]])
