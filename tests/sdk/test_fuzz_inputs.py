"""Fuzz the SDK's public API with arbitrary values: only a KdaliensError may come out (issue 15).

Five targets, each a bounded hypothesis test: the encoder (``FeatureEncoder.encode_*``,
``normalize_token``, ``stable_hash``), the history sampler and its spec, feature specs
read from JSON, the stores' reads and writes, and ``Ranker.rerank`` on a real bundle. Values are drawn from JSON-ish trees plus what JSON lacks: huge ints (past float
range and past Python's int->str digit limit), NaN and infinities, lone surrogates,
bytes, numpy scalars and arrays of odd dtypes, objects whose ``repr`` raises. A typed
error is counted; any other exception fails the test.

``KDALIENS_FUZZ_EXAMPLES=N`` runs N examples per target instead of the default few
hundred. ``KDALIENS_FUZZ_REPORT=FILE`` writes the counts per target to FILE (JSON); with
``KDALIENS_FUZZ_SURVEY=1`` untyped exceptions are counted there, by type and place,
instead of failing (to survey a build, not to test it).
"""

from __future__ import annotations

import copy
import json
import math
import os
import traceback
from collections import Counter, defaultdict
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdaliens.sdk
from kdaliens.sdk import (
    BehaviorLog,
    CategoricalField,
    FeatureEncoder,
    FeatureSpec,
    HistorySampler,
    HistorySpec,
    ItemCache,
    KdaliensError,
    MultiField,
    NumericField,
    Ranker,
    normalize_token,
    stable_hash,
)
from kdaliens.sdk.readers import MemoryEvents, MemoryItems

SURVEY = os.environ.get("KDALIENS_FUZZ_SURVEY") == "1"
SDK_DIR = os.path.dirname(kdaliens.sdk.__file__) + os.sep
STATS: dict[str, Counter] = defaultdict(Counter)
ESCAPES: dict[str, Counter] = defaultdict(Counter)


def _examples(default: int) -> int:
    return int(os.environ.get("KDALIENS_FUZZ_EXAMPLES", default))


def _settings(default: int):
    return settings(max_examples=_examples(default), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def _where(e: BaseException) -> str:
    """The innermost frame of the SDK (else the innermost) that the exception came through."""
    frames = traceback.extract_tb(e.__traceback__)
    sdk = [f for f in frames if f.filename.startswith(SDK_DIR)]
    f = (sdk or frames)[-1]
    return f"{type(e).__name__} at {os.path.basename(f.filename)}:{f.lineno} ({f.name})"


def _call(target: str, fn, *args, **kwargs) -> bool:
    """Run one call: True if it returned, False on a KdaliensError; anything else fails the test."""
    STATS[target]["calls"] += 1
    try:
        fn(*args, **kwargs)
        return True
    except KdaliensError as e:
        STATS[target][type(e).__name__] += 1
        return False
    except Exception as e:
        if not SURVEY:
            raise
        STATS[target]["escaped"] += 1
        ESCAPES[target][_where(e)] += 1
        return False


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("KDALIENS_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"stats": STATS, "escapes": ESCAPES}, f, indent=1, sort_keys=True)


# ------------------------------------------------------------------ values
class _BadRepr:
    def __repr__(self):
        raise RuntimeError("repr of this object fails")

    __str__ = __repr__


_DEEP: list = []
for _ in range(3000):  # deeper than the interpreter's recursion limit
    _DEEP = [_DEEP]

_EXTREMES = [
    10**400, -(10**400), 10**5000, -(10**5000), 2**63, 2**64, -(2**63) - 1, 2**53 + 1,
    math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324,
    "\ud800", "a\udfff", " \ud83d ", "", "   ", "\x00", "é", "日本", "1e400", "nan", "9" * 5000,
    b"", b"\xff\xfe", b"1", np.int64(-5), np.uint64(2**64 - 1), np.float32("nan"), np.float64(1e308),
    np.bool_(True), np.str_("x"), np.array(7), np.array([1.5, np.nan]), np.array([["a"], ["b"]]),
    np.array([None], dtype=object), np.zeros(0), np.array(["2020-01-01"], dtype="datetime64[D]"),
    np.array([1 + 2j]), Decimal("1e999"), Fraction(1, 3), 1 + 2j, object(), _BadRepr(), _DEEP, {1, 2},
    frozenset(), (1, "a"), range(3), Ellipsis,
]
# Drawn by index: a strategy's repr lists its elements, and repr(10**5000) raises.
EXTREMES = st.sampled_from(range(len(_EXTREMES))).map(lambda i: _EXTREMES[i])
TEXT = st.text(max_size=8) | st.text(st.characters(categories=["Cs", "Ll", "Nd", "Zs", "Cc"]), max_size=6)
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | TEXT | st.binary(max_size=6) | EXTREMES)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT, inner, max_size=4) | st.tuples(inner, inner), max_leaves=8)
# What JSON gives (a manifest, a config file): no bytes, no objects, but huge ints and surrogates.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT
    | st.sampled_from(range(4)).map(lambda i: [10**400, -(10**5000), "\ud800", 2**64][i]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)


