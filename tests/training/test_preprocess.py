from __future__ import annotations

import time

import numpy as np
import pytest

from kdaliens.sdk import FeatureEncoder
from kdaliens.training.data import SplitConfig, load_dataset, load_prepared, prepare


@pytest.fixture(scope="module")
def ml():
    return load_prepared("movielens-100k")


def test_ctr_split_is_time_ordered_per_user(ml):
    last_train = {}
    for s in ("train", "val", "test"):
        d = ml.ctr[s]
        for u, t in zip(d["user"].tolist(), d["ts"].tolist()):
            if s == "train":
                last_train[u] = max(last_train.get(u, -np.inf), t)
            else:
                # No held-out interaction is earlier than a training interaction of its user.
                assert t >= last_train.get(u, -np.inf)
    sizes = {s: len(ml.ctr[s]["label"]) for s in ml.ctr}
    assert sum(sizes.values()) == 100_000
    assert 9_000 < sizes["test"] < 11_000 and 9_000 < sizes["val"] < 11_000
    # History of a sample = that user's earlier events, all before it in time.
    d = ml.ctr["test"]
    for b in range(0, len(d["label"]), 997):
        s, n = d["start"][b], d["n_past"][b]
        assert (ml.ev_user[s:s + n] == d["user"][b]).all()
        assert (ml.ev_ts[s:s + n] <= d["ts"][b]).all()


def test_ranking_leave_one_out(ml):
    te, va = ml.rank["test"], ml.rank["val"]
    assert te["items"].shape == (943, 101)
    for u_pos in range(0, 943, 50):
        u = te["user"][u_pos]
        s, e = ml.user_offsets[u], ml.user_offsets[u + 1]
        assert te["items"][u_pos, 0] == ml.ev_item[e - 1]  # last item is the test target
        assert va["items"][u_pos, 0] == ml.ev_item[e - 2]
        assert te["n_past"][u_pos] == e - s - 1
        touched = set(ml.ev_item[s:e].tolist())
        negs = te["items"][u_pos, 1:]
        assert len(set(negs.tolist())) == 100 and not touched & set(negs.tolist())


def test_vocab_from_train_only_with_oov(ml):
    vocab = set(ml.spec.item_field("item_id").vocab)
    train_items = set(ml.item_ids[ml.ctr["train"]["item"]].tolist())
    assert vocab == train_items
    unseen = [i for i, it in enumerate(ml.item_ids) if it not in vocab]
    assert unseen and (ml.item_arrays["item_id"][unseen] == 1).all()


def test_cache_round_trip_is_fast_and_equal(tmp_path):
    t0 = time.perf_counter()
    a = load_prepared("movielens-100k", cache_dir=tmp_path)
    t1 = time.perf_counter()
    b = load_prepared("movielens-100k", cache_dir=tmp_path)
    t2 = time.perf_counter()
    assert (t2 - t1) < (t1 - t0)
    assert a.spec.to_dict() == b.spec.to_dict()
    for s in a.ctr:
        for k in a.ctr[s]:
            np.testing.assert_array_equal(a.ctr[s][k], b.ctr[s][k])
    np.testing.assert_array_equal(a.rank["test"]["items"], b.rank["test"]["items"])
    assert list(a.item_ids) == list(b.item_ids)


def test_implicit_sasrec_gets_sampled_negatives(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}" for u in range(1, 31) for i in rng.choice(np.arange(1, 200), size=12, replace=False)]
    p = tmp_path / "tiny.txt"
    p.write_text("\n".join(lines) + "\n")
    prep = prepare(load_dataset(p), SplitConfig(rank_negatives=20))
    assert prep.implicit
    for s in ("train", "val", "test"):
        lab = prep.ctr[s]["label"]
        assert set(np.unique(lab).tolist()) == {0.0, 1.0} and lab.mean() == 0.5
        d = prep.ctr[s]
        for b in np.flatnonzero(lab == 0)[:50]:
            u = d["user"][b]
            touched = prep.ev_item[prep.user_offsets[u]:prep.user_offsets[u + 1]]
            assert d["item"][b] not in touched
    assert prep.rank["test"]["items"].shape == (30, 21)


def test_training_histories_equal_sdk_encoding_of_raw_events(ml):
    """Training gathers from pre-encoded arrays; a device encodes raw dicts. Same arrays."""
    enc = FeatureEncoder(ml.spec)
    ds = load_dataset("movielens-100k")
    items = {r["item_id"]: r for r in ds.items.to_dict("records")}
    d = ml.ctr["test"]
    rows = np.arange(0, len(d["label"]), 1500)
    batch = enc.gather_history(ml.event_items(), ml.ev_event, ml.ev_ts, d["start"][rows], d["n_past"][rows],
                               d["ts"][rows], seed=5)
    for j, b in enumerate(rows):
        s, n = d["start"][b], d["n_past"][b]
        events = [{"item_id": ml.item_ids[ml.ev_item[e]], "ts": ml.ev_ts[e],
                   "event": ml.spec.event_vocab[ml.ev_event[e] - 2]} for e in range(s, s + n)]
        # Same-second events earlier in the log count as past; nudging now by 1 ms keeps
        # every time-gap bucket (timestamps are whole seconds).
        one = enc.encode_history(events, now=d["ts"][b] + 1e-3, item_attributes=items, seed=5)
        for k, v in one.items():
            np.testing.assert_array_equal(v, batch[k][j], err_msg=k)
