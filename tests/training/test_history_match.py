"""The teacher's exact search of the history (``teacher.match_history``) on a log with repeats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdaliens.training.batches import HistoryMatches
from kdaliens.training.config import merge, tiny_config
from kdaliens.training.data import load_prepared
from kdaliens.training.data.long_history import LongHistoryConfig, write_recbole
from kdaliens.training.evaluation import request_scorer, teacher_scorer
from kdaliens.training.loop import Context
from kdaliens.training.models.teacher import TeacherRanker


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    """A small synthetic log where items come back 20-40 events later (and by popularity)."""
    folder = tmp_path_factory.mktemp("repeats") / "data"
    write_recbole(folder, LongHistoryConfig(users=40, min_events=60, max_events=90, items=400, topics=8,
                                            repeat_rate=0.3, repeat_min_lag=20, repeat_max_lag=40, seed=3))
    return load_prepared(str(folder))


def _brute(prep, t: int, item: int, length: int) -> tuple[int, int, int]:
    u = prep.ev_user[t]
    lo = max(prep.user_offsets[u], t - length)
    hits = [j for j in range(lo, t) if prep.ev_item[j] == item]
    if not hits:
        return 0, 0, 0
    return len(hits), t - hits[-1], int(prep.ev_event[hits[-1]])


def test_lookup_matches_a_brute_force_scan(prep):
    finder = HistoryMatches(prep)
    rng = np.random.default_rng(0)
    events = rng.integers(0, len(prep.ev_item), size=300)
    # Half the candidates are items of the same user's log, so most lookups find something.
    own = prep.ev_item[np.clip(events[:, None] - rng.integers(1, 60, size=(300, 4)), 0, None)]
    items = np.concatenate([own, rng.integers(0, prep.n_items, size=(300, 4))], axis=1)
    count, lag, event = finder.lookup(events, items, 32)
    found = 0
    for p, t in enumerate(events):
        for c, item in enumerate(items[p]):
            expect = _brute(prep, int(t), int(item), 32)
            assert (count[p, c], lag[p, c], event[p, c]) == expect
            found += expect[0] > 0
    assert found > 300  # the test exercised real matches, not only misses


def test_window_pass_equals_request_path_with_matches(prep):
    """Evaluation (window pass + lookups) and serving (request histories) agree, also for
    candidates the user has consumed before."""
    cfg = merge(tiny_config(), None, ["teacher.history_len=128", "teacher.attn_len=16", "teacher.match_history=true"])
    c = Context(prep, cfg)
    torch.manual_seed(0)
    model = TeacherRanker(c.t_spec, cfg.teacher).eval()
    with torch.no_grad():  # make the match path matter to the scores
        model.match_lag.weight.normal_(0, 1.0)
        model.match_count.weight.normal_(0, 1.0)
    r = prep.rank["test"]
    rows = np.flatnonzero(r["n_past"] < 100)
    assert len(rows) >= 10
    past = prep.ev_item[r["start"][rows, None] + np.minimum(np.arange(8)[None, :], r["n_past"][rows, None] - 1)]
    cands = np.concatenate([r["items"][rows, :8], past], axis=1)
    a = teacher_scorer(model, c)(r, rows, cands, "interaction")
    b = request_scorer(model, c)(r, rows, cands, "interaction")
    np.testing.assert_allclose(a, b, atol=1e-4)
    off = TeacherRanker(c.t_spec, merge(cfg, None, ["teacher.match_history=false"]).teacher).eval()
    off.load_state_dict({k: v for k, v in model.state_dict().items() if "match" not in k})
    plain = request_scorer(off, c)(r, rows, cands, "interaction")
    assert np.abs(b[:, 8:] - plain[:, 8:]).max() > 1e-3  # consumed candidates: the search changed their scores


def test_teacher_trains_with_matches(prep):
    """A short real teacher fit with the search on: finite losses, the match tables learn."""
    from kdaliens.training.loop import DistEnv
    from kdaliens.training.teacher_loop import train_teacher

    cfg = merge(tiny_config(), None, ["teacher.history_len=64", "teacher.match_history=true", "train.epochs=1"])
    c = Context(prep, cfg)
    torch.manual_seed(0)
    before = TeacherRanker(c.t_spec, cfg.teacher).match_lag.weight.detach().clone()
    res = train_teacher(c, DistEnv(), lambda s: None)
    after = res.model.rank[0].match_lag.weight.detach()
    assert torch.isfinite(after).all()
    assert (after - before).abs().max() > 1e-4
