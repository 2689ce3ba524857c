"""Ranker.rerank end to end: real bundle, real runtime, real SQLite stores, real data."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kdaliens.sdk import InputError, Ranker
from kdaliens.sdk.stores import BehaviorLog, ItemCache
from kdaliens.training.data import load_dataset, load_prepared


@pytest.fixture(scope="module")
def world(et_bundle, tiny_run, tmp_path_factory):
    """The tiny run's data on a 'device': items in an ItemCache, every event but each
    user's last in a BehaviorLog, plus the user attribute table."""
    run_dir, metrics = tiny_run
    prep = load_prepared("movielens-100k")
    ds = load_dataset("movielens-100k")
    db = tmp_path_factory.mktemp("device") / "device.db"
    cache = ItemCache(db)
    cache.upsert(ds.items.to_dict("records"))
    log = BehaviorLog(db)
    last = prep.user_offsets[1:] - 1
    keep = np.ones(len(prep.ev_item), dtype=bool)
    keep[last] = False
    ev = np.flatnonzero(keep)
    log.extend({"user_id": prep.user_ids[prep.ev_user[e]], "item_id": prep.item_ids[prep.ev_item[e]],
                "event": prep.spec.event_vocab[prep.ev_event[e] - 2], "ts": float(prep.ev_ts[e])} for e in ev)
    users = {r["user_id"]: r for r in ds.users.to_dict("records")}
    ranker = Ranker.load(et_bundle)
    return {"prep": prep, "cache": cache, "log": log, "users": users, "ranker": ranker, "metrics": metrics,
            "run_dir": run_dir, "events": ev}


def _hr_through_rerank(world, log) -> float:
    """Leave-one-out HR@10 of the test users, through ``Ranker.rerank`` on ``log``."""
    prep, r, ranker = world["prep"], world["prep"].rank["test"], world["ranker"]
    hits = []
    for j in range(len(r["user"])):
        u = prep.user_ids[r["user"][j]]
        items = [prep.item_ids[i] for i in r["items"][j]]
        ranked = ranker.rerank(u, items, cache=world["cache"], log=log, user_features=world["users"][u],
                               now=float(r["ts"][j]) + 1e-3)
        assert not ranked.meta["fallback"]
        hits.append([i for i, _ in ranked].index(items[0]) < 10)
    return float(np.mean(hits))


def test_leave_one_out_hr_through_rerank_matches_training(world):
    hr = _hr_through_rerank(world, world["log"])
    expected = world["metrics"]["student_kd"]["ranking"]["hr@10"]
    assert abs(hr - expected) <= 0.03, (hr, expected)


def test_events_of_unknown_or_no_kind_keep_the_ranking(world, tmp_path):
    """An app that logs its own kinds (unknown to the bundle) or none at all still ranks:
    training hides a share of the kinds (``train.unknown_share``), so the out-of-vocabulary
    kind reads as "some event", and no kind reads as the bundle's default kind."""
    prep = world["prep"]
    assert world["ranker"].spec.default_event == "4"  # the most common rating of MovieLens-100K
    right = _hr_through_rerank(world, world["log"])
    got = {}
    for name, kind in (("unknown", "click"), ("none", None)):
        with BehaviorLog(tmp_path / f"{name}.db") as log:
            log.extend({"user_id": prep.user_ids[prep.ev_user[e]], "item_id": prep.item_ids[prep.ev_item[e]],
                        "event": kind, "ts": float(prep.ev_ts[e])} for e in world["events"])
            got[name] = _hr_through_rerank(world, log)
    print(f"HR@10 through rerank: right kinds {right:.4f}, unknown kind {got['unknown']:.4f}, "
          f"no kind {got['none']:.4f}")  # pytest -s shows it
    assert got["unknown"] >= 0.9 * right and got["none"] >= 0.9 * right, (right, got)


