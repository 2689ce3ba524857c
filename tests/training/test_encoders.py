"""The sequence-encoder contract, for every registered encoder, and SAM's O(L) prefix read.

Contract (DESIGN.md, plug-ins): ``SEQUENCE_ENCODERS[name](dim, layers, heads, dropout)``,
called as ``encoder(x, mask, causal, **context)`` on (B, L, D), running with and without
context; causal states depend on the past only; left padding changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdaliens.training.config import merge, tiny_config
from kdaliens.training.data import load_prepared
from kdaliens.training.evaluation import request_scorer, teacher_scorer
from kdaliens.training.loop import Context
from kdaliens.training.models import teacher as _teacher  # noqa: F401  (fills the registry)
from kdaliens.training.models.layers import SEQUENCE_ENCODERS
from kdaliens.training.models.sam import prefix_read
from kdaliens.training.models.teacher import TeacherRanker

ENCODERS = sorted(SEQUENCE_ENCODERS)


def test_the_papers_encoders_are_registered():
    assert {"transformer", "sam", "dumn", "spnn"} <= set(SEQUENCE_ENCODERS)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_contract(name):
    torch.manual_seed(0)
    enc = SEQUENCE_ENCODERS[name](32, 2, 4, 0.1)
    B, L, D = 3, 40, 32
    x, mask = torch.randn(B, L, D), torch.ones(B, L, dtype=torch.bool)
    mask[0, :15] = False  # a left-padded row
    x = x * mask.unsqueeze(-1)
    enc.train()
    y = enc(x, mask, True)
    assert y.shape == (B, L, D) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)
    enc.eval()
    with torch.no_grad():
        y = enc(x, mask, True)
        # Context is optional, and context an encoder does not use is no error.
        assert torch.isfinite(enc(x, mask, True, target=torch.randn(B, L, D))).all()
        # Causal: changing events from slot 25 on leaves slots before it alone.
        x2 = x.clone()
        x2[:, 25:] += torch.randn(B, L - 25, D)
        assert (enc(x2, mask, True)[:, :25] - y[:, :25]).abs().max() < 1e-5
        # Left padding: the same events give the same states.
        xp = torch.cat([torch.zeros(B, 7, D), x], 1)
        mp = torch.cat([torch.zeros(B, 7, dtype=torch.bool), mask], 1)
        yp = enc(xp, mp, True)
        real = mask.unsqueeze(-1)
        assert ((yp[:, 7:] - y) * real).abs().max() < 1e-4
        assert (yp[:, :7] == 0).all()


@pytest.mark.parametrize("L", [1, 31, 32, 33, 200])
def test_sam_prefix_read_is_the_softmax_over_each_prefix(L):
    g = torch.Generator().manual_seed(L)
    s = torch.randn(2, 3, L, generator=g, dtype=torch.float64) * 8 + torch.arange(L) * 0.7
    s[0, :, : L // 3] = -1.0e4  # padding
    v = torch.randn(2, 3, L, 5, generator=g, dtype=torch.float64)
    got = prefix_read(s.float(), v.float()).double()
    assert torch.isfinite(got).all()
    for i in range(L):
        w = torch.softmax(s[..., : i + 1], -1)
        ref = (w.unsqueeze(-1) * v[:, :, : i + 1]).sum(2)
        real = (s[..., i] > -1.0e3).unsqueeze(-1)  # slots with a real event in their prefix
        assert ((got[:, :, i] - ref).abs() * real).max() < 1e-4


def test_sam_reads_a_thousand_events():
    enc = SEQUENCE_ENCODERS["sam"](64, 2, 4, 0.0)
    x, mask = torch.randn(2, 1000, 64), torch.ones(2, 1000, dtype=torch.bool)
    y = enc(x, mask, True)
    y.mean().backward()
    assert torch.isfinite(y).all()
    # The newest state still depends on the very first event (a memory of the whole history).
    x2 = x.clone()
    x2[:, 0] += 5.0
    with torch.no_grad():
        assert (enc(x2, mask, True)[:, -1] - y[:, -1].detach()).abs().max() > 1e-6


@pytest.fixture(scope="module")
def prep():
    return load_prepared("movielens-100k")


@pytest.mark.parametrize("name", ENCODERS)
def test_window_pass_equals_request_path(prep, name):
    """Training and evaluation read the teacher from window passes, serving from requests:
    for histories that fit a window they must agree, with any encoder."""
    cfg = merge(tiny_config(), None, ["teacher.history_len=64", "teacher.attn_len=16", f"teacher.seq_encoder={name}"])
    c = Context(prep, cfg)
    torch.manual_seed(0)
    model = TeacherRanker(c.t_spec, cfg.teacher).eval()
    r = prep.rank["test"]
    rows = np.flatnonzero(r["n_past"] < 48)[:100]
    a = teacher_scorer(model, c)(r, rows, r["items"][rows, :20], "interaction")
    b = request_scorer(model, c)(r, rows, r["items"][rows, :20], "interaction")
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("name", ENCODERS)
def test_teacher_objective_trains_with_every_encoder(prep, name):
    """One optimizer step of the teacher's real objective on real windows, per encoder."""
    from kdaliens.training.batches import band_ages, teacher_windows, to_torch
    from kdaliens.training.teacher_loop import TeacherObjective

    cfg = merge(tiny_config(), None, [f"teacher.seq_encoder={name}"])
    c = Context(prep, cfg)
    torch.manual_seed(0)
    model = TeacherRanker(c.t_spec, cfg.teacher)
    win = teacher_windows(prep, c.t_enc, cfg.teacher.history_len, c.train_end, overlap=4)
    arrays, _ = win.batch(np.arange(32))
    sel = arrays["tgt_train"]
    neg = torch.from_numpy(np.random.default_rng(0).integers(0, prep.n_items, size=(int(sel.sum()), 3)))
    ages = torch.from_numpy(band_ages(c.t_enc, prep.ev_ts, win.inputs(np.arange(32)), sel, model.k))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = TeacherObjective(model, c)
    losses = []
    for _ in range(3):
        sampled, catalogue, click = objective(to_torch(arrays), neg, torch.arange(prep.n_items), ages)
        loss = sampled + catalogue + click
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.slow
def test_kdaliens_train_with_sam(tmp_path):
    from kdaliens.training.cli import main

    out = tmp_path / "run"
    assert main(["--data", "movielens-100k", "--out", str(out), "--preset", "tiny",
                 "--set", "teacher.seq_encoder=sam"]) == 0
    import json

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher"]["seq_encoder"] == "sam"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"]["ranking"]["hr@10"] > 0.2


