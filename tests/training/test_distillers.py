"""The seed papers' distillers (``distill.method``): SPNN, LRC-BERT, EMKD, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import OOV_ID
from kdaliens.training.batches import NegativeSampler, band_ages, teacher_windows
from kdaliens.training.config import DistillConfig, RunConfig, merge, tiny_config
from kdaliens.training.data import load_prepared
from kdaliens.training.distill import (
    AngularContrastiveDistiller,
    DistillLoss,
    EmbeddingPerturbation,
    KnowledgeDetectorDistiller,
    TeacherSignals,
)
from kdaliens.training.distill.emkd import EnsembleObjective, augmented_views
from kdaliens.training.loop import Context
from kdaliens.training.models.student import StudentRanker
from kdaliens.training.models.teacher import Teacher, TeacherRanker
from kdaliens.training.student_loop import StudentObjective, student_batch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prep():
    return load_prepared("movielens-100k")


def _ctx(prep, method: str, *sets: str) -> Context:
    return Context(prep, merge(tiny_config(), sets=[f"distill.method={method}", *sets]))


@pytest.fixture(scope="module")
def signals(prep):
    """An (untrained) teacher's signals with intermediate layers, and a batch of 64 events."""
    ctx = _ctx(prep, "spnn+lrc")
    torch.manual_seed(0)
    sig = TeacherSignals(Teacher(ctx.t_spec, ctx.cfg.teacher), ctx)
    batch, events, cands = student_batch(ctx, np.arange(64), NegativeSampler(ctx.prep, 0, ctx.train_end), 4, seed=0,
                                         signals=sig)
    return sig, batch, sig.for_batch(events, cands)


def _no_grad(module: nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]


def test_methods_are_named_and_compose():
    assert DistillConfig().methods == ()
    assert DistillConfig(method="lrc+spnn").methods == ("spnn", "lrc")  # canonical order
    assert DistillConfig(method="emkd + lrc").methods == ("lrc", "emkd")
    for bad in ("kd", "default+lrc", "lrc+lrc", "", "spnn+"):
        with pytest.raises(InputError, match="distill.method"):
            DistillConfig(method=bad)
    with pytest.raises(InputError, match="teacher.ensemble"):
        merge(RunConfig(), sets=["distill.method=emkd", "teacher.ensemble=2"])
    cfg = merge(RunConfig(), {"distill": {"method": "lrc"}}, ["distill.lrc_stage1_epochs=0"])
    assert cfg.distill.methods == ("lrc",) and cfg.distill.lrc_stage1_epochs == 0


@pytest.mark.parametrize("method,parts", [
    ("default", {"logit", "click", "feature"}),
    ("spnn", {"logit", "click", "feature", "spnn"}),
    ("lrc", {"logit", "click", "feature", "lrc"}),
    ("spnn+lrc", {"logit", "click", "feature", "spnn", "lrc"}),
    ("emkd", {"logit", "click", "feature"}),  # EMKD changes the teacher, not the student's losses
])
def test_each_method_trains_the_student_with_its_losses(prep, signals, method, parts):
    ctx = _ctx(prep, method, "distill.lrc_stage1_epochs=0")
    torch.manual_seed(0)
    distill = DistillLoss(ctx.cfg.distill, ctx.cfg.student.dim, ctx.cfg.teacher.dim)
    assert set(distill.parts) == parts
    # the int8 graph has no intermediate layers: those parts stay out there
    assert set(DistillLoss(ctx.cfg.distill, 8, 16, intermediate=False).parts) == parts - {"spnn", "lrc"}
    sig, batch, t = signals
    assert t["layers"].shape == (64, 3, ctx.cfg.teacher.dim) and sig.with_layers
    student = StudentRanker(ctx.s_spec, ctx.cfg.student).train()
    objective = StudentObjective(student, distill, ctx.cfg.train)
    objective.set_epoch(0)
    loss, logs = objective(batch, t, 1.0)
    assert torch.isfinite(loss) and parts <= set(logs)
    assert ("perturbed" in logs) == ("lrc" in parts)
    loss.backward()
    assert not _no_grad(student)
    assert not _no_grad(distill)


def _layers(B=32, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, D, generator=g)


def _signals(t_layers, inter):
    return {"layers": t_layers, "interaction": inter, "kd_mask": torch.ones(len(t_layers), dtype=torch.bool)}


def _student(layers, inter):
    return {"user": layers[:, 0], "att": layers[:, 1:2], "item": layers[:, 2:3], "interaction": inter}


