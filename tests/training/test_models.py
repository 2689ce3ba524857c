"""Smoke runs of every model and loss on tiny configs, gradient flow, encoder parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdaliens.training.batches import (
    NegativeSampler,
    student_requests,
    teacher_requests,
    teacher_windows,
    to_torch,
)
from kdaliens.training.config import tiny_config
from kdaliens.training.data import load_dataset, load_prepared
from kdaliens.training.distill import DISTILLERS, DistillLoss
from kdaliens.training.loop import (
    Context,
    _student_batch,
    _StudentTrainModule,
    _TeacherTrainModule,
    teacher_signals,
)
from kdaliens.training.models.layers import INTERACTION_BLOCKS, SEQUENCE_ENCODERS
from kdaliens.training.models.student import StudentRanker
from kdaliens.training.models.teacher import TeacherRanker


@pytest.fixture(scope="module")
def ctx():
    return Context(load_prepared("movielens-100k"), tiny_config())


def _grads_everywhere(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]


def test_registries_hold_the_default_parts():
    assert "transformer" in SEQUENCE_ENCODERS and "alien" in INTERACTION_BLOCKS
    assert {"logit", "click", "feature"} <= set(DISTILLERS)


def test_teacher_windows_and_requests_smoke_and_gradients(ctx):
    torch.manual_seed(0)
    teacher = TeacherRanker(ctx.t_spec, ctx.cfg.teacher)
    win = teacher_windows(ctx.prep, ctx.t_enc, ctx.cfg.teacher.history_len, ctx.train_end)
    rows = np.arange(16)
    b = to_torch(win.batch(rows)[0])
    negs = ctx.prep.item_arrays
    rows_neg = np.random.default_rng(0).integers(0, ctx.prep.n_items, size=b["win_mask"].shape + (3,))
    b.update(to_torch({"neg_" + k: v[rows_neg] for k, v in negs.items()}))
    inter, click = _TeacherTrainModule(teacher)(b, ctx.catalogue)
    assert torch.isfinite(inter) and torch.isfinite(click)
    (inter + click).backward()
    # The whole teacher gets gradient, except position slots no window used and the
    # output bias of the target-aware interaction term: it shifts every candidate's
    # logit equally, and a softmax is blind to that (its gradient is zero up to rounding).
    last = len(teacher.interaction_head) - 1
    missing = [n for n in _grads_everywhere(teacher) if n not in ("pos_emb.weight", f"interaction_head.{last}.bias")]
    assert not missing, missing
    teacher.eval()
    r = ctx.prep.rank["test"]
    req = teacher_requests(ctx.prep, ctx.t_enc, r["user"][:4], r["start"][:4], r["n_past"][:4], r["ts"][:4],
                           r["items"][:4])
    out = teacher(to_torch(req))
    assert out["interaction"].shape == (4, 101) and out["click"].shape == (4, 101)
    assert torch.isfinite(out["interaction"]).all() and torch.isfinite(out["click"]).all()
    # The ALIEN block exposes which field pairs it attends to.
    att = teacher.interaction.last_attention
    n_fields = len(ctx.t_spec.user_fields) + len(ctx.t_spec.item_fields) + 2
    assert att is not None and att.shape[-2:] == (n_fields, n_fields)


def test_student_and_every_distill_loss_get_gradients(ctx):
    torch.manual_seed(0)
    student = StudentRanker(ctx.s_spec, ctx.cfg.student)
    distill = DistillLoss(ctx.cfg.distill, ctx.cfg.student.dim, ctx.cfg.teacher.dim)
    assert set(distill.parts) == {"logit", "click", "feature"}
    sig = teacher_signals(TeacherRanker(ctx.t_spec, ctx.cfg.teacher), ctx)
    assert sig.has.sum() > 0.9 * len(ctx.train_rows)
    batch, events, cands = _student_batch(ctx, np.arange(64), NegativeSampler(ctx.prep, 0), 4, seed=0)
    loss, logs = _StudentTrainModule(student, distill, ctx.cfg.train)(batch, sig.for_batch(events, cands), 1.0)
    assert torch.isfinite(loss)
    assert {"inter", "click", "logit", "feature"} <= set(logs)
    loss.backward()
    assert not _grads_everywhere(student)
    assert not _grads_everywhere(distill)


def test_student_handles_cold_start_and_one_candidate(ctx):
    student = StudentRanker(ctx.s_spec, ctx.cfg.student).eval()
    enc = ctx.s_enc
    req = enc.encode_history([], now=0.0)
    batch = {k: v[None] for k, v in req.items()}
    batch.update({"user_" + k: v for k, v in enc.encode_user({}).items()})
    items = enc.encode_items([{"item_id": "50"}])
    batch.update({"cand_" + k: v[None] for k, v in items.items()})
    out = student(to_torch(batch))
    assert out["interaction"].shape == (1, 1) and torch.isfinite(out["interaction"]).all()


def test_model_inputs_equal_sdk_encoder_arrays(ctx):
    """Student and teacher batches are what the SDK encodes from raw events."""
    prep = ctx.prep
    items = {r["item_id"]: r for r in load_dataset("movielens-100k").items.to_dict("records")}
    users = {r["user_id"]: r for r in load_dataset("movielens-100k").users.to_dict("records")}
    r = prep.rank["test"]
    rows = np.arange(0, len(r["user"]), 97)
    cands = r["items"][rows][:, :5]
    s_req = student_requests(prep, ctx.s_enc, r["user"][rows], r["start"][rows], r["n_past"][rows], r["ts"][rows],
                             cands)
    t_req = teacher_requests(prep, ctx.t_enc, r["user"][rows], r["start"][rows], r["n_past"][rows], r["ts"][rows],
                             cands)
    for enc, req, keys in ((ctx.s_enc, s_req, None), (ctx.t_enc, t_req, {"hist_time_gap"})):
        for j, b in enumerate(rows):
            s, n = r["start"][b], r["n_past"][b]
            events = [{"item_id": prep.item_ids[prep.ev_item[e]], "ts": prep.ev_ts[e],
                       "event": prep.spec.event_vocab[prep.ev_event[e] - 2]} for e in range(s, s + n)]
            raw = enc.encode_history(events, now=r["ts"][b] + 1e-3, item_attributes=items)
            for k, v in raw.items():
                if keys and k in keys:
                    continue  # the teacher replaces time-to-now by time-since-previous
                np.testing.assert_array_equal(v, req[k][j], err_msg=k)
            u = enc.encode_user(users[prep.user_ids[r["user"][b]]])
            for k, v in u.items():
                assert req["user_" + k][j] == v[0]
            c = enc.encode_items([items[prep.item_ids[i]] for i in cands[j]])
            for k, v in c.items():
                np.testing.assert_array_equal(req["cand_" + k][j], v)


def test_tiny_run_writes_the_run_directory(tiny_run):
    out, metrics = tiny_run
    assert set(metrics) == {"teacher", "student_plain", "student_kd", "student_kd_int8"}
    on_disk = json.loads((out / "metrics.json").read_text())
    for name, m in on_disk.items():
        assert set(m["ctr"]) == {"auc", "gauc", "logloss"} and set(m["ranking"]) == {"hr@10", "ndcg@10"}
        assert 0.5 < m["ctr"]["auc"] < 1 and 0 < m["ranking"]["hr@10"] <= 1
        assert m["params"] > 0 and m["size_bytes"] > 0
        assert (out / f"{name}.pt").exists()
    assert on_disk["student_kd_int8"]["size_bytes"] < 0.5 * on_disk["student_kd"]["size_bytes"]
    for f in ("config.json", "spec.json", "teacher_spec.json", "history.json"):
        assert (out / f).exists()
