"""Smoke runs of every model and loss on tiny configs, gradient flow, encoder parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdaliens.training.batches import (
    NegativeSampler,
    band_ages,
    student_requests,
    teacher_requests,
    teacher_windows,
    to_torch,
)
from kdaliens.training.config import merge, tiny_config
from kdaliens.training.data import load_dataset, load_prepared
from kdaliens.training.distill import DISTILLERS, DistillLoss, TeacherSignals
from kdaliens.training.evaluation import request_scorer, teacher_scorer
from kdaliens.training.loop import Context
from kdaliens.training.models.layers import INTERACTION_BLOCKS, SEQUENCE_ENCODERS
from kdaliens.training.models.student import StudentRanker
from kdaliens.training.models.teacher import Teacher, TeacherRanker
from kdaliens.training.student_loop import StudentObjective, student_batch
from kdaliens.training.teacher_loop import TeacherObjective


@pytest.fixture(scope="module")
def ctx():
    return Context(load_prepared("movielens-100k"), tiny_config())


def _grads_everywhere(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]


def test_registries_hold_the_default_parts():
    assert "transformer" in SEQUENCE_ENCODERS and "alien" in INTERACTION_BLOCKS
    assert {"logit", "click", "feature", "rd"} <= set(DISTILLERS)


def test_teacher_windows_train_every_target_once_with_context(ctx):
    L, overlap = 20, 8
    win = teacher_windows(ctx.prep, ctx.t_enc, L, ctx.train_end, overlap=overlap)
    trained = win.target_event[win.target_event >= 0]
    # Every training event but each user's first is a trained target, exactly once.
    expected = sum(int(ctx.train_end[u] - ctx.prep.user_offsets[u]) - 1 for u in range(ctx.prep.n_users))
    assert len(trained) == len(np.unique(trained)) == expected
    # Context-only slots (at most `overlap`) come first; after them every slot trains.
    for w in range(len(win)):
        valid, train = win.arrays["win_mask"][w], win.arrays["tgt_train"][w]
        first_real, first_train = int(np.argmax(valid)), int(np.argmax(train))
        assert first_train - first_real <= overlap and train[first_train:].all()
    # Users with more than a window of events get windows with a full `overlap` of context.
    ctx_slots = (win.arrays["win_mask"] & ~win.arrays["tgt_train"]).sum(1)
    assert (ctx_slots == overlap).sum() > 100


def test_teacher_objective_smoke_and_gradients(ctx):
    torch.manual_seed(0)
    teacher = TeacherRanker(ctx.t_spec, ctx.cfg.teacher)
    win = teacher_windows(ctx.prep, ctx.t_enc, ctx.cfg.teacher.history_len, ctx.train_end, overlap=4)
    arrays, _ = win.batch(np.arange(16))
    sel = arrays["tgt_train"]
    P = int(sel.sum())
    neg = torch.from_numpy(np.random.default_rng(0).integers(0, ctx.prep.n_items, size=(P, 3)))
    ages = torch.from_numpy(band_ages(ctx.t_enc, ctx.prep.ev_ts, win.inputs(np.arange(16)), sel, teacher.k))
    sampled, catalogue, click = TeacherObjective(teacher, ctx)(to_torch(arrays), neg, torch.arange(ctx.prep.n_items),
                                                               ages)
    assert all(torch.isfinite(t) for t in (sampled, catalogue, click))
    (sampled + catalogue + click).backward()
    # Everything gets gradient, except the output bias of the candidate-aware interaction
    # term: it shifts every candidate's logit equally, and a softmax is blind to that.
    missing = [n for n in _grads_everywhere(teacher) if n != "rank_out.2.0.bias"]
    assert not missing, missing
    teacher.eval()
    r = ctx.prep.rank["test"]
    req = teacher_requests(ctx.prep, ctx.t_enc, r["user"][:4], r["start"][:4], r["n_past"][:4], r["ts"][:4],
                           r["items"][:4])
    out = teacher(to_torch(req))
    assert out["interaction"].shape == (4, 101) and out["click_logit"].shape == (4, 101)
    assert torch.isfinite(out["interaction"]).all() and torch.isfinite(out["click_logit"]).all()
    # The ALIEN block exposes which field pairs it attends to.
    att = teacher.interaction.last_attention
    n_fields = len(ctx.t_spec.user_fields) + len(ctx.t_spec.item_fields) + 3
    assert att is not None and att.shape[-2:] == (n_fields, n_fields)


def test_window_pass_scores_equal_request_scores(ctx):
    """Evaluation and distillation read the teacher from one window pass; for histories
    that fit a window it is exactly the served request path."""
    cfg = merge(tiny_config(), None, ["teacher.history_len=64", "teacher.attn_len=16"])
    c = Context(ctx.prep, cfg)
    torch.manual_seed(0)
    model = TeacherRanker(c.t_spec, cfg.teacher).eval()
    r = ctx.prep.rank["test"]
    rows = np.flatnonzero(r["n_past"] < 48)[:200]
    a = teacher_scorer(model, c)(r, rows, r["items"][rows, :20], "interaction")
    b = request_scorer(model, c)(r, rows, r["items"][rows, :20], "interaction")
    np.testing.assert_allclose(a, b, atol=1e-5)
    d = ctx.prep.ctr["test"]
    rows = np.flatnonzero(d["n_past"] < 48)[:300]
    a = teacher_scorer(model, c)(d, rows, d["item"][rows, None], "click_logit")
    b = request_scorer(model, c)(d, rows, d["item"][rows, None], "click_logit")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_negatives_avoid_only_the_training_period(ctx):
    s = NegativeSampler(ctx.prep, 0, ctx.train_end)
    users = np.repeat(np.arange(ctx.prep.n_users), 50)
    negs = s.sample(users, 20)
    prep = ctx.prep
    for u in range(0, prep.n_users, 50):
        train_items = set(prep.ev_item[prep.user_offsets[u]:ctx.train_end[u]].tolist())
        assert not train_items & set(negs[users == u].ravel().tolist())
    # Items a user touches only later (validation/test) are fair negatives.
    later = [(u, i) for u in range(prep.n_users)
             for i in set(prep.ev_item[ctx.train_end[u]:prep.user_offsets[u + 1]].tolist())
             - set(prep.ev_item[prep.user_offsets[u]:ctx.train_end[u]].tolist())]
    uu, ii = np.array(later).T
    assert not s.touched(uu, ii).any()


def test_student_and_every_distill_loss_get_gradients(ctx):
    torch.manual_seed(0)
    student = StudentRanker(ctx.s_spec, ctx.cfg.student)
    ctx.cfg.distill.rd_weight = 0.5  # every distiller on
    distill = DistillLoss(ctx.cfg.distill, ctx.cfg.student.dim, ctx.cfg.teacher.dim)
    assert set(distill.parts) == {"logit", "click", "feature", "rd"}
    sig = TeacherSignals(Teacher(ctx.t_spec, ctx.cfg.teacher), ctx)
    assert int(sig.has.sum()) > 0.9 * len(ctx.train_rows)
    batch, events, cands = student_batch(ctx, np.arange(64), NegativeSampler(ctx.prep, 0, ctx.train_end), 4, seed=0,
                                         signals=sig)
    H = ctx.cfg.distill.hard_negatives
    assert cands.shape == (64, 1 + H + 4) and batch["cand_teacher_top"][:, 1:1 + H].all()
    t = sig.for_batch(events, cands)
    assert t["interaction"].shape == (64, 1 + H + 4) and t["click_logit"].shape == (64, 1 + H)
    loss, logs = StudentObjective(student, distill, ctx.cfg.train)(batch, t, 1.0)
    assert torch.isfinite(loss)
    assert {"inter", "click", "logit", "feature", "rd"} <= set(logs)
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
    for enc, req, _keys in ((ctx.s_enc, s_req, None), (ctx.t_enc, t_req, None)):
        for j, b in enumerate(rows):
            s, n = r["start"][b], r["n_past"][b]
            events = [{"item_id": prep.item_ids[prep.ev_item[e]], "ts": prep.ev_ts[e],
                       "event": prep.spec.event_vocab[prep.ev_event[e] - 2]} for e in range(s, s + n)]
            raw = enc.encode_history(events, now=r["ts"][b] + 1e-3, item_attributes=items)
            for k, v in raw.items():
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
    history = json.loads((out / "history.json").read_text())
    for name, m in on_disk.items():
        assert set(m["ctr"]) == {"auc", "gauc", "logloss"} and set(m["ranking"]) == {"hr@10", "ndcg@10"}
        full = m["ranking_full"]
        assert full["users"] == len(load_prepared("movielens-100k").rank["test"]["user"])
        # Against the whole catalogue the same model ranks the target lower than against 100 samples.
        assert 0 <= full["hr@10"] <= m["ranking"]["hr@10"] and 0 <= full["ndcg@10"] <= m["ranking"]["ndcg@10"]
        rows = history[name]
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and rows
        assert all(r["epoch_seconds"] > 0 and "val" in r for r in rows)
        assert 0.5 < m["ctr"]["auc"] < 1 and 0 < m["ranking"]["hr@10"] <= 1
        assert m["params"] > 0 and m["size_bytes"] > 0
        assert (out / f"{name}.pt").exists()
    assert on_disk["student_kd_int8"]["size_bytes"] < 0.5 * on_disk["student_kd"]["size_bytes"]
    for f in ("config.json", "spec.json", "teacher_spec.json", "history.json"):
        assert (out / f).exists()
    # Epoch-based by default: no wall-clock budget recorded.
    assert json.loads((out / "config.json").read_text())["train"]["max_minutes"] is None


def test_click_members_join_only_the_click_average(tmp_path):
    """teacher.click_members adds click-only networks: the click logit averages all of them,
    the interaction logit stays the members', and a checkpoint rebuilds the same teacher."""
    from kdaliens.training.checkpoint import load_model, save_checkpoint
    from kdaliens.training.loop import DistEnv
    from kdaliens.training.teacher_loop import train_teacher

    cfg = merge(tiny_config(), sets=["teacher.click_members=1", "train.teacher_batch=64"])
    c = Context(load_prepared("movielens-100k"), cfg)
    res = train_teacher(c, DistEnv(), lambda s: None)
    t = res.model
    assert len(t.rank) == 1 and len(t.click) == 2
    assert sorted({r["member"] for r in res.history}) == [0, 1]
    d = c.prep.ctr["val"]
    req = c.tensors(teacher_requests(c.prep, c.t_enc, d["user"][:8], d["start"][:8], d["n_past"][:8], d["ts"][:8],
                                     d["item"][:8, None].repeat(3, 1), gaps=c.gaps))
    with torch.no_grad():
        out = t(req)
        each = [net(req)["click_logit"] for net in t.click]
        torch.testing.assert_close(out["click_logit"], (each[0] + each[1]) / 2)
        torch.testing.assert_close(out["interaction"], t.rank[0](req, with_click=False)["interaction"])
        assert not torch.allclose(each[0], each[1])  # independently seeded
    save_checkpoint(tmp_path / "teacher.pt", "teacher", cfg, c.t_spec, t.state_dict())
    back, _, _, _ = load_model(tmp_path / "teacher.pt")
    with torch.no_grad():
        torch.testing.assert_close(back(req)["click_logit"], out["click_logit"])


