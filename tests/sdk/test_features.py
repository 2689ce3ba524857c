from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdaliens.sdk import (
    CategoricalField,
    FeatureEncoder,
    FeatureSpec,
    HistorySpec,
    InputError,
    MultiField,
    NumericField,
    normalize_token,
    stable_hash,
)

VOCAB = ("10", "20", "30", "abc")
GENRES = ("Action", "Comedy", "Drama")


def make_spec(**kw) -> FeatureSpec:
    return FeatureSpec(
        user_fields=(CategoricalField("gender", vocab=("F", "M")), NumericField("age", boundaries=(18, 30, 50)),
                     CategoricalField("zip", hash_buckets=50)),
        item_fields=(CategoricalField("item_id", vocab=VOCAB), NumericField("year", boundaries=(1980, 1995)),
                     MultiField("genres", max_len=3, vocab=GENRES)),
        event_vocab=("click", "buy"),
        history=kw.pop("history", HistorySpec(short_len=3, long_len=2, seed=7)),
        **kw,
    )


def test_fnv1a_known_values():
    # Published FNV-1a 32-bit test vectors; the Java port must give the same.
    assert stable_hash("") == 0x811C9DC5
    assert stable_hash("a") == 0xE40C292C
    assert stable_hash("foobar") == 0xBF9CF968


def test_normalize_token_equates_spellings():
    assert normalize_token(7) == normalize_token(7.0) == normalize_token("7") == normalize_token(" 7 ") == "7"
    assert normalize_token(np.int32(7)) == "7"
    assert normalize_token(None) is None and normalize_token(float("nan")) is None and normalize_token("") is None
    assert normalize_token(1.5) == "1.5"
    with pytest.raises(InputError):
        normalize_token(object())


def test_encode_items_ids_buckets_multi():
    enc = FeatureEncoder(make_spec())
    out = enc.encode_items([
        {"item_id": 20, "year": 1995, "genres": "Drama Action"},
        {"item_id": "zzz", "year": None, "genres": ["Comedy", "Unknown", "Drama", "Action"]},
        {"item_id": "abc"},
    ])
    assert out["item_id"].tolist() == [3, 1, 5]  # vocab index + 2, OOV = 1
    assert out["year"].tolist() == [4, 1, 1]  # 1995 -> bisect_right=2 -> 4; missing -> 1
    assert out["genres"].tolist() == [[4, 2, 0], [3, 1, 4], [0, 0, 0]]
    assert all(v.dtype == np.int64 for v in out.values())


def test_spec_json_round_trip():
    spec = make_spec()
    again = FeatureSpec.from_json(spec.to_json())
    assert again.to_dict() == spec.to_dict()
    assert json.loads(spec.to_json())["history"] == {"short_len": 3, "long_len": 2, "seed": 7}


def test_spec_errors_are_clear():
    with pytest.raises(InputError, match="item id field"):
        FeatureSpec(user_fields=(), item_fields=(CategoricalField("x", vocab=("a",)),))
    with pytest.raises(InputError, match="strictly increasing"):
        NumericField("n", boundaries=(3, 1))
    with pytest.raises(InputError, match="format_version"):
        FeatureSpec.from_dict({**make_spec().to_dict(), "format_version": 99})
    with pytest.raises(InputError, match="exactly one"):
        CategoricalField("c")
    with pytest.raises(InputError, match="list of dicts"):
        FeatureEncoder(make_spec()).encode_items({"item_id": 1})


tokens = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8), st.sampled_from(VOCAB), st.none(),
                   st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({"item_id": tokens, "year": tokens,
                                       "genres": st.one_of(st.none(), st.lists(st.sampled_from(GENRES + ("x",)),
                                                                               max_size=6))}), max_size=20))
def test_encoder_properties(rows):
    enc = FeatureEncoder(make_spec())
    a = enc.encode_items(rows)
    b = FeatureEncoder(make_spec()).encode_items(rows)
    # Deterministic, across encoder instances.
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    spec = enc.spec
    for f in spec.item_fields:
        arr = a[f.name]
        assert arr.shape[0] == len(rows)
        assert ((arr >= 0) & (arr < f.cardinality)).all()
    for i, r in enumerate(rows):
        tok = normalize_token(r["item_id"]) if not isinstance(r["item_id"], float) or np.isfinite(r["item_id"]) else None
        expect = VOCAB.index(tok) + 2 if tok in VOCAB else 1  # OOV
        assert a["item_id"][i] == expect
        g = r["genres"] or []
        row = a["genres"][i]
        # Padding: exactly the first min(len, max_len) slots are filled, rest are 0.
        n = min(len(g), 3)
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
        for j in range(n):
            assert row[j] == (GENRES.index(g[j]) + 2 if g[j] in GENRES else 1)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.integers(1, 1000))
