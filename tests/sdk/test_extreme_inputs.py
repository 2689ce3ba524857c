"""Extreme values at the SDK's public API end in a typed error (issue 15).

One regression test per way a probe got an untyped exception out of the SDK:

1. ints beyond float range (``10**400``) or over Python's 4,300-digit int->str limit
   (``10**5000``: even ``repr`` of it raises), and NaN / infinities, as ids, times,
   ``now`` and attribute values;
2. lone surrogates (``"\\ud800"``), which UTF-8 (SQLite, the hash) cannot encode;
3. objects that are not item or event readers passed as ``cache`` / ``log``;
4. rows that another program wrote into the store's tables.

Every case expects a :class:`KdaliensError` of the documented type; anything else
propagates and fails the test.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from kdaliens.sdk import (
    BehaviorLog,
    FeatureEncoder,
    HistorySampler,
    HistorySpec,
    InputError,
    ItemCache,
    KdaliensError,
    Ranker,
    StoreError,
    normalize_token,
    stable_hash,
)
from kdaliens.sdk.readers import MemoryEvents, MemoryItems

BIG = 10**400  # beyond float range; its digits still print
HUGE = 10**5000  # over the int->str limit: str(HUGE) and repr(HUGE) raise ValueError
HUGE_BITS = HUGE.bit_length()
SURROGATE = "\ud800"
NON_FINITE = [math.nan, math.inf, -math.inf]


def _typed(call, *args, kind: type[KdaliensError] = InputError, match: str | None = None, **kwargs) -> KdaliensError:
    """Run ``call(*args, **kwargs)``; it must raise ``kind``. Any other exception propagates and fails the test."""
    with pytest.raises(KdaliensError) as e:
        call(*args, **kwargs)
    assert isinstance(e.value, kind), f"{type(e.value).__name__} is not {kind.__name__}: {e.value}"
    if match is not None:
        assert match in str(e.value), str(e.value)
    return e.value


@pytest.fixture(scope="module")
def ranker(onnx_bundle):
    return Ranker.load(onnx_bundle)


@pytest.fixture(scope="module")
def vocab(onnx_bundle):
    m = json.loads((onnx_bundle / "manifest.json").read_text())
    spec = m["feature_spec"]
    return next(f for f in spec["item_fields"] if f["name"] == spec["item_id_field"])["vocab"][:20]


@pytest.fixture
def stores(tmp_path, vocab):
    db = tmp_path / "device.db"
    cache, log = ItemCache(db), BehaviorLog(db)
    cache.upsert([{"item_id": i, "release_year": 1990, "class": ["Drama"]} for i in vocab])
    log.extend({"user_id": "u", "item_id": i, "ts": float(t)} for t, i in enumerate(vocab[:5], 1))
    yield db, cache, log
    cache.close()
    log.close()


# ------------------------------------------------------------------ 1. huge ints, NaN, infinities
def test_huge_ints_as_ids_are_input_errors_described_by_their_size(stores):
    _, cache, log = stores
    for call in [
        lambda: log.append(HUGE, "1", ts=1.0),
        lambda: log.append("u", HUGE, ts=1.0),
        lambda: log.extend([{"user_id": "u", "item_id": HUGE}]),
        lambda: log.events(HUGE),
        lambda: cache.upsert([{"item_id": HUGE}]),
        lambda: cache.get(HUGE),
        lambda: cache.get_many([1, HUGE]),
        lambda: normalize_token(HUGE),
    ]:
        _typed(call, match=f"an int of {HUGE_BITS} bits")
    assert HUGE not in cache
    # Big ints that print are ids like any other (the Android port reads them as BigInteger).
    log.append("u", BIG, ts=9.0)
    assert log.events("u")[-1]["item_id"] == str(BIG)
    cache.upsert([{"item_id": -BIG, "n": BIG}])
    assert cache.get(-BIG) == {"item_id": str(-BIG), "n": BIG}


def test_huge_ints_and_non_finite_numbers_as_times_are_input_errors(stores):
    _, _, log = stores
    for bad in [BIG, -BIG, HUGE, *NON_FINITE]:
        _typed(log.append, "u", "1", ts=bad, match="ts must be")
        _typed(log.extend, [{"user_id": "u", "item_id": "1", "ts": bad}], match="event #0: ts must be")
    for bad in [BIG, -BIG, HUGE, math.nan]:
        _typed(log.events, "u", before=bad, match="before must be")
        _typed(log.sampled_events, "u", before=bad, positions=np.arange, match="before must be")
    assert log.events("u", before=math.inf) == log.events("u")  # +inf: no cutoff
    assert len(log.events("u", limit=BIG)) == 5  # a limit past any count is no limit


def test_huge_values_in_rerank_are_input_errors(ranker, stores, vocab):
    _, cache, log = stores
    for c, lg in [(None, None), (cache, log), (MemoryItems({}), MemoryEvents({}))]:
        for bad in [BIG, -BIG, HUGE, *NON_FINITE, True]:
            _typed(ranker.rerank, "u", vocab[:3], cache=c, log=lg, now=bad, match="now must be")
        _typed(ranker.rerank, "u", [vocab[0], HUGE], cache=c, log=lg, now=10.0,
               match=f"candidates[1]: cannot use an int of {HUGE_BITS} bits")
        _typed(ranker.rerank, HUGE, vocab[:3], cache=c, log=lg, now=10.0, match="user_id")
        _typed(ranker.rerank, "u", vocab[:3], cache=c, log=lg, now=10.0, k=-HUGE,
               match=f"k must be None or an int >= 0, got an int of {HUGE_BITS} bits")
        _typed(ranker.rerank, "u", vocab[:3], cache=c, log=lg, now=10.0, user_features={"gender": HUGE})
        # Numbers past float range are out of every bucket, as "1e400" is: scored, not refused.
        for big in [BIG, -BIG, HUGE]:
            out = ranker.rerank("u", vocab[:3], cache=c, log=lg, now=10.0, user_features={"age": big}, k=HUGE)
            assert len(out) == 3 and not out.meta["fallback"]
        assert len(ranker.rerank(BIG, [BIG, -BIG], cache=c, log=lg, now=10.0)) == 2


def test_huge_attribute_values_are_refused_or_out_of_vocabulary(ranker, stores, vocab):
    _, cache, log = stores
    _typed(lambda: cache.upsert([{"item_id": "x", "release_year": HUGE}]), match="cannot be stored as JSON")
    _typed(lambda: cache.upsert([{"item_id": "x", "class": [[HUGE]]}]), match="cannot be stored as JSON")
    cache.upsert([{"item_id": vocab[0], "release_year": BIG, "class": [BIG, -BIG]}])
    assert len(ranker.rerank("u", vocab[:3], cache=cache, log=log, now=10.0)) == 3
    enc = ranker.encoder
    assert enc.encode_items([{"release_year": BIG}])["release_year"].tolist() == [1]  # OOV, like "1e400"
    _typed(lambda: enc.encode_items([{"item_id": HUGE}]), match=f"an int of {HUGE_BITS} bits")
    _typed(lambda: stable_hash(5), match="stable_hash takes a str")


def test_sampler_counts_and_seeds_out_of_range_are_input_errors():
    s = HistorySampler(HistorySpec(short_len=3, long_len=2))
    for n in [HUGE, BIG, 2**63, 10**12, -1, 2.5, "3", None, math.nan]:
        _typed(s.positions, n, match="n_past")
        _typed(s.sample, n, match="n_past")
    for seed in [HUGE, 2**64, -1, 1.5, "7", math.inf]:
        _typed(s.positions, 10, seed, match="seed")
    for arr in [np.array([1, -1]), np.array([2**63], dtype=np.uint64), np.array([math.nan]), np.array(["a"]),
                np.array([{}]), [HUGE], np.array([1e30])]:
        _typed(s.sample_batch, arr, match="n_past")
    _typed(lambda: HistorySpec(seed=HUGE), match=f"an int of {HUGE_BITS} bits")
    _typed(lambda: HistorySpec(short_len="3"))
    _typed(lambda: HistorySpec.from_dict({"short_len": math.inf}))
    _typed(lambda: HistorySpec.from_dict({"seed": HUGE}), match=f"an int of {HUGE_BITS} bits")
    assert s.sample(np.int64(4))[1].sum() == 4 and s.sample_batch(np.array([3.0, 7.0]))[1].sum() == 8


def test_encoder_times_are_checked(ranker):
    enc = ranker.encoder
    ev = [{"item_id": "1", "ts": 1.0}]
    for bad in [BIG, HUGE, "10", None, *NON_FINITE]:
        _typed(enc.encode_history, ev, now=bad, match="now must be")
    for now, ts in [(BIG, [1.0]), (1.0, [HUGE]), ("x", [1.0]), (1.0, [[1.0], [2.0, 3.0]]), (1.0, [{}])]:
        _typed(enc.encode_time_gaps, now, ts)
    # Out-of-range or unusable event times are out of the history, as before.
    _typed(lambda: enc.encode_history([{"item_id": "1", "ts": HUGE}], now=5.0), match="no usable 'ts'")


# ------------------------------------------------------------------ 2. lone surrogates
def test_lone_surrogates_are_input_errors(ranker, stores, vocab):
    _, cache, log = stores
    for call in [
        lambda: log.append(SURROGATE, "1", ts=1.0),
        lambda: log.append("u", "a" + SURROGATE, ts=1.0),
        lambda: log.append("u", "1", event="click" + SURROGATE, ts=1.0),
        lambda: log.events(SURROGATE),
        lambda: log.sampled_events(SURROGATE, before=5.0, positions=np.arange),
        lambda: cache.upsert([{"item_id": SURROGATE}]),
        lambda: cache.upsert([{"item_id": "1", "title": SURROGATE}]),
        lambda: cache.upsert([{"item_id": "1", SURROGATE: 1}]),
        lambda: cache.upsert([{"item_id": "1", "tags": {"k": [SURROGATE]}}]),
        lambda: cache.get(SURROGATE),
        lambda: cache.get_many([SURROGATE]),
        lambda: normalize_token(SURROGATE),
        lambda: stable_hash(SURROGATE),
        lambda: ranker.encoder.encode_items([{"class": ["Drama", SURROGATE]}]),
        lambda: ranker.encoder.encode_events(["click", SURROGATE]),
    ]:
        _typed(call, match="surrogate")
    assert SURROGATE not in cache
    for c, lg in [(None, None), (cache, log), (MemoryItems({}), MemoryEvents({}))]:
        _typed(ranker.rerank, SURROGATE, vocab[:3], cache=c, log=lg, now=10.0, match="surrogate")
        _typed(ranker.rerank, "u", [vocab[0], SURROGATE], cache=c, log=lg, now=10.0, match="surrogate")
        _typed(ranker.rerank, "u", vocab[:3], cache=c, log=lg, now=10.0, user_features={"gender": SURROGATE},
               match="surrogate")
    # Other non-ASCII text is fine.
    log.append("ü", "日本", event="clíck", ts=1.0)
    cache.upsert([{"item_id": "日本", "title": "Amélie"}])
    assert log.events("ü")[0]["item_id"] == "日本" and cache.get("日本")["title"] == "Amélie"
    assert len(ranker.rerank("ü", ["日本", vocab[0]], cache=cache, log=log, now=10.0)) == 2


# ------------------------------------------------------------------ 3. wrong store objects
@pytest.mark.parametrize("cache, log, names", [
    ({}, None, "cache"), (None, [], "log"), ([], {}, "cache"), ("device.db", None, "cache"),
    (None, "device.db", "log"), (5, None, "cache"), (object(), None, "cache"), (None, object(), "log"),
])
def test_objects_that_are_not_readers_are_input_errors(ranker, vocab, cache, log, names):
    e = _typed(lambda: ranker.rerank("u", vocab[:3], cache=cache, log=log, now=10.0), match=f"{names} must be")
    assert ("ItemCache" if names == "cache" else "BehaviorLog") in str(e)


def test_readers_are_duck_typed(ranker, stores, vocab):
    """An object with a reader's methods works in place of the SQLite stores."""
    _, cache, log = stores

    class Items:  # get_many only (an ItemReader)
        def get_many(self, ids):
            return cache.get_many(ids)

    class Events:  # events only (an EventReader)
        def events(self, user_id, before=None):
            return log.events(user_id, before=before)

    class Columns:  # sampled_columns only (a SampledColumnReader)
        def sampled_columns(self, user_id, before, positions):
            return log.sampled_columns(user_id, before, positions)

    class NotCallable:
        get_many = 5
        events = "x"

    want = ranker.rerank("u", vocab[:5], cache=cache, log=log, now=10.0)
    for c, lg in [(Items(), Events()), (Items(), Columns()), (cache, Events()), (Items(), log), (None, Columns())]:
        got = ranker.rerank("u", vocab[:5], cache=c if c is not None else cache, log=lg, now=10.0)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want])
    _typed(lambda: ranker.rerank("u", vocab[:3], cache=NotCallable(), now=10.0), match="cache must be")
    _typed(lambda: ranker.rerank("u", vocab[:3], log=NotCallable(), now=10.0), match="log must be")