def _hashable(v) -> bool:
    try:
        hash(v)
        return True
    except Exception:
        return False


def _spec() -> FeatureSpec:
    return FeatureSpec(
        user_fields=[NumericField("age", boundaries=(18.0, 30.0, 50.0)), CategoricalField("gender", vocab=("F", "M")),
                     CategoricalField("city", hash_buckets=7)],
        item_fields=[CategoricalField("item_id", vocab=tuple(str(i) for i in range(1, 30))),
                     NumericField("year", boundaries=(1980.0, 2000.0)),
                     MultiField("genres", vocab=("Drama", "Comedy"), max_len=3),
                     MultiField("tags", hash_buckets=11, max_len=2, separator="|")],
        history=HistorySpec(short_len=3, long_len=2, seed=5),
        event_vocab=("click", "buy"),
    )


SPEC = _spec()
ITEM_KEYS = st.sampled_from(["item_id", "year", "genres", "tags", "age", "gender", "city", "ts", "event"]) | TEXT
ROWS = st.lists(st.dictionaries(ITEM_KEYS, VALUES, max_size=5), max_size=4) | VALUES


# ------------------------------------------------------------------ encoder
@_settings(300)
@given(rows=ROWS, users=ROWS, events=st.lists(VALUES, max_size=5) | VALUES, now=VALUES, ts=VALUES,
       history=st.lists(st.dictionaries(ITEM_KEYS, VALUES, max_size=4), max_size=6),
       attrs=st.none() | st.dictionaries(VALUES.filter(_hashable), VALUES, max_size=3) | VALUES,
       seed=st.none() | VALUES, token=VALUES)
def test_fuzz_encoder(rows, users, events, now, ts, history, attrs, seed, token):
    enc = FeatureEncoder(SPEC)
    _call("encoder", enc.encode_items, rows)
    _call("encoder", enc.encode_users, users)
    _call("encoder", enc.encode_user, users[0] if isinstance(users, list) and users else users)
    _call("encoder", enc.encode_events, events)
    _call("encoder", enc.encode_time_gaps, now, ts)
    _call("encoder", enc.encode_history, history, now, item_attributes=attrs, seed=seed)
    _call("encoder", enc.encode_history, history, 1e9, item_attributes=lambda ids: attrs)
    _call("encoder", normalize_token, token)
    _call("encoder", stable_hash, token)


