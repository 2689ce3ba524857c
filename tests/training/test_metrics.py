from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kdaliens.training import metrics as M


def brute_auc(y, s):
    pos = [b for a, b in zip(y, s) if a]
    neg = [b for a, b in zip(y, s) if not a]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_matches_pairwise_brute_force(rows):
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows], dtype=float)
    if y.all() or (~y).all():
        assert np.isnan(M.auc(y, s))
    else:
        assert abs(M.auc(y, s) - brute_auc(y, s)) < 1e-12


def test_gauc_weights_users_by_samples_and_skips_one_class_users():
    users = np.array([1, 1, 1, 2, 2, 3, 3])
    y = np.array([1, 0, 0, 1, 0, 1, 1])
    s = np.array([0.9, 0.1, 0.95, 0.2, 0.8, 0.5, 0.4])
    a1 = brute_auc(y[:3], s[:3])  # 0.5
    a2 = brute_auc(y[3:5], s[3:5])  # 0.0
    assert abs(M.gauc(users, y, s) - (a1 * 3 + a2 * 2) / 5) < 1e-12


def test_hr_and_ndcg_against_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=(200, 101)).astype(float)
    hr = ndcg = 0.0
    for row in scores:
        rank = sum(1 for x in row[1:] if x >= row[0])  # ties count against the target
        if rank < 10:
            hr += 1
            ndcg += 1 / np.log2(rank + 2)
    assert abs(M.hit_rate(scores, 10) - hr / 200) < 1e-12
    assert abs(M.ndcg(scores, 10) - ndcg / 200) < 1e-12
    perfect = np.zeros((5, 101))
    perfect[:, 0] = 1
    assert M.hit_rate(perfect) == 1.0 and M.ndcg(perfect) == 1.0


def test_logloss():
    assert abs(M.logloss(np.array([1, 0]), np.array([0.8, 0.3])) - (-(np.log(0.8) + np.log(0.7)) / 2)) < 1e-12
