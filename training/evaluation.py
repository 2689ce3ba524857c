"""Evaluation of any model that scores requests: CTR, sampled ranking, full ranking.

A *scorer* is ``score(split_dict, rows, cand_rows (R, N), head) -> (R, N) logits``; the
teacher's and the student's come from :func:`teacher_scorer` and :func:`student_scorer`.

* ``ctr``: AUC, GAUC and logloss of the click head (the interaction head on implicit
  data) on the CTR split;
* ``ranking``: HR@10 and NDCG@10 of the held-out item against 100 sampled items the
  user never touched (leave-one-out, as in SASRec);
* ``ranking_full``: the same two against every catalogue item the user never touched,
  on all users or, for large catalogues, a seeded sample of them (``users``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from . import metrics as M
from .batches import student_requests, teacher_requests
from .loop import Context

Scorer = Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray, str], np.ndarray]

#: Candidate scores a full-ranking pass may compute (users x catalogue); above this the
#: users are sampled (at most ``FULL_RANK_MAX_USERS``, at least ``FULL_RANK_MIN_USERS``).
FULL_RANK_BUDGET = 20_000_000
FULL_RANK_MAX_USERS = 5000
FULL_RANK_MIN_USERS = 200


def _length_batches(n_past: np.ndarray, max_len: int, n_cands: int, slot_budget: int = 65536,
                    cand_budget: int = 32768) -> list[np.ndarray]:
    """Row batches grouped by history length (less padding): at most ``slot_budget``
    history slots and ``cand_budget`` candidates a batch."""
    lens = np.maximum(np.minimum(n_past, max_len), 1)
    order = np.argsort(lens, kind="stable")
    ls = lens[order]
    cap = max(1, min(1024, cand_budget // max(1, n_cands)))
    out, i = [], 0
    while i < len(order):
        lo, hi = 1, min(cap, len(order) - i)  # largest size with size * longest <= slot_budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if mid * ls[i + mid - 1] <= slot_budget else (lo, mid - 1)
        out.append(order[i:i + lo])
        i += lo
    return out


def split_end(ctx: Context, *ds: dict[str, np.ndarray]) -> np.ndarray:
    """Per user, the end (exclusive) of the events that rows of ``ds`` target."""
    end = ctx.prep.user_offsets[:-1].copy()
    for d in ds:
        np.maximum.at(end, d["user"], d["start"] + d["n_past"] + 1)
    return np.maximum(end, ctx.train_end)


def teacher_scorer(model: nn.Module, ctx: Context) -> Scorer:
    """Scores of a teacher (``TeacherRanker`` or ``Teacher``) at the rows' events.

    One causal window pass stores every event's view (:class:`TeacherView`); rows whose
    event has no stored view (a user's first event) are scored as requests.
    """
    from .teacher_view import TeacherView

    cache: dict[str, object] = {}

    def prepare(end: np.ndarray) -> None:
        cache["end"], cache["view"] = end, TeacherView(model, ctx, end)

    def score(d: dict[str, np.ndarray], rows: np.ndarray, cands: np.ndarray, head: str) -> np.ndarray:
        events = d["start"][rows] + d["n_past"][rows]
        need = split_end(ctx, {k: v[rows] for k, v in d.items()})
        if "view" not in cache or (need > cache["end"]).any():
            prepare(need)
        view = cache["view"]
        out = view.score(events, cands, head)
        missing = np.flatnonzero(~view.has[torch.from_numpy(events).to(view.device)].cpu().numpy())
        if len(missing):
            out[missing] = request_scorer(model, ctx)(d, rows[missing], cands[missing], head)
        return out

    score.prepare = prepare  # type: ignore[attr-defined]
    return score


def request_scorer(model: nn.Module, ctx: Context) -> Scorer:
    """Scores of a teacher from last-L request histories (:meth:`TeacherRanker.forward`)."""
    L = ctx.cfg.teacher.history_len

    def score(d: dict[str, np.ndarray], rows: np.ndarray, cands: np.ndarray, head: str) -> np.ndarray:
        out = np.zeros(cands.shape, dtype=np.float64)
        model.eval()
        with torch.no_grad():
            for b in _length_batches(d["n_past"][rows], L, cands.shape[1]):
                rr = rows[b]
                req = teacher_requests(ctx.prep, ctx.t_enc, d["user"][rr], d["start"][rr], d["n_past"][rr],
                                       d["ts"][rr], cands[b], gaps=ctx.gaps)
                keep = max(1, int(req["hist_mask"].sum(1).max()))  # left-padded: drop all-padding slots
                for k in [k for k in req if k.startswith("hist_")]:
                    req[k] = req[k][:, -keep:]
                res = model(ctx.tensors(req), with_click=head == "click_logit")
                out[b] = res[head].double().cpu().numpy()
        return out

    return score


def student_scorer(model: nn.Module, ctx: Context, batch: int = 1024) -> Scorer:
    """Scores of an eager student or its int8 graph from the SDK sampler's histories."""
    from .student_loop import student_outputs

    def score(d: dict[str, np.ndarray], rows: np.ndarray, cands: np.ndarray, head: str) -> np.ndarray:
        out = np.zeros(cands.shape, dtype=np.float64)
        per = max(1, batch * 16 // max(16, cands.shape[1]))
        with torch.no_grad():
            for i in range(0, len(rows), per):
                rr = rows[i:i + per]
                req = student_requests(ctx.prep, ctx.s_enc, d["user"][rr], d["start"][rr], d["n_past"][rr],
                                       d["ts"][rr], cands[i:i + per])
                out[i:i + per] = student_outputs(model, ctx.tensors(req))[head].double().cpu().numpy()
        return out

    return score


def evaluate(score: Scorer, ctx: Context, split: str, full: bool = False) -> dict[str, dict]:
    """``ctr`` and ``ranking`` blocks on ``split`` (val or test); ``ranking_full`` too if asked."""
    prep = ctx.prep
    d = prep.ctr[split]
    head = "interaction" if prep.implicit else "click_logit"
    r = prep.rank[split if split in prep.rank else "test"]
    if hasattr(score, "prepare"):  # one pass that covers both protocols' events
        score.prepare(split_end(ctx, d, r))
    logits = score(d, np.arange(len(d["label"])), d["item"][:, None], head)[:, 0]
    scores = score(r, np.arange(len(r["user"])), r["items"], "interaction")
    out = {"ctr": M.ctr_block(d["user"], d["label"], logits), "ranking": M.ranking_block(scores)}
    if full:
        out["ranking_full"] = full_ranking(score, ctx, split)
    return out


def full_ranking_users(n_users: int, n_items: int, seed: int = 0) -> np.ndarray:
    """Which leave-one-out rows the full ranking scores: all, or a seeded sample."""
    n = min(n_users, FULL_RANK_MAX_USERS, max(FULL_RANK_MIN_USERS, FULL_RANK_BUDGET // max(1, n_items)))
    if n >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(seed).choice(n_users, size=n, replace=False))


def full_ranking(score: Scorer, ctx: Context, split: str, k: int = 10, chunk: int = 4096) -> dict[str, float]:
    """HR@k and NDCG@k of each held-out item against every item its user never touched.

    Ties count against the held-out item, as in the sampled protocol.
    """
    prep = ctx.prep
    r = prep.rank[split if split in prep.rank else "test"]
    rows = full_ranking_users(len(r["user"]), prep.n_items)
    target = r["items"][rows, 0]
    users = r["user"][rows]
    # Every item a user touched, in any split (the target itself is scored separately).
    keys = np.unique(prep.ev_user * np.int64(prep.n_items) + prep.ev_item)
    t_score = score(r, rows, target[:, None], "interaction")[:, 0]
    above = np.zeros(len(rows), dtype=np.int64)
    per_users = max(1, 65536 // min(chunk, prep.n_items))
    for s in range(0, prep.n_items, chunk):
        items = np.arange(s, min(prep.n_items, s + chunk))
        for i in range(0, len(rows), per_users):
            sl = slice(i, i + per_users)
            cands = np.broadcast_to(items, (len(rows[sl]), len(items)))
            sc = score(r, rows[sl], np.ascontiguousarray(cands), "interaction")
            k_ = users[sl, None] * np.int64(prep.n_items) + items[None, :]
            pos = np.minimum(np.searchsorted(keys, k_), len(keys) - 1)
            untouched = keys[pos] != k_
            above[sl] += ((sc >= t_score[sl, None]) & untouched).sum(1)
    hit = above < k
    return {f"hr@{k}": float(hit.mean()), f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(above + 2.0), 0.0).mean()),
            "users": int(len(rows))}