def test_sdk_scores_equal_the_export_path(world):
    """Same bundle, same runtime: the SDK's own encoding gives the export path's scores."""
    from kdaliens.export.exportable import load_exportable
    from kdaliens.export.parity import load_requests

    prep, ranker = world["prep"], world["ranker"]
    exp = load_exportable(world["run_dir"], "none")
    req = load_requests(world["run_dir"], exp, "test")
    d = prep.ctr["test"]
    ev = d["start"] + d["n_past"]
    # Requests whose timestamp no other event of the user shares: "before now" is then
    # exactly the training history (same-second events are ordered by file position).
    same_prev = prep.ev_ts[np.maximum(ev - 1, 0)] == d["ts"]
    rows = np.flatnonzero(~same_prev & (d["n_past"] > 0))[:300]
    assert len(rows) > 100
    for b in rows:
        u, item = prep.user_ids[d["user"][b]], prep.item_ids[d["item"][b]]
        got = ranker.rerank(u, [item], cache=world["cache"], log=world["log"], user_features=world["users"][u],
                            now=float(d["ts"][b]))
        want = ranker.backend.run(req.inputs[b])["score"].reshape(-1)[0]
        assert abs(got[0][1] - float(want)) <= 1e-4


def test_app_inputs(world):
    ranker, cache, log = world["ranker"], world["cache"], world["log"]
    u = world["prep"].user_ids[0]
    assert ranker.rerank(u, [], cache=cache, log=log) == []
    # Unknown ids, ints and numpy ints, duplicates (first place kept), k larger than the list.
    out = ranker.rerank(u, ["50", 50, np.int64(172), "no-such-item", "50"], cache=cache, log=log, k=99)
    ids = [i for i, _ in out]
    assert len(ids) == 3 and set(map(str, ids)) == {"50", "172", "no-such-item"}
    assert all(np.isfinite(s) for _, s in out)
    assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)
    # Cold start: a user with no events, no cache, no features.
    cold = ranker.rerank("brand-new-user", ["1", "2", "3"])
    assert len(cold) == 3 and cold.meta["n_history"] == 0
    # Thousands of candidates run in chunks within the bundle's limit.
    many = [str(i) for i in range(1, 1683)]
    big = ranker.rerank(u, many, cache=cache, log=log, k=10)
    assert len(big) == 10 and big.meta["chunks"] == -(-1682 // ranker.max_candidates)
    # Odd user features: unknown keys ignored, unparseable values out of vocabulary.
    odd = ranker.rerank(u, ["1", "2"], user_features={"age": "old", "gender": None, "shoe_size": [1, 2]})
    assert len(odd) == 2
    assert ranker.rerank(u, ["1", "2", "3"], k=0) == []


@pytest.mark.parametrize("bad, match", [
    ({"candidates": None}, "candidates must be a list"),
    ({"candidates": "abc"}, "candidates must be a list"),
    ({"candidates": [["x"]]}, r"candidates\[0\] must be a string or int id"),
    ({"candidates": [float("nan")]}, "not a usable id"),
    ({"candidates": [""]}, "empty id"),
    ({"k": -1}, "k must be None or an int"),
    ({"k": 2.5}, "k must be None or an int"),
    ({"user_features": ["age", 3]}, "user_features must be a dict"),
    ({"user_id": None}, "user_id must be a non-empty id"),
    ({"now": float("inf")}, "now must be a finite number"),
])
def test_bad_inputs_raise_input_error(world, bad, match):
    args = {"user_id": "1", "candidates": ["1", "2"], **bad}
    with pytest.raises(InputError, match=match):
        world["ranker"].rerank(args.pop("user_id"), args.pop("candidates"), **args)


def test_runtime_failure_falls_back_to_the_given_order(world, caplog):
    ranker = world["ranker"]
    limit = ranker.max_candidates
    try:
        # Past the planned maximum the ExecuTorch runtime refuses the input: a real failure.
        ranker.max_candidates = limit + 100
        items = [str(i) for i in range(1, limit + 51)]
        out = ranker.rerank("1", items, k=5)
    finally:
        ranker.max_candidates = limit
    assert out.meta["fallback"] and out.meta["error"]
    assert [i for i, _ in out] == items[:5]
    assert "model call failed" in caplog.text


def test_backend_errors(et_bundle):
    with pytest.raises(InputError, match="backend must be one of"):
        Ranker.load(et_bundle, backend="tensorrt")
    with pytest.raises(InputError, match="which the 'executorch' backend runs"):
        Ranker.load(et_bundle, backend="onnxruntime")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["executorch"] = None
        from kdaliens.sdk import Ranker, BackendUnavailable
        try:
            Ranker.load({str(et_bundle)!r})
        except BackendUnavailable as e:
            print("unavailable:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "unavailable:" in r.stdout and ".[executorch]" in r.stdout, r.stdout + r.stderr


def test_manifest_spec_drives_the_encoder(world, et_bundle):
    m = json.loads((et_bundle / "manifest.json").read_text())
    assert world["ranker"].spec.to_dict()["history"] == m["feature_spec"]["history"]


class _DictCache:
    """Item attributes without an ItemCache: the Ranker encodes every candidate each call."""

    def __init__(self, items):
        self.items = {str(i["item_id"]): dict(i) for i in items}

    def get_many(self, ids):
        return {k: self.items[k] for k in map(str, ids) if k in self.items}


def test_encoded_items_kept_between_calls_follow_every_change(et_bundle, tmp_path):
    """The Ranker keeps encoded item rows per ItemCache; upserts (from any connection),
    evictions and TTL expiry must show up exactly as a fresh encoding would."""
    ds = load_dataset("movielens-100k")
    items = ds.items.head(300).to_dict("records")
    clock = [1000.0]
    db = tmp_path / "device.db"
    cache = ItemCache(db, ttl_seconds=100, clock=lambda: clock[0])
    cache.upsert(items)
    ranker = Ranker.load(et_bundle)
    ids = [str(i["item_id"]) for i in items[:120]] + ["no-such-item"]

    def same_as_fresh(expected_items):
        fresh = ranker.encoder.encode_items(
            [{**expected_items.get(k, {}), ranker.spec.item_id_field: k} for k in ids])
        got = ranker._encode_candidates(ids, cache)
        assert got.keys() == fresh.keys()
        for name in fresh:
            np.testing.assert_array_equal(got[name], fresh[name], err_msg=name)

    by_id = {str(i["item_id"]): i for i in items}
    same_as_fresh(by_id)
    same_as_fresh(by_id)  # second call: served from the kept rows
    # Another connection (as another process would) changes one item's attributes.
    other = ItemCache(db, ttl_seconds=100, clock=lambda: clock[0])
    changed = {**by_id[ids[3]], "release_year": "1931", "class": "Western"}
    other.upsert([changed])
    by_id[ids[3]] = changed
    same_as_fresh(by_id)
    # The unknown id arrives in the cache.
    other.upsert([{"item_id": "no-such-item", "release_year": "1999", "class": "Drama"}])
    by_id["no-such-item"] = {"release_year": "1999", "class": "Drama"}
    same_as_fresh(by_id)
    # Time passes: everything upserted at t=1000 expires without any write; ids[5],
    # upserted again at t=1060, stays.
    clock[0] += 60
    other.upsert([{**by_id[ids[5]]}])
    clock[0] += 50
    alive = {ids[5]: by_id[ids[5]]}
    same_as_fresh(alive)
    assert cache.evict_expired() > 0
    same_as_fresh(alive)


def test_rerank_scores_equal_with_and_without_kept_rows(world):
    r, cache, log = world["ranker"], world["cache"], world["log"]
    ids = cache.item_ids(limit=400)
    plain = _DictCache(cache.get_many(cache.item_ids()).values())  # every item: history events need theirs
    for user in ("1", "42"):
        a = r.rerank(user, ids, cache=cache, log=log, now=2e9)
        b = r.rerank(user, ids, cache=cache, log=log, now=2e9)  # second call reuses encoded rows
        c = r.rerank(user, ids, cache=plain, log=log, now=2e9)
        assert a == b == c


def test_an_upsert_re_encodes_only_the_items_it_changed(et_bundle, tmp_path):
    ds = load_dataset("movielens-100k")
    items = ds.items.head(400).to_dict("records")
    db = tmp_path / "device.db"
    cache = ItemCache(db)
    cache.upsert(items)
    ranker = Ranker.load(et_bundle)
    encoded: list[int] = []
    real = ranker.encoder.encode_items
    ranker.encoder.encode_items = lambda rows: (encoded.append(len(rows)), real(rows))[1]
    ids = [str(i["item_id"]) for i in items[:300]]
    first = ranker._encode_candidates(ids, cache)
    assert encoded == [300]
    ItemCache(db).upsert([{**items[5], "release_year": "1931"}, items[7]])  # another connection, two items
    again = ranker._encode_candidates(ids, cache)
    assert encoded == [300, 2]  # not 300 again
    now = [{**items[k], "item_id": ids[k]} for k in range(300)]
    now[5]["release_year"] = "1931"
    fresh = real(now)
    for name in fresh:
        np.testing.assert_array_equal(again[name], fresh[name], err_msg=name)
    assert any(not np.array_equal(again[n][5], first[n][5]) for n in fresh)  # item 5 did change
    # A removal (the size bound) starts over.
    ItemCache(db, max_items=350).upsert([items[0]])
    ranker._encode_candidates(ids, cache)
    assert encoded[-1] == 300


def test_mismatched_data_is_measured_and_warned_once(world, tmp_path, caplog):
    """A bundle fed another catalogue, misspelled user keys or foreign event kinds says so:
    meta["unknown"] on every call, a logging warning once per Ranker and kind."""
    import logging

    prep, ranker = world["prep"], Ranker.load(world["ranker"].bundle.path)
    r = prep.rank["test"]
    u = prep.user_ids[r["user"][0]]
    items = [prep.item_ids[i] for i in r["items"][0]]
    now = float(r["ts"][0]) + 1e-3
    feats = {k: v for k, v in world["users"][u].items() if k != "user_id"}
    with caplog.at_level(logging.WARNING, logger="kdaliens.sdk"):
        ok = ranker.rerank(u, items, cache=world["cache"], log=world["log"], user_features=feats, now=now)
        assert ok.meta["unknown"]["events"] == 0.0 and ok.meta["unknown"]["user_features"] == 0.0
        assert ok.meta["unknown"]["candidates"] < 0.1
        assert not caplog.records
        foreign = ranker.rerank(u, [f"sku-{i}" for i in range(40)], cache=world["cache"], log=world["log"], now=now)
        assert foreign.meta["unknown"]["candidates"] == 1.0 and foreign.meta["unknown"]["user_features"] is None
        typos = ranker.rerank(u, items, cache=world["cache"], user_features={"agee": 31, "gendr": "F", "age": 31},
                              now=now)
        assert typos.meta["unknown"]["user_features"] == 2 / 3 and typos.meta["unknown"]["events"] is None
        with BehaviorLog(tmp_path / "kinds.db") as log:
            log.extend({"user_id": u, "item_id": i, "event": "view", "ts": now - 100 + j} for j, i in enumerate(items[:5]))
            kinds = ranker.rerank(u, items, cache=world["cache"], log=log, now=now)
        assert kinds.meta["unknown"]["events"] == 1.0 and kinds.meta["n_history"] == 5
        for _ in range(3):  # warned once per kind of mismatch, not per call
            ranker.rerank(u, [f"sku-{i}" for i in range(40)], cache=world["cache"], now=now)
    warned = [rec.getMessage() for rec in caplog.records]
    assert len(warned) == 3, warned
    assert any("candidates" in w and "catalogue" in w for w in warned)
    assert any("user features" in w for w in warned) and any("event_vocab" in w for w in warned)
