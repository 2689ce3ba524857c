"""Ranking and CTR metrics (numpy; no sklearn needed)."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via ranks, ties averaged. NaN when only one class is present."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC weighted by the user's number of samples; users with one class skipped."""
    users = np.asarray(users).reshape(-1)
    order = np.argsort(users, kind="mergesort")
    u, start = np.unique(users[order], return_index=True)
    bounds = list(start) + [len(users)]
    total, weight = 0.0, 0
    for i in range(len(u)):
        idx = order[bounds[i]:bounds[i + 1]]
        a = auc(labels[idx], scores[idx])
        if not np.isnan(a):
            total += a * len(idx)
            weight += len(idx)
    return float(total / weight) if weight else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ranks_of_positive(scores: np.ndarray) -> np.ndarray:
    """0-based rank of column 0 among each row; ties count against it (pessimistic)."""
    s = np.asarray(scores, dtype=np.float64)
    return (s[:, 1:] >= s[:, :1]).sum(1)


def hit_rate(scores: np.ndarray, k: int = 10) -> float:
    """HR@k with the held-out item in column 0 of each row."""
    return float((ranks_of_positive(scores) < k).mean())


def ndcg(scores: np.ndarray, k: int = 10) -> float:
    """NDCG@k with one relevant item (column 0) per row."""
    r = ranks_of_positive(scores)
    return float(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0).mean())


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def ctr_block(users: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    p = sigmoid(np.asarray(logits, dtype=np.float64))
    return {"auc": auc(labels, p), "gauc": gauc(users, labels, p), "logloss": logloss(labels, p)}


def ranking_block(scores: np.ndarray, k: int = 10) -> dict[str, float]:
    return {f"hr@{k}": hit_rate(scores, k), f"ndcg@{k}": ndcg(scores, k)}