def _dumn_inputs(B=2, L=30, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :9] = False
    m = mask.unsqueeze(-1).float()
    return (torch.randn(B, L, D, generator=g) * m, mask, torch.randn(B, L, D, generator=g) * m,
            torch.randn(B, L, D, generator=g) * m)


def test_dumn_purification_is_an_orthogonal_projection():
    from kdaliens.training.models.dumn import purify

    g = torch.Generator().manual_seed(0)
    h_imp, h_exp = torch.randn(5, 7, 16, generator=g), torch.randn(5, 7, 16, generator=g)
    pure = purify(h_imp, h_exp)
    assert (pure * h_exp).sum(-1).abs().max() < 1e-4  # nothing left along the explicit direction
    # What was removed lies along h_exp: h_imp = pure + c * h_exp.
    c = (h_imp - pure) / h_exp
    assert torch.allclose(c, c[..., :1].expand_as(c), atol=1e-3)
    assert torch.equal(purify(h_imp, torch.zeros_like(h_exp)), h_imp)  # no explicit signal: unchanged

    torch.manual_seed(0)
    x, mask, imp, exp = _dumn_inputs()
    for on in (True, False):
        enc = SEQUENCE_ENCODERS["dumn"](16, 1, 2, 0.0, purify=on).eval()
        with torch.no_grad():
            enc(x, mask, True, implicit=imp, explicit=exp)
        h_i, h_e, interest = enc.last_summaries
        cos = torch.nn.functional.cosine_similarity(interest, h_e, dim=-1)[mask]
        if on:
            assert cos.abs().max() < 1e-4
        else:
            assert torch.equal(interest, h_i) and cos.abs().max() > 1e-2


def test_teacher_passes_purify_and_explicit_feedback_to_dumn(prep):
    cfg = merge(tiny_config(), None, ["teacher.seq_encoder=dumn", "teacher.purify=false"])
    c = Context(prep, cfg)
    model = TeacherRanker(c.t_spec, cfg.teacher)
    assert model.explicit and model.sequence.purify is False
    assert TeacherRanker(c.t_spec, merge(tiny_config(), None, ["teacher.seq_encoder=dumn"]).teacher).sequence.purify


def test_dumn_says_when_there_is_no_explicit_feedback(caplog, monkeypatch):
    import dataclasses
    import logging

    from kdaliens.sdk.features import CategoricalField, FeatureSpec
    from kdaliens.training.config import TeacherConfig
    from kdaliens.training.data.preprocess import IMPLICIT_EVENT
    from kdaliens.training.models import dumn

    monkeypatch.setattr(dumn, "_warned", set())
    x, mask, imp, exp = _dumn_inputs()
    enc = SEQUENCE_ENCODERS["dumn"](16, 1, 2, 0.0).eval()
    with caplog.at_level(logging.WARNING, logger="kdaliens.training"):
        with torch.no_grad():
            enc(x, mask, True, implicit=imp, explicit=exp)
            assert not caplog.records
            y = enc(x, mask, True, implicit=imp)  # no explicit feedback: said once, runs unpurified
            enc(x, mask, True)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "no explicit feedback" in msgs[0]
    assert torch.isfinite(y).all()
    h_i, h_e, interest = enc.last_summaries
    assert h_e is None and torch.equal(interest, h_i)
    # A teacher on implicit data (the event vocabulary is only the implicit token) passes none.
    spec = FeatureSpec(user_fields=(), item_fields=(CategoricalField("item_id", vocab=("a", "b")),),
                       event_vocab=(IMPLICIT_EVENT,))
    teacher = TeacherRanker(spec, dataclasses.replace(TeacherConfig(), seq_encoder="dumn", history_len=8))
    assert not teacher.explicit


def test_spnn_feature_importance_sums_to_one():
    torch.manual_seed(0)
    enc = SEQUENCE_ENCODERS["spnn"](16, 1, 2, 0.0).eval()
    x, mask, _, _ = _dumn_inputs()
    fields = torch.randn(2, 30, 4, 16) * mask[..., None, None]
    with torch.no_grad():
        y = enc(x, mask, True, fields=fields, time=torch.randn(2, 30, 16))
    w = enc.last_importance
    assert w.shape == (2, 30, 2, 4) and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(2, 30, 2), atol=1e-5)
    assert w.std() > 0  # the weights differ by feature and event, not a plain mean
    assert y.shape == (2, 30, 16) and (y[0, :9] == 0).all()
    with torch.no_grad():  # without context, x is the one feature
        enc(x, mask, True)
    assert torch.allclose(enc.last_importance, torch.ones(2, 30, 2, 1))