def test_training_hides_a_share_of_kinds_and_ids(ctx):
    """``train.unknown_share`` hides event kinds and item ids (real slots only), reproducibly."""
    from kdaliens.sdk.features import OOV_ID, PAD_ID

    negs = NegativeSampler(ctx.prep, 0, ctx.train_end)
    rows = np.arange(2048)
    clean, _, _ = student_batch(ctx, rows, negs, 4, seed=0)
    negs = NegativeSampler(ctx.prep, 0, ctx.train_end)
    hidden, _, _ = student_batch(ctx, rows, negs, 4, seed=0, hide=np.random.default_rng(1))
    share = ctx.cfg.train.unknown_share
    assert share == 0.05  # the documented default
    real = clean["hist_mask"].numpy()
    assert (hidden["hist_mask"] == clean["hist_mask"]).all()
    for key in ("hist_event", "hist_item_id"):
        a, b = clean[key].numpy(), hidden[key].numpy()
        assert (a[~real] == PAD_ID).all() and (b[~real] == PAD_ID).all()  # padding stays padding
        changed = a != b
        assert (b[changed] == OOV_ID).all()
        frac = changed[real].mean()
        # kinds: each slot 5%, plus 5% of requests whole (about 1 - 0.95^2); ids: 5%.
        expect = 1 - (1 - share) ** 2 if key == "hist_event" else share
        assert abs(frac - expect) < 0.02, (key, frac)
    whole = ((hidden["hist_event"].numpy() == OOV_ID) | ~real).all(1) & real.any(1)
    assert 0.02 < whole.mean() < 0.09
    c = (clean["cand_item_id"] != hidden["cand_item_id"]).numpy()
    assert abs(c.mean() - share) < 0.02 and (hidden["cand_item_id"].numpy()[c] == OOV_ID).all()
    # The item attributes stay: only ids and kinds are hidden.
    assert all((clean[k] == hidden[k]).all() for k in clean if k.startswith("cand_") and k != "cand_item_id")
    negs = NegativeSampler(ctx.prep, 0, ctx.train_end)
    again, _, _ = student_batch(ctx, rows, negs, 4, seed=0, hide=np.random.default_rng(1))
    assert all((again[k] == hidden[k]).all() for k in hidden)