def test_spnn_detector_learns_where_the_teacher_knows_more():
    """The gate is per sample and layer; trained on its own, it rises on the samples where the
    teacher ranks the event's item better than the student, and falls on the others."""
    torch.manual_seed(0)
    B, D = 64, 16
    t_layers = _layers(B, D)
    inter_s = torch.zeros(B, 5)
    inter_t = torch.zeros(B, 5)
    inter_t[: B // 2, 0] = 4.0  # the teacher is sure of the item on the first half
    inter_t[B // 2:, 0] = -4.0
    s_layers = _layers(B, 8, seed=1).requires_grad_()
    t_layers[: B // 2] += 3.0  # the detector can tell the halves apart from the features
    d = KnowledgeDetectorDistiller(DistillConfig(method="spnn"), 8, D)
    opt = torch.optim.Adam(d.detect.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        d(_student(s_layers, inter_s), _signals(t_layers, inter_t), {}).backward()
        opt.step()
    gates = d.last_gates
    assert gates.shape == (B, 3)
    assert (gates[: B // 2] > 0.8).all() and (gates[B // 2:] < 0.2).all()
    # the matching term reaches the student and the adaptors, never the detector's input
    assert s_layers.grad is not None and s_layers.grad.abs().sum() > 0
    off = KnowledgeDetectorDistiller(DistillConfig(method="spnn", spnn_gate=False), 8, D)
    off(_student(s_layers, inter_s), _signals(t_layers, inter_t), {})
    assert torch.equal(off.last_gates, torch.ones(B, 3))


def test_lrc_loss_is_an_angular_contrast():
    """Pairs aligned in angle score lower than mismatched ones; lengths do not matter; a copy
    of the positive is not a negative; a memory bank replaces the in-batch negatives."""
    torch.manual_seed(0)
    B, D = 32, 16
    t_layers = _layers(B, D)
    cfg = DistillConfig(method="lrc", lrc_temperature=0.1)
    d = AngularContrastiveDistiller(cfg, D, D)
    for a in d.adapt:  # identity adaptors: the student's vectors are compared as they are
        nn.init.eye_(a.weight)
        nn.init.zeros_(a.bias)
    inter = torch.zeros(B, 5)
    aligned = d(_student(t_layers * 2.5, inter), _signals(t_layers, inter), {})
    shuffled = d(_student(t_layers[torch.randperm(B)], inter), _signals(t_layers, inter), {})
    assert aligned < 0.05 < shuffled
    torch.testing.assert_close(d(_student(t_layers, inter), _signals(t_layers * 7.0, inter), {}), aligned)
    dup = t_layers.clone()
    dup[1] = dup[0]  # two samples with the same teacher representation
    assert d(_student(dup, inter), _signals(dup, inter), {}) < 0.05
    bank = _layers(100, D, seed=3)
    with_bank = d(_student(t_layers, inter), {**_signals(t_layers, inter), "bank": bank}, {})
    assert torch.isfinite(with_bank) and with_bank < shuffled


def test_embedding_perturbation_follows_the_loss_gradient():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4)
    ids = torch.tensor([1, 2, 3])

    def loss_of() -> tuple[torch.Tensor, torch.Tensor]:
        out = emb(ids)
        return (out ** 2).sum() + out[:, 0].sum(), out

    with EmbeddingPerturbation(emb, 0.1) as tap:
        loss, out = loss_of()
        tap.perturb(loss)
        moved, out2 = loss_of()
    delta = out2 - out.detach()
    g = 2 * out.detach() + torch.tensor([1.0, 0, 0, 0])
    torch.testing.assert_close(delta, 0.1 * out.detach().norm() * g / g.norm())
    assert moved > loss  # uphill: an adversarial step
    assert not emb._forward_hooks  # the hooks are gone after the block


def test_lrc_two_stages(prep, signals):
    """Stage 1 trains only the contrastive part (no labels); stage 2 everything else; with
    lrc_stage1_epochs=0 one stage holds both."""
    ctx = _ctx(prep, "lrc", "distill.lrc_perturb=0")
    distill = DistillLoss(ctx.cfg.distill, ctx.cfg.student.dim, ctx.cfg.teacher.dim)
    _, batch, t = signals
    objective = StudentObjective(StudentRanker(ctx.s_spec, ctx.cfg.student), distill, ctx.cfg.train)
    assert objective.stage1_epochs == 2
    objective.set_epoch(1)
    loss, logs = objective(batch, t, 1.0)
    assert set(logs) == {"inter", "click", "lrc"} and torch.allclose(loss, logs["lrc"])
    objective.set_epoch(2)
    loss, logs = objective(batch, t, 1.0)
    assert "lrc" not in logs and {"logit", "click", "feature"} <= set(logs)
    one = merge(ctx.cfg, sets=["distill.lrc_stage1_epochs=0"])
    objective = StudentObjective(StudentRanker(ctx.s_spec, one.student),
                                 DistillLoss(one.distill, one.student.dim, one.teacher.dim), one.train)
    objective.set_epoch(0)
    _, logs = objective(batch, t, 1.0)
    assert {"lrc", "logit", "inter"} <= set(logs)


def test_emkd_views_are_masked_crops_ending_at_trained_positions(prep):
    ctx = _ctx(prep, "emkd")
    win = teacher_windows(ctx.prep, ctx.t_enc, ctx.cfg.teacher.history_len, ctx.train_end, overlap=8)
    rows = win.batches(16, np.random.default_rng(0))[3]
    arrays, _ = win.batch(rows)
    a, b = augmented_views(arrays, np.random.default_rng(0), crop=12, hide=0.3, item_id_field="item_id")
    Q = len(a["win_mask"])
    assert 0 < Q <= 4 * len(rows) and a["win_mask"].shape == b["win_mask"].shape == (Q, 12)
    assert a["win_class"].shape == (Q, 12, arrays["win_class"].shape[2]) and a["user_age"].shape == (Q,)
    assert a["win_mask"][:, -1].all() and (a["win_item_id"][:, -1] != OOV_ID).all()
    # the two views of a row end at the same event
    assert (a["win_item_id"][:, -1] == b["win_item_id"][:, -1]).all()
    real = a["win_mask"][:, :-1]
    hidden = (a["win_item_id"][:, :-1] == OOV_ID) & real
    assert 0.15 < hidden.sum() / real.sum() < 0.45  # about the 30% asked for
    assert (a["win_item_id"][~a["win_mask"]] == 0).all()  # outside the crop: padding
    assert not np.array_equal(a["win_mask"], b["win_mask"]) or not np.array_equal(a["win_item_id"], b["win_item_id"])


def test_emkd_objective_trains_every_member_with_every_part(prep):
    ctx = _ctx(prep, "emkd", "distill.emkd_members=2")
    torch.manual_seed(0)
    members = [TeacherRanker(ctx.t_spec, ctx.cfg.teacher) for _ in range(2)]
    obj = EnsembleObjective(members, ctx)
    win = teacher_windows(ctx.prep, ctx.t_enc, ctx.cfg.teacher.history_len, ctx.train_end, overlap=8)
    rows = win.batches(8, np.random.default_rng(0))[5]
    arrays, _ = win.batch(rows)
    sel = arrays["tgt_train"]
    ages = band_ages(ctx.t_enc, ctx.prep.ev_ts, win.inputs(rows), sel, min(members[0].k, sel.shape[1]))
    neg = NegativeSampler(ctx.prep, 0, ctx.train_end).sample(np.repeat(win.users[rows], sel.sum(1)), 4)
    views = tuple(ctx.tensors(v) for v in augmented_views(arrays, np.random.default_rng(0), 12, 0.2, "item_id"))
    loss, logs = obj(ctx.tensors(arrays), torch.from_numpy(neg), torch.arange(ctx.prep.n_items),
                     torch.from_numpy(ages), None, views)
    assert torch.isfinite(loss) and {"inter", "kl", "cl", "attr"} <= set(logs)
    assert [f.name for f in obj.attr[0].fields] == ["release_year", "class"]
    loss.backward()
    for m in members:
        assert not [n for n in _no_grad(m) if not n.startswith("click_head") and "interaction" not in n]
    assert not _no_grad(obj.proj) and not _no_grad(obj.attr)


@pytest.fixture(scope="module")
def composed_run(tmp_path_factory):
    """kdaliens-train --set distill.method=spnn+lrc+emkd on a small user log (30 users)."""
    from kdaliens.training.cli import main

    out = tmp_path_factory.mktemp("composed") / "run"
    assert main(["--data", str(ROOT / "examples/own_data/shop.csv"), "--out", str(out), "--preset", "tiny", "--quiet",
                 "--columns", "user_id=customer,item_id=sku,timestamp=time,rating=stars",
                 "--user-cols", "region,age", "--item-cols", "category",
                 "--set", "distill.method=spnn+lrc+emkd", "--set", "distill.lrc_stage1_epochs=1"]) == 0
    return out


def test_every_method_composed_trains_end_to_end(composed_run):
    """An EMKD teacher of three networks (a checkpoint that reloads), a contrastive-only first
    epoch, then labels; the int8 student passes ONNX's parity gate."""
    from kdaliens.export.api import export_bundle
    from kdaliens.training.checkpoint import load_model

    out = composed_run
    teacher, cfg, _, _ = load_model(out / "teacher.pt")
    assert cfg.distill.methods == ("spnn", "lrc", "emkd") and len(teacher.rank) == 3
    hist = json.loads((out / "history.json").read_text())
    assert {r["member"] for r in hist["teacher"]} == {"ensemble"}
    kd = hist["student_kd"]
    assert len(kd) == 2 and kd[0]["improved"] == [] and kd[1]["improved"]  # the warm-up epoch is never kept
    m = json.loads((out / "metrics.json").read_text())
    assert {"teacher", "student_plain", "student_kd", "student_kd_int8"} <= set(m)
    p = export_bundle(out, "onnx", out.parent / "onnx", log=lambda s: None)["parity"]  # raises if the gate refuses
    assert abs(p["auc_exported"] - p["auc_reference"]) <= 0.005


@pytest.mark.slow
@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_a_distilled_int8_student_exports_everywhere(composed_run, target):
    from kdaliens.export.api import export_bundle

    p = export_bundle(composed_run, target, composed_run.parent / target, log=lambda s: None)["parity"]
    assert abs(p["auc_exported"] - p["auc_reference"]) <= 0.005