# ------------------------------------------------------------------ 4. rows written by another program
def _raw(db, sql, *args):
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


@pytest.mark.parametrize("attrs, message", [
    ("not json", "not readable JSON"),
    ("[1, 2]", "not a JSON object"),
    ("7", "not a JSON object"),
    ("[" * 100_000, "not readable JSON"),
    ("9" * 5000, "not readable JSON"),
    (b"\xff\xfe{", "not readable JSON"),
])
def test_item_attributes_another_program_wrote_are_input_errors(ranker, stores, vocab, attrs, message):
    db, cache, log = stores
    _raw(db, "UPDATE kdaliens_items SET attrs = ? WHERE item_id = ?", attrs, vocab[1])
    for call in [lambda: cache.get(vocab[1]), lambda: cache.get_many(vocab[:3]), lambda: cache.get_many_timed([vocab[1]]),
                 lambda: ranker.rerank("u", vocab[:3], cache=cache, log=log, now=10.0)]:
        _typed(call, match=message)
    assert cache.get(vocab[2])["release_year"] == 1990  # the other rows still read


@pytest.mark.parametrize("sql, args, message", [
    ("UPDATE kdaliens_items SET updated_at = 'yesterday' WHERE item_id = ?", "item", "upsert time"),
    ("UPDATE kdaliens_items SET updated_at = x'00' WHERE item_id = ?", "item", "upsert time"),
    ("UPDATE kdaliens_meta SET value = 'many' WHERE key = 'items_generation'", None, "items_generation"),
    ("UPDATE kdaliens_meta SET value = '1.5' WHERE key = 'items_generation'", None, "items_generation"),
    ("UPDATE kdaliens_items SET seq = 'last' WHERE item_id = ?", "item", "seq"),
    ("INSERT INTO kdaliens_meta (key, value) VALUES ('items_removals', ?)", "9" * 5000, "items_removals"),
])
def test_item_numbers_another_program_wrote_are_input_errors(ranker, stores, vocab, sql, args, message):
    db, cache, log = stores
    _raw(db, sql, *([] if args is None else [vocab[1] if args == "item" else args]))
    if "updated_at" in sql:
        calls = [lambda: cache.get(vocab[1]), lambda: cache.get_many_timed([vocab[1]])]
    elif "kdaliens_meta" in sql and "generation" in sql:
        calls = [cache.generation]
    else:
        calls = [lambda: cache.changes_since((0, 0, 0))]
    for call in [*calls, lambda: ranker.rerank("u", vocab[:3], cache=cache, log=log, now=10.0)]:
        _typed(call, match=message)


