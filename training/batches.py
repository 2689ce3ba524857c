"""Batches for the teacher and the student, built with the SDK's encoder and sampler.

Nothing here encodes raw values: item, user and event ids come from
:class:`~kdaliens.training.data.Prepared` (made by the SDK's ``FeatureEncoder``), and
histories are sampled and gathered by ``FeatureEncoder.gather_history``, the same code a
device runs. The teacher's windows are contiguous slices of the same event store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kdaliens.sdk.features import OOV_ID, PAD_ID, FeatureEncoder, FeatureSpec
from kdaliens.sdk.history import HistorySpec

from .data import Prepared


def to_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if t.dtype == torch.float64:
            t = t.float()
        out[k] = t
    return out


def teacher_spec(prep: Prepared, history_len: int) -> FeatureSpec:
    """The teacher sees the last ``history_len`` events (no sampling)."""
    return prep.spec.with_history(HistorySpec(short_len=history_len, long_len=0, seed=prep.spec.history.seed))


def student_spec(prep: Prepared, short_len: int, long_len: int, seed: int = 0) -> FeatureSpec:
    return prep.spec.with_history(HistorySpec(short_len=short_len, long_len=long_len, seed=seed))


def prev_gaps(prep: Prepared, enc: FeatureEncoder) -> np.ndarray:
    """Bucketized time since the same user's previous event, per event (first event: OOV)."""
    prev_ts = np.concatenate([[np.nan], prep.ev_ts[:-1]])
    first = np.zeros(len(prep.ev_ts), dtype=bool)
    first[prep.user_offsets[:-1][np.diff(prep.user_offsets) > 0]] = True
    gaps = enc.encode_time_gaps(prep.ev_ts, np.where(first, prep.ev_ts, prev_ts))
    gaps[first] = OOV_ID
    return gaps


def user_arrays(prep: Prepared, users: np.ndarray) -> dict[str, np.ndarray]:
    return {"user_" + k: v[users] for k, v in prep.user_arrays.items()}


