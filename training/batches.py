"""Batches for the teacher and the student, built with the SDK's encoder and sampler.

Nothing here encodes raw values: item, user and event ids come from
:class:`~kdaliens.training.data.Prepared` (made by the SDK's ``FeatureEncoder``), and
histories are sampled and gathered by ``FeatureEncoder.gather_history``, the same code a
device runs. The teacher's windows are contiguous slices of the same event store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from kdaliens.sdk.features import OOV_ID, PAD_ID, FeatureEncoder, FeatureSpec
from kdaliens.sdk.history import HistorySpec

from .data import Prepared


def to_torch(arrays: dict[str, np.ndarray], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """numpy arrays -> tensors on ``device`` (float64 becomes float32)."""
    out = {}
    for k, v in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if t.dtype == torch.float64:
            t = t.float()
        out[k] = t.to(device) if device is not None else t
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
    """Left-padded windows of each user's events for the causal teacher pass.

    Input slot j holds an event; its target (the next event) is ``tgt_*`` at slot j:
    ``tgt_row`` (catalogue row), ``tgt_gap`` (its query gap), ``tgt_label`` /
    ``tgt_has_label`` (click label) and ``tgt_train`` (whether this slot trains its
    target: the first ``overlap`` slots of a user's later windows are context only, so
    every target is trained exactly once and sees at least ``overlap`` earlier events).
    ``target_event`` maps each (window, slot) to the event-store index of its target
    (-1 where there is none or the slot is context only).
    """

    arrays: dict[str, np.ndarray]
    target_event: np.ndarray
    users: np.ndarray  # (W,) the user of each window
    input_event: np.ndarray  # (W, L) event-store index of each input slot (-1: padding)

    def __len__(self) -> int:
        return len(self.target_event)

    @cached_property
    def lengths(self) -> np.ndarray:
        """(W,) real events of each window (computed once; every batch reads it)."""
        return self.arrays["win_mask"].sum(1)

    def _start(self, rows: np.ndarray) -> int:
        """First slot kept when rows are trimmed to their longest window (windows are
        left-padded, so the trimmed slots are padding)."""
        return self.arrays["win_mask"].shape[1] - max(int(self.lengths[rows].max()), 1)

    def batch(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Rows of the windows, trimmed to the longest one."""
        a = self._start(rows)
        out = {k: (v[rows][:, a:] if k.startswith(("win_", "tgt_")) else v[rows]) for k, v in self.arrays.items()}
        return out, self.target_event[rows][:, a:]

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """Input events (B, keep) of rows, trimmed as :meth:`batch` trims."""
        return self.input_event[rows][:, self._start(rows):]

    def batches(self, batch_size: int, rng: np.random.Generator | None, rank: int = 0, world: int = 1
                ) -> list[np.ndarray]:
        """Batches of windows of similar length (less padding), in shuffled order.

        A batch holds as many slots as ``batch_size`` full-length windows: ``batch_size``
        windows of length L, or more of shorter ones (padded to the longest in the batch).
        On logs of short histories, batches of a fixed window count would be a few dozen
        positions each, and an epoch thousands of tiny steps.
        """
        lens = self.lengths.astype(np.float64)
        if rng is not None:
            lens = lens + rng.uniform(0, 8, size=len(lens))  # vary batches between epochs
        order = np.argsort(lens, kind="stable")
        budget = batch_size * self.arrays["win_mask"].shape[1]
        cuts, count, longest = [], 0, 0
        for i, size in enumerate(np.maximum(self.lengths[order], 1).tolist()):
            grown = max(longest, size)  # a batch is padded to its longest window
            if count and (count + 1) * grown > budget:
                cuts.append(i)
                count, grown = 0, size
            count, longest = count + 1, grown
        out = np.split(order, cuts)
        if rng is not None:
            out = [out[i] for i in rng.permutation(len(out))]
        return _shard(out, rank, world)


