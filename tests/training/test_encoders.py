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
    assert {"transformer", "sam"} <= set(SEQUENCE_ENCODERS)


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
        losses.append(float(loss))
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