def item_arrays(prep: Prepared, rows: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    return {prefix + k: v[rows] for k, v in prep.item_arrays.items()}


def catalogue_arrays(prep: Prepared) -> dict[str, np.ndarray]:
    return item_arrays(prep, np.arange(prep.n_items), "cat_")


# ------------------------------------------------------------------------------ teacher
@dataclass
class TeacherWindows:
    """Left-padded windows of each user's training events for the causal teacher pass.

    Input slot j holds an event; its target (the next event) is ``tgt_*`` at slot j.
    ``target_event`` maps each (window, slot) to the event-store index of its target
    (-1 where there is none).
    """

    arrays: dict[str, np.ndarray]
    target_event: np.ndarray

    def __len__(self) -> int:
        return len(self.target_event)

    @property
    def lengths(self) -> np.ndarray:
        return self.arrays["win_mask"].sum(1)

    def batch(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Rows of the windows, trimmed to the longest one (windows are left-padded, so
        the trimmed slots are padding; slot positions keep counting from the right)."""
        L = self.arrays["win_mask"].shape[1]
        keep = max(int(self.lengths[rows].max()), 1)
        out = {k: (v[rows][:, L - keep:] if k.startswith(("win_", "tgt_")) else v[rows])
               for k, v in self.arrays.items()}
        return out, self.target_event[rows][:, L - keep:]

    def batches(self, batch_size: int, rng: np.random.Generator | None, rank: int = 0, world: int = 1
                ) -> list[np.ndarray]:
        """Batches of windows of similar length (less padding), in shuffled order."""
        lens = self.lengths.astype(np.float64)
        if rng is not None:
            lens = lens + rng.uniform(0, 8, size=len(lens))  # vary batches between epochs
        order = np.argsort(lens, kind="stable")
        out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if rng is not None:
            out = [out[i] for i in rng.permutation(len(out))]
        if world > 1:
            keep = len(out) - len(out) % world if len(out) >= world else len(out)
            out = out[:keep][rank::world] if keep else out[rank:rank + 1]
        return out


def teacher_windows(prep: Prepared, enc: FeatureEncoder, L: int, split_end: np.ndarray) -> TeacherWindows:
    """Windows over events ``[user start, split_end[user])`` of every user.

    Each user's sequence is cut into windows of L inputs from the end backwards, so the
    newest events get the longest context.
    """
    gaps = prev_gaps(prep, enc)
    ev_items = prep.event_items()
    starts, lens = [], []
    for u in range(prep.n_users):
        s, e = int(prep.user_offsets[u]), int(split_end[u])
        # inputs are events s..e-2, targets s+1..e-1
        hi = e - 1
        while hi > s:
            lo = max(s, hi - L)
            starts.append(lo)
            lens.append(hi - lo)
            hi = lo
    len(starts)
    slot = np.arange(L)
    starts_a = np.asarray(starts, dtype=np.int64)
    lens_a = np.asarray(lens, dtype=np.int64)
    # event index of input slot j: start + j - (L - len); padding where negative offset
    offset = slot[None, :] - (L - lens_a[:, None])  # (W, L)
    valid = offset >= 0
    ev_in = np.where(valid, starts_a[:, None] + offset, 0)
    ev_tg = np.where(valid, ev_in + 1, 0)
    arrays: dict[str, np.ndarray] = {}
    for name in enc.spec.history_item_fields or ():
        a = ev_items[name][ev_in]
        a[~valid] = PAD_ID
        arrays["win_" + name] = a
    for name, a in ev_items.items():
        t = a[ev_tg]
        t[~valid] = PAD_ID
        arrays["tgt_" + name] = t
    ev = prep.ev_event[ev_in]
    ev[~valid] = PAD_ID
    g = gaps[ev_in]
    g[~valid] = PAD_ID
    arrays["win_event"], arrays["win_gap"], arrays["win_mask"] = ev, g, valid
    tg = gaps[ev_tg]
    tg[~valid] = PAD_ID
    arrays["tgt_gap"] = tg  # time from the previous event to the target: its query gap
    arrays["tgt_item"] = np.where(valid, prep.ev_item[ev_tg], 0)
    lab = prep.ev_label[ev_tg]
    arrays["tgt_label"] = np.where(valid & np.isfinite(lab), lab, 0.0)
    arrays["tgt_has_label"] = valid & np.isfinite(lab)
    users = prep.ev_user[starts_a]
    arrays.update(user_arrays(prep, users))
    return TeacherWindows(arrays=arrays, target_event=np.where(valid, ev_tg, -1))


def teacher_requests(prep: Prepared, enc: FeatureEncoder, users: np.ndarray, starts: np.ndarray,
                     n_past: np.ndarray, now: np.ndarray, cand_rows: np.ndarray,
                     gaps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Requests for :meth:`TeacherRanker.forward`: last-L histories and candidates (B, N)."""
    gaps = prev_gaps(prep, enc) if gaps is None else gaps
    h = enc.gather_history(prep.event_items(), prep.ev_event, prep.ev_ts, starts, n_past, now,
                           extra={"gap": gaps})
    h.pop("hist_time_gap")  # the teacher encodes time since the previous event instead
    out = dict(h)
    n_past = np.asarray(n_past)
    last_ts = prep.ev_ts[np.maximum(np.asarray(starts) + n_past - 1, 0)]
    qg = enc.encode_time_gaps(np.asarray(now, dtype=np.float64), last_ts)
    out["query_gap"] = np.where(n_past > 0, qg, OOV_ID)  # cold start: no previous event
    out.update(user_arrays(prep, users))
    out.update(item_arrays(prep, cand_rows, "cand_"))
    return out


# ------------------------------------------------------------------------------ student
class NegativeSampler:
    """Uniform unobserved items per user (a bitmap of touched items when it fits)."""

    def __init__(self, prep: Prepared, seed: int):
        self.n_items = prep.n_items
        self.rng = np.random.default_rng(seed)
        self.touched = None
        if prep.n_users * prep.n_items <= 200_000_000:
            t = np.zeros((prep.n_users, prep.n_items), dtype=bool)
            t[prep.ev_user, prep.ev_item] = True
            self.touched = t

    def sample(self, users: np.ndarray, k: int) -> np.ndarray:
        out = self.rng.integers(0, self.n_items, size=(len(users), k))
        if self.touched is None:
            return out
        for _ in range(20):  # resample collisions; a few rounds clear them all in practice
            bad = self.touched[users[:, None], out]
            if not bad.any():
                break
            out[bad] = self.rng.integers(0, self.n_items, size=int(bad.sum()))
        return out


def student_requests(prep: Prepared, enc: FeatureEncoder, users: np.ndarray, starts: np.ndarray,
                     n_past: np.ndarray, now: np.ndarray, cand_rows: np.ndarray,
                     seed: int | None = None) -> dict[str, np.ndarray]:
    """Requests for :class:`StudentRanker`: sampled histories and candidates (B, N)."""
    out = enc.gather_history(prep.event_items(), prep.ev_event, prep.ev_ts, starts, n_past, now, seed=seed)
    out.update(user_arrays(prep, users))
    out.update(item_arrays(prep, cand_rows, "cand_"))
    return out


def iterate(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None,
            rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
    """Index batches; with ``world`` > 1 each rank takes every world-th batch (same count each)."""
    idx = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    batches = [idx[i:i + batch_size] for i in range(0, n, batch_size)]
    if world > 1:
        keep = len(batches) - len(batches) % world if len(batches) >= world else len(batches)
        batches = batches[:keep][rank::world] if keep else batches[rank:rank + 1]
    yield from batches
