"""The seeded synthetic long-history log: determinism, shape, ratings, repeats, loading,
config checks, the CLI, and the property it exists for (long history beats the last 50)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kdaliens.sdk.errors import InputError
from kdaliens.training.data import load_dataset, load_prepared
from kdaliens.training.data.long_history import (
    INTEREST,
    NOISE,
    REPEAT,
    LongHistoryConfig,
    generate,
    long_history_check,
    main,
    write_recbole,
)

# Small enough for tests, long enough that repeats (lag 100-200) are common.
SMALL = LongHistoryConfig(users=40, min_events=300, max_events=600, items=2000, topics=40, repeat_min_lag=100,
                          repeat_max_lag=200, seed=0)


@pytest.fixture(scope="module")
def log():
    return generate(SMALL)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    cfg = replace(SMALL, users=8)
    write_recbole(tmp_path / "a", cfg)
    write_recbole(tmp_path / "b", cfg)
    write_recbole(tmp_path / "c", replace(cfg, seed=1))
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert set(a) == {"long-history.inter", "long-history.item", "long-history.json"}
    assert a == b
    assert a["long-history.inter"] != c["long-history.inter"]
    assert b'"synthetic": true' in a["long-history.json"]


def test_lengths_ids_and_timestamps(log):
    lengths = log.lengths
    assert len(lengths) == SMALL.users and lengths.sum() == len(log)
    assert lengths.min() >= SMALL.min_events and lengths.max() <= SMALL.max_events
    assert lengths.std() > 0  # not all equal
    assert np.array_equal(log.user, np.repeat(np.arange(SMALL.users), lengths))
    assert log.item.min() >= 0 and log.item.max() < SMALL.items
    same_user = log.user[1:] == log.user[:-1]
    gaps = np.diff(log.timestamp)[same_user]
    assert (gaps >= 1).all()  # strictly increasing per user
    # Sessions: mostly short gaps, some day-scale breaks.
    assert np.median(gaps) < 300 and (gaps > 1800).mean() > 0.02


def test_ratings_follow_interest_and_noise(log):
    r, kind = log.rating, log.kind
    assert set(np.unique(r)) <= {1, 2, 3, 4, 5}
    noise = kind == NOISE
    assert abs(noise.mean() - SMALL.noise_rate) < 0.02
    assert (r[noise] <= 2).all()  # noise clicks are rated low
    liked = r[~noise]
    assert (liked >= 3).all() and (liked >= 4).mean() > 0.75
    # Noise clicks fall on topics the user rarely picks otherwise.
    for u in range(5):
        sl = slice(log.offsets[u], log.offsets[u + 1])
        topics = log.item_topic[log.item[sl]]
        k = kind[sl]
        liked_topics = np.bincount(topics[k == INTEREST], minlength=SMALL.topics) / (k == INTEREST).sum()
        assert liked_topics[topics[k == NOISE]].mean() < 0.05


def test_repeats_come_back_from_long_ago(log):
    kind = log.kind
    assert 0.4 * SMALL.repeat_rate < (kind == REPEAT).mean() <= SMALL.repeat_rate
    j = SMALL.repeat_jitter
    pos = np.arange(len(log)) - log.offsets[log.user]
    for e in np.flatnonzero(kind == REPEAT)[:500]:
        u, t = log.user[e], pos[e]
        lags = np.arange(log.user_lag[u] - j, log.user_lag[u] + j + 1)
        back = log.item[log.offsets[u] + t - lags[t - lags >= 0]]
        assert log.item[e] in back and log.user_lag[u] >= SMALL.repeat_min_lag
    # Seen from the data alone: the item from the user's cycle ago recurs far more often
    # than the item from an unrelated long lag.
    def recur(lag_of_user):
        hit = n = 0
        for u in range(SMALL.users):
            seq = log.item[log.offsets[u]:log.offsets[u + 1]]
            lag = lag_of_user(u)
            hit += int((seq[lag:] == seq[:-lag]).sum())
            n += len(seq) - lag
        return hit / n

    at_cycle = sum(recur(lambda u, d=d: int(log.user_lag[u]) + d) for d in range(-j, j + 1))
    elsewhere = sum(recur(lambda u, d=d: 250 + d) for d in range(-j, j + 1))
    assert at_cycle > 3 * elsewhere and at_cycle > 0.5 * SMALL.repeat_rate


def test_load_dataset_round_trip(tmp_path: Path, log):
    stats = write_recbole(tmp_path, log=log, with_kind=True)
    assert stats["interactions"] == len(log)
    ds = load_dataset(tmp_path)
    inter = ds.interactions
    assert len(inter) == len(log) and not ds.implicit
    assert inter["user_id"].nunique() == SMALL.users
    np.testing.assert_array_equal(inter["user_id"].to_numpy(dtype=str), (log.user + 1).astype(str))
    np.testing.assert_array_equal(inter["item_id"].to_numpy(dtype=str), (log.item + 1).astype(str))
    np.testing.assert_array_equal(inter["rating"].to_numpy(), log.rating.astype(float))
    np.testing.assert_array_equal(inter["timestamp"].to_numpy(), log.timestamp.astype(float))
    np.testing.assert_array_equal(inter["label"].to_numpy(), (log.rating >= 4).astype(float))
    assert ds.item_field_kinds == {"topic": "categorical", "pop_bucket": "categorical"}
    assert len(ds.items) == SMALL.items
    buckets = ds.items["pop_bucket"].astype(int)
    assert sorted(buckets.unique()) == [0, 1, 2, 3, 4]
    # The head bucket is consumed more than the tail one.
    per_item = inter["item_id"].value_counts()
    head = ds.items.loc[buckets == 0, "item_id"]
    tail = ds.items.loc[buckets == 4, "item_id"]
    assert per_item.reindex(head).fillna(0).mean() > 2 * per_item.reindex(tail).fillna(0).mean()


@pytest.mark.parametrize("kw, field", [
    ({"users": 0}, "users"),
    ({"users": 2.5}, "users"),
    ({"min_events": 0}, "min_events"),
    ({"min_events": 500, "max_events": 400}, "max_events"),
    ({"items": 10, "topics": 20}, "items"),
    ({"topics": 1}, "topics"),
    ({"repeat_rate": 1.5}, "repeat_rate"),
    ({"repeat_rate": 0.6, "noise_rate": 0.6}, "noise_rate"),
    ({"repeat_min_lag": 300, "repeat_max_lag": 200}, "repeat_max_lag"),
    ({"repeat_jitter": 500}, "repeat_jitter"),
    ({"drift_rate": -0.1}, "drift_rate"),
    ({"concentration": 0.0}, "concentration"),
    ({"zipf": float("nan")}, "zipf"),
    ({"noise_ratings": (0.5, 0.5)}, "noise_ratings"),
    ({"interest_ratings": (0, 0, 0.5, 0.5, 0.5)}, "interest_ratings"),
    ({"seed": -1}, "seed"),
    ({"name": "a/b"}, "name"),
])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(InputError, match=rf"LongHistoryConfig\.{field}:"):
        LongHistoryConfig(**kw)
    with pytest.raises(ValueError):
        LongHistoryConfig(**kw)


def test_cli(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: 1000)" in capsys.readouterr().out
    args = ["--users", "6", "--min-events", "60", "--max-events", "90", "--items", "300", "--topics", "10",
            "--repeat-min-lag", "20", "--repeat-max-lag", "30", "--seed", "4", "--name", "tiny"]
    assert main([str(tmp_path / "out"), *args, "--check"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "HR@10" in out
    ds = load_dataset(tmp_path / "out")
    assert ds.name == "tiny" and ds.interactions["user_id"].nunique() == 6
    assert main([str(tmp_path / "bad"), "--min-events", "9", "--max-events", "5"]) == 2
    assert "max_events" in capsys.readouterr().err


def test_long_history_beats_last_50(log):
    r = long_history_check(log, window=50, k=10, targets=20)
    assert r["targets"] == SMALL.users * 20
    assert r["last_window"] > 5 * r["random"]
    assert r["full"] > r["last_window"] + 0.02
    # The gain comes from the long-range repeats the last 50 events cannot see.
    assert r["full@repeat"] > 0.5 > r["last_window@repeat"] + 0.2


def test_data_folder_writes_once_and_loads(tmp_path):
    from kdaliens.training.data.long_history import data_folder

    folder = data_folder(4, 1100, root=tmp_path)
    inter = next(folder.glob("*.inter"))
    first = inter.read_bytes()
    assert data_folder(4, 1100, root=tmp_path) == folder and inter.read_bytes() == first  # reused, not rewritten
    prep = load_prepared(str(folder))
    assert len(np.unique(prep.ev_user)) == 4 and len(prep.ev_item) >= 4 * 1000