def _window_bounds(offsets: np.ndarray, split_end: np.ndarray, L: int, overlap: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per window: user, first input event, input count, first trained target.

    A user's targets are their events s+1..e-1 (the input of target t is t-1). Windows
    are cut from the newest target backwards, ``L - overlap`` trained targets each,
    with up to ``overlap`` more inputs before them as context.
    """
    span = max(1, L - overlap)
    users, los, lens, firsts = [], [], [], []
    for u in range(len(split_end)):
        s, b = int(offsets[u]), int(split_end[u])  # trained targets [a, b)
        while b > s + 1:
            a = max(s + 1, b - span)
            lo = max(s, a - 1 - overlap)
            users.append(u)
            los.append(lo)
            lens.append(b - 1 - lo)
            firsts.append(a)
            b = a
    return (np.asarray(users, dtype=np.int64), np.asarray(los, dtype=np.int64), np.asarray(lens, dtype=np.int64),
            np.asarray(firsts, dtype=np.int64))


def teacher_windows(prep: Prepared, enc: FeatureEncoder, L: int, split_end: np.ndarray, overlap: int = 0
                    ) -> TeacherWindows:
    """Windows over events ``[user start, split_end[user])`` of every user (see
    :class:`TeacherWindows`); every target event in that range is trained once."""
    gaps = prev_gaps(prep, enc)
    ev_items = prep.event_items()
    users, starts_a, lens_a, first_a = _window_bounds(prep.user_offsets, split_end, L, min(overlap, L - 1))
    slot = np.arange(L)
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
    ev = prep.ev_event[ev_in]
    ev[~valid] = PAD_ID
    g = gaps[ev_in]
    g[~valid] = PAD_ID
    arrays["win_event"], arrays["win_gap"], arrays["win_mask"] = ev, g, valid
    tg = gaps[ev_tg]
    tg[~valid] = PAD_ID
    arrays["tgt_gap"] = tg  # time from the previous event to the target: its query gap
    arrays["tgt_row"] = np.where(valid, prep.ev_item[ev_tg], 0)
    lab = prep.ev_label[ev_tg]
    arrays["tgt_label"] = np.where(valid & np.isfinite(lab), lab, 0.0)
    arrays["tgt_has_label"] = valid & np.isfinite(lab)
    train = valid & (ev_tg >= first_a[:, None])
    arrays["tgt_train"] = train
    arrays.update(user_arrays(prep, prep.ev_user[starts_a]))
    return TeacherWindows(arrays=arrays, target_event=np.where(train, ev_tg, -1), users=users,
                          input_event=np.where(valid, ev_in, -1))


def band_ages(enc: FeatureEncoder, ev_ts: np.ndarray, in_ev: np.ndarray, sel: np.ndarray, k: int) -> np.ndarray:
    """Age of each band event at its query, bucketized by the SDK's time-gap rule.

    ``in_ev`` (B, L) input events of a window batch, ``sel`` (B, L) the selected query
    slots; returns (P, k) bucket ids in the layout of ``WindowPass.bands`` (the newest
    event last; PAD where the band runs past the window's start). The query of slot j
    is made at its target's time, the next event.
    """
    B, L = in_ev.shape
    padded = np.concatenate([np.full((B, k - 1), -1, dtype=np.int64), in_ev], axis=1)
    b, j = np.nonzero(sel)
    ev = padded[b[:, None], j[:, None] + np.arange(k)[None, :]]  # (P, k)
    now = ev_ts[in_ev[b, j] + 1]
    ages = enc.encode_time_gaps(now[:, None], ev_ts[np.maximum(ev, 0)])
    ages[ev < 0] = PAD_ID
    return ages


def teacher_requests(prep: Prepared, enc: FeatureEncoder, users: np.ndarray, starts: np.ndarray,
                     n_past: np.ndarray, now: np.ndarray, cand_rows: np.ndarray,
                     gaps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Requests for :meth:`TeacherRanker.forward`: last-L histories and candidates (B, N)."""
    gaps = prev_gaps(prep, enc) if gaps is None else gaps
    out = enc.gather_history(prep.event_items(), prep.ev_event, prep.ev_ts, starts, n_past, now,
                             extra={"gap": gaps})  # hist_gap: since the previous event; hist_time_gap: to now
    n_past = np.asarray(n_past)
    last_ts = prep.ev_ts[np.maximum(np.asarray(starts) + n_past - 1, 0)]
    qg = enc.encode_time_gaps(np.asarray(now, dtype=np.float64), last_ts)
    out["query_gap"] = np.where(n_past > 0, qg, OOV_ID)  # cold start: no previous event
    out.update(user_arrays(prep, users))
    out.update(item_arrays(prep, cand_rows, "cand_"))
    return out


# ------------------------------------------------------------------------------ student
class HistoryMatches:
    """Earlier occurrences of candidate items in each user's log, in O(log E) per lookup.

    For a target event ``t`` of user ``u`` and a catalogue row ``i``, over the ``length``
    events of ``u`` before ``t`` (the teacher's history window): how often ``i`` occurs
    (``count``), how many events back its newest occurrence is (``lag``; 1 is the event
    just before ``t``; 0 when it does not occur) and that occurrence's event token
    (``event``, e.g. its rating; 0 when it does not occur). Keys are one sorted array of
    ``(user * n_items + item) * E + event index``, so any log size costs two binary
    searches per lookup. The request path (:meth:`TeacherRanker.forward`) computes the
    same three from the history it is given. Items whose id the teacher encodes as
    out-of-vocabulary (``id_field`` given) never match: the model cannot tell them apart.
    """

    def __init__(self, prep: Prepared, id_field: str | None = None):
        self.E, self.n_items = np.int64(len(prep.ev_item)), np.int64(prep.n_items)
        ids = prep.item_arrays.get(id_field) if id_field else None
        self.known = None if ids is None else np.asarray(ids).reshape(len(ids), -1)[:, 0] > OOV_ID
        self.ev_user = prep.ev_user.astype(np.int64)
        key = (self.ev_user * self.n_items + prep.ev_item) * self.E + np.arange(self.E, dtype=np.int64)
        order = np.argsort(key, kind="stable")
        self.keys, self.index, self.event = key[order], order.astype(np.int64), prep.ev_event[order]

    def lookup(self, events: np.ndarray, items: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``events`` (P,) target events, ``items`` (P, C) catalogue rows -> count, lag, event (P, C)."""
        t = np.asarray(events, dtype=np.int64)[:, None]
        base = (self.ev_user[t[:, 0]][:, None] * self.n_items + np.asarray(items, dtype=np.int64)) * self.E
        hi = np.searchsorted(self.keys, base + t - 1, side="right")
        lo = np.searchsorted(self.keys, base + np.maximum(t - length, 0), side="left")
        count = hi - lo
        if self.known is not None:
            count = np.where(self.known[items], count, 0)
        found = count > 0
        last = np.maximum(hi - 1, 0)
        if not len(self.keys):
            return count, np.zeros_like(count), np.zeros_like(count)
        lag = np.where(found, t - self.index[last], 0)
        return count, lag, np.where(found, self.event[last], 0).astype(np.int64)


class NegativeSampler:
    """Uniform items each user did not touch in the training period.

    ``train_end[u]`` is the end (exclusive) of user u's training events in the store:
    items the user touches later (validation, test) may be sampled, as they would be
    for a model that has not seen the future. Membership is a sorted array of
    ``user * n_items + item`` keys, so it costs O(log E) per draw at any catalogue size.
    """

    def __init__(self, prep: Prepared, seed: int, train_end: np.ndarray | None = None):
        self.n_items = prep.n_items
        self.rng = np.random.default_rng(seed)
        end = prep.user_offsets[1:] if train_end is None else np.asarray(train_end)
        pos = np.arange(len(prep.ev_user)) - prep.user_offsets[prep.ev_user]
        in_train = pos < (end - prep.user_offsets[:-1])[prep.ev_user]
        self.keys = np.unique(prep.ev_user[in_train] * np.int64(self.n_items) + prep.ev_item[in_train])

    def touched(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair (broadcast) is in the users' training period."""
        k = np.asarray(users, dtype=np.int64) * np.int64(self.n_items) + np.asarray(items, dtype=np.int64)
        i = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return self.keys[i] == k if len(self.keys) else np.zeros(k.shape, dtype=bool)

    def sample(self, users: np.ndarray, k: int) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = self.rng.integers(0, self.n_items, size=(len(users), k))
        for _ in range(20):  # resample collisions; a few rounds clear them all in practice
            bad = self.touched(users[:, None], out)
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


def hide_tokens(req: dict[str, np.ndarray], spec: FeatureSpec, share: float, rng: np.random.Generator) -> None:
    """Replace a ``share`` of a training request's event kinds and item ids with the OOV id, in place.

    A device meets kinds and ids the bundle never saw: an app's own event names, items
    added after training. Their out-of-vocabulary rows must then mean "some event" or
    "some item", not noise, so training shows them: each real history slot's event kind
    and item id and each candidate's item id is hidden with probability ``share``
    (independently), and a ``share`` of the requests have every event kind hidden (an
    app that logs kinds the bundle does not know). Attributes other than the id stay.
    """
    if share <= 0:
        return
    real = req["hist_mask"]
    ev = req["hist_event"]
    whole = rng.random(ev.shape[0]) < share
    ev[real & ((rng.random(ev.shape) < share) | whole[:, None])] = OOV_ID
    hid = req["hist_" + spec.item_id_field]
    hid[real & (rng.random(hid.shape) < share)] = OOV_ID
    cid = req["cand_" + spec.item_id_field]
    cid[rng.random(cid.shape) < share] = OOV_ID


def _shard(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """With ``world`` > 1 each rank takes every world-th batch (the same count each)."""
    if world <= 1:
        return batches
    keep = len(batches) - len(batches) % world if len(batches) >= world else len(batches)
    return batches[:keep][rank::world] if keep else batches[rank:rank + 1]


def iterate(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None,
            rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
    """Index batches; with ``world`` > 1 each rank takes every world-th batch (same count each)."""
    idx = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    yield from _shard([idx[i:i + batch_size] for i in range(0, n, batch_size)], rank, world)
