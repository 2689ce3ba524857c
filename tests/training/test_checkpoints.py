"""Checkpoints load with weights_only=True and reproduce their metrics."""

from __future__ import annotations

import json

import pytest
import torch

from kdaliens.sdk import InputError
from kdaliens.training.checkpoint import load_model
from kdaliens.training.data import load_prepared
from kdaliens.training.loop import Context
from kdaliens.training.student_loop import evaluate_student
from kdaliens.training.teacher_loop import evaluate_teacher


@pytest.mark.parametrize("name", ["teacher", "student_plain", "student_kd", "student_kd_int8"])
def test_checkpoint_reproduces_metrics(tiny_run, name):
    out, _ = tiny_run
    payload = torch.load(out / f"{name}.pt", weights_only=True)
    assert payload["format"] == "kdaliens-checkpoint" and "config" in payload and "spec" in payload
    model, cfg, spec, extra = load_model(out / f"{name}.pt")
    ctx = Context(load_prepared("movielens-100k", cfg.data, cfg.split), cfg)
    evaluate = evaluate_teacher if name == "teacher" else evaluate_student
    with torch.no_grad():
        m = evaluate(model, ctx, "test")
    saved = json.loads((out / "metrics.json").read_text())[name]
    assert m["ctr"]["auc"] == pytest.approx(saved["ctr"]["auc"], abs=1e-6)
    assert m["ranking"]["hr@10"] == pytest.approx(saved["ranking"]["hr@10"], abs=1e-9)
    assert m["ranking"]["ndcg@10"] == pytest.approx(saved["ranking"]["ndcg@10"], abs=1e-6)


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_model(p)
    torch.save({"format": "other"}, p)
    with pytest.raises(InputError, match="not a kdaliens checkpoint"):
        load_model(p)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")


def test_run_files_are_readable_by_others(tiny_run):
    """A run folder is meant to be shared (a CI artifact, a colleague's export): ordinary 0644
    files, not the 0600 of the temporary files they are written through."""
    import stat

    run_dir, _ = tiny_run
    for name in ("metrics.json", "config.json", "history.json", "student_kd.pt", "teacher.pt"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name