def test_hash_fields_stay_in_range_and_are_stable(token, buckets):
    f = CategoricalField("h", hash_buckets=buckets)
    i = f.encode_one(token)
    assert i == f.encode_one(token)
    if normalize_token(token) is None:
        assert i == 1
    else:
        assert 2 <= i < buckets + 2
        assert i == 2 + stable_hash(normalize_token(token)) % buckets


def test_encode_user_and_odd_values():
    enc = FeatureEncoder(make_spec())
    u = enc.encode_user({"gender": "F", "age": "41", "zip": 12345, "unknown_key": [1, 2]})
    assert u["gender"].tolist() == [2] and u["age"].tolist() == [4]
    assert 2 <= u["zip"][0] < 52
    empty = enc.encode_user(None)
    assert empty["gender"].tolist() == [1] and empty["age"].tolist() == [1]
    with pytest.raises(InputError):
        enc.encode_user(["not", "a", "dict"])


def test_encode_history_pads_masks_and_uses_only_the_past():
    spec = make_spec()
    enc = FeatureEncoder(spec)
    attrs = {10: {"year": 1990, "genres": "Drama"}, "20": {"year": 2001, "genres": ["Action"]}}
    events = [
        {"item_id": 20, "ts": 100.0, "event": "click"},
        {"item_id": 10, "ts": 50.0, "event": "buy"},
        {"item_id": 30, "ts": 500.0, "event": "click"},  # after "now": must be dropped
    ]
    h = enc.encode_history(events, now=200.0, item_attributes=attrs)
    L = spec.history.length
    assert all(v.shape[0] == L for v in h.values())
    assert h["hist_mask"].tolist() == [False, False, False, True, True]
    assert h["hist_item_id"].tolist() == [0, 0, 0, 2, 3]  # time order: item 10, then 20
    assert h["hist_genres"][-2:].tolist() == [[4, 0, 0], [2, 0, 0]]
    assert h["hist_event"].tolist() == [0, 0, 0, 3, 2]
    # gaps: 150 s -> bucket 2+1, 100 s -> 2+1 with default boundaries (60, 600, ...)
    assert h["hist_time_gap"].tolist() == [0, 0, 0, 3, 3]
    empty = enc.encode_history([], now=1.0)
    assert not empty["hist_mask"].any() and (empty["hist_item_id"] == 0).all()
    with pytest.raises(InputError, match="ts"):
        enc.encode_history([{"item_id": 1}], now=1.0)


def test_event_without_kind_reads_as_the_default_kind():
    # "buy" encodes to 3, "click" to 2; an unknown kind is OOV (1).
    enc = FeatureEncoder(make_spec(default_event="buy"))
    assert enc.encode_events([None, "click", "buy", "view"]).tolist() == [3, 2, 3, 1]
    h = enc.encode_history([{"item_id": 10, "ts": 1.0}, {"item_id": 20, "ts": 2.0, "event": None},
                            {"item_id": 30, "ts": 3.0, "event": "click"}], now=10.0)
    assert h["hist_event"][-3:].tolist() == [3, 3, 2]
    # Without a default (a spec written before there was one) no kind is OOV, as an unknown kind.
    assert FeatureEncoder(make_spec()).encode_events([None, "view"]).tolist() == [1, 1]
    spec = make_spec(default_event="buy")
    assert FeatureSpec.from_json(spec.to_json()).default_event == "buy"
    assert "default_event" not in make_spec().to_dict()
    with pytest.raises(InputError, match="default_event"):
        make_spec(default_event="view")  # not in the vocabulary
    with pytest.raises(InputError, match="default_event"):
        make_spec(default_event=3)


def test_bool_and_int_tokens_do_not_share_the_memo():
    # True == 1 as a dict key; the encoder's memo must not let one answer for the other.
    field = CategoricalField("flag", vocab=("1", "true"))
    assert [field.encode_one(v) for v in (1, True, 1, True)] == [2, 3, 2, 3]
    assert [field.encode_one(v) for v in (np.True_, 1)] == [3, 2]
