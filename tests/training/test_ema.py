"""The teacher's weight average (``train.teacher_ema``) never holds much of the initial weights."""

from __future__ import annotations

import torch
from torch import nn

from kdaliens.training.loop import _EMA


def test_average_follows_the_weights_from_the_first_updates():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    init = model.weight.detach().clone()
    ema = _EMA(model, 0.995)
    with torch.no_grad():
        model.weight.add_(1.0)  # the weights move once, then stay
    for _ in range(50):  # a long-window run's first steps: far fewer than 1 / (1 - 0.995)
        ema.update()
    ema.swap()
    share_of_init = ((model.weight - (init + 1.0)).abs().max() / 1.0).item()
    assert share_of_init < 1e-6, share_of_init  # a fixed 0.995 would still hold 0.995**50 = 78% of the init
    ema.swap()
    assert torch.equal(model.weight, init + 1.0)  # swap gives the live weights back


def test_long_runs_average_with_the_configured_decay():
    model = nn.Linear(2, 2, bias=False)
    ema = _EMA(model, 0.9)
    for _ in range(200):  # warm-up long over: the decay is 0.9
        ema.update()
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    for _ in range(10):
        ema.update()
    ema.swap()
    moved = (model.weight - start).mean().item()
    assert abs(moved - (1 - 0.9 ** 10)) < 1e-5  # 65% of the way after 10 updates