# ------------------------------------------------------------------ feature specs
def _paths(node, prefix=()):
    """Every path into a JSON tree, lists cut to their first 3 entries."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from _paths(v, prefix + (i,))


SPEC_DICT = SPEC.to_dict()
SPEC_PATHS = [p for p in _paths(SPEC_DICT) if p]


@_settings(300)
@given(data=st.data())
def test_fuzz_feature_specs(data):
    """A spec dict with 1-3 values replaced by arbitrary JSON values, or removed."""
    d = copy.deepcopy(SPEC_DICT)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(SPEC_PATHS))
        try:
            node = d
            for k in path[:-1]:
                node = node[k]
            if data.draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):  # an earlier change removed the path
            pass
    _call("spec", FeatureSpec.from_dict, d)
    try:
        text = json.dumps(d)
    except ValueError:  # an int over the digit limit: no JSON text to read
        return
    _call("spec", FeatureSpec.from_json, text)


# ------------------------------------------------------------------ sampler
_ODD_NUMBERS = [np.int8(3), np.uint64(2**63), np.float16(2.0), np.int64(-1), 2**24, 2**24 + 1]
NUMBERS = (st.integers() | st.integers(-3, 40) | st.floats() | EXTREMES | VALUES
           | st.sampled_from(range(len(_ODD_NUMBERS))).map(lambda i: _ODD_NUMBERS[i]))
_ARRAYS = [
    np.arange(5), np.array([3.0, 7.0]), np.array([1.5]), np.array([-1]), np.array([2**63], dtype=np.uint64),
    np.array([np.nan]), np.array(["3"]), np.array([{}]), np.array([True, False]), np.zeros((2, 2), dtype=np.int16),
    np.array([10**30], dtype=object), np.array([1 + 1j]), np.array(["2020"], dtype="datetime64[Y]"), np.zeros(0),
]
ARRAYS = st.sampled_from(range(len(_ARRAYS))).map(lambda i: _ARRAYS[i]) | st.lists(NUMBERS, max_size=4)
SAMPLER = HistorySampler(HistorySpec(short_len=3, long_len=2, seed=9))


@_settings(300)
@given(short=NUMBERS, long=NUMBERS, spec_seed=NUMBERS, n=NUMBERS, seed=st.none() | NUMBERS, batch=ARRAYS,
       as_dict=st.dictionaries(st.sampled_from(["short_len", "long_len", "seed"]), NUMBERS) | VALUES)
def test_fuzz_sampler(short, long, spec_seed, n, seed, batch, as_dict):
    _call("sampler", HistorySpec, short_len=short, long_len=long, seed=spec_seed)
    _call("sampler", HistorySpec.from_dict, as_dict)
    _call("sampler", SAMPLER.positions, n, seed)
    _call("sampler", SAMPLER.sample, n, seed)
    _call("sampler", SAMPLER.sample_batch, batch, seed)


# ------------------------------------------------------------------ stores
@pytest.fixture(scope="module")
def device(tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz-device") / "device.db"
    cache, log = ItemCache(db, max_items=200), BehaviorLog(db, max_events_per_user=50)
    cache.upsert([{"item_id": i, "year": 1990 + i} for i in range(1, 20)])
    log.extend({"user_id": "u", "item_id": i, "ts": float(i)} for i in range(1, 20))
    yield cache, log
    cache.close()
    log.close()


IDS = SCALARS | VALUES
LIMITS = st.none() | st.integers() | EXTREMES


@_settings(300)
@given(user=IDS, item=IDS, event=st.just("click") | VALUES, ts=st.none() | st.floats(0, 1e9) | NUMBERS,
       attrs=st.dictionaries(TEXT | VALUES.filter(_hashable), VALUES, max_size=3),
       before=st.none() | NUMBERS, limit=LIMITS, ids=st.lists(IDS, max_size=4) | VALUES)
def test_fuzz_stores(device, user, item, event, ts, attrs, before, limit, ids):
    cache, log = device
    _call("stores", log.append, user, item, event, ts)
    _call("stores", log.extend, [{"user_id": user, "item_id": item, "event": event, "ts": ts}])
    _call("stores", log.events, user, before, limit)
    _call("stores", log.sampled_events, user, 1e9 if before is None else before, SAMPLER.positions)
    _call("stores", cache.upsert, [{"item_id": item, **attrs}])
    _call("stores", cache.get, item)
    _call("stores", cache.get_many, ids)
    _call("stores", cache.item_ids, limit)
    _call("stores", cache.changes_since, ids)
    _call("stores", lambda: item in cache)


# ------------------------------------------------------------------ rerank
@pytest.fixture(scope="module")
def ranker(onnx_bundle):
    return Ranker.load(onnx_bundle)


_READERS = ["none", "store", "memory", {}, [], "device.db", 5, None, object(), b"x", math.nan, _BadRepr()]
READERS = st.sampled_from(range(len(_READERS))).map(lambda i: _READERS[i])
CANDIDATES = st.lists(st.sampled_from(["1", "50", 172, 181.0, np.int64(7)]) | IDS, max_size=6) | VALUES
FEATURES = st.none() | st.dictionaries(st.sampled_from(["age", "gender", "occupation"]) | TEXT, VALUES, max_size=3)


@_settings(300)
@given(user=IDS, cands=CANDIDATES, k=st.none() | st.integers(-2, 10) | NUMBERS,
       now=st.none() | st.floats(0, 2e9) | NUMBERS, features=FEATURES | VALUES, cache=READERS, log=READERS)
def test_fuzz_rerank(ranker, device, user, cands, k, now, features, cache, log):
    items, events = device
    memory = (MemoryItems({"1": {"release_year": 1990}}), MemoryEvents({"u": [{"item_id": "1", "ts": 1.0}]}))
    pick = {"none": (None, None), "store": (items, events), "memory": memory}
    c = pick[cache][0] if isinstance(cache, str) and cache in pick else cache
    lg = pick[log][1] if isinstance(log, str) and log in pick else log
    if _call("rerank", ranker.rerank, user, cands, cache=c, log=lg, user_features=features, k=k, now=now):
        STATS["rerank"]["ranked"] += 1