@pytest.mark.parametrize("sql, message", [
    ("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES ('u', '1', 'click', 'noon')", "ts"),
    ("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES ('u', '1', 'click', x'01')", "ts"),
    ("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES ('u', '1', 'click', -1e999)", "ts"),
    ("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES ('u', x'31', 'click', 3.5)", "item_id"),
    ("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES ('u', '1', x'00', 3.5)", "event"),
    ("INSERT INTO kdaliens_events (user_id, item_id, event, ts) VALUES ('u', CAST(x'ff' AS TEXT), 'c', 3.5)",
     "not UTF-8"),
])
def test_events_another_program_wrote_are_input_errors(ranker, stores, vocab, sql, message):
    db, cache, log = stores
    ranker.rerank("u", vocab[:3], cache=cache, log=log, now=10.0)  # the timeline is kept: the write must be seen
    _raw(db, sql)
    for call in [lambda: log.events("u"), lambda: log.sampled_events("u", before=10.0, positions=np.arange),
                 lambda: ranker.rerank("u", vocab[:3], cache=cache, log=log, now=10.0)]:
        _typed(call, match=message)
    assert log.events("someone else") == []


def test_unreadable_schema_version_is_a_store_error(tmp_path):
    """The file's layout, unlike a row's value, is the store's: an unreadable version cannot be opened."""
    db = tmp_path / "device.db"
    ItemCache(db).close()
    _raw(db, "UPDATE kdaliens_meta SET value = 'one' WHERE key = 'schema_version'")
    _typed(ItemCache, db, kind=StoreError, match="unreadable kdaliens schema version")


def test_feature_spec_lookups_are_input_errors(ranker):
    _typed(lambda: ranker.spec.item_field("no such field"), match="no item field")
    _typed(lambda: FeatureEncoder(ranker.spec).encode_events("click"), match="events")
