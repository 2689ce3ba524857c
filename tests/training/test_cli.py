"""kdaliens-train's flags: presets, --set, --device, --max-minutes, and the synthetic log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdaliens.sdk import InputError
from kdaliens.training.cli import build_parser, config_from_args, main
from kdaliens.training.config import RunConfig, merge, preset, tiny_config
from kdaliens.training.data import load_dataset
from kdaliens.training.data.synthetic import SyntheticConfig, generate, write_sasrec


def _cfg(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["--data", "x", "--out", "y", *argv]))


def test_presets_and_overrides_compose_in_order(tmp_path: Path):
    assert _cfg() == RunConfig()
    assert _cfg("--preset", "tiny") == tiny_config() == _cfg("--tiny")
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"teacher": {"dim": 32}, "train": {"epochs": 4}}))
    cfg = _cfg("--preset", "tiny", "--config", str(f), "--set", "teacher.dim=48", "--set", "teacher.mlp=[8,4]",
               "--set", "distill.method=default", "--epochs", "2", "--seed", "5", "--device", "cpu")
    assert cfg.teacher.dim == 48 and cfg.teacher.mlp == (8, 4) and cfg.teacher.history_len == 20  # tiny kept
    assert cfg.train.epochs == 2 and cfg.train.seed == 5 and cfg.train.device == "cpu"
    assert cfg.train.max_minutes is None
    assert _cfg("--max-minutes", "7.5").train.max_minutes == 7.5
    # Values that are not JSON stay strings; the dataclass then checks them.
    assert merge(preset("default"), None, ["train.device=cpu"]).train.device == "cpu"
    # How the log is read and split are typed sections too; column maps stay free-form.
    cfg = merge(preset("default"), {"data": {"implicit": True}}, ["split.rank_negatives=50", "data.columns.user_id=uid"])
    assert cfg.split.rank_negatives == 50 and cfg.data.columns == {"user_id": "uid"} and cfg.data.implicit is True
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    # Renamed keys keep their old names (old checkpoints and config files still load).
    old = merge(preset("default"), {"train": {"interaction_weight": 0.5}}, ["train.click_weight=0.25"])
    assert (old.train.hard_interaction_weight, old.train.hard_click_weight) == (0.5, 0.25)


@pytest.mark.parametrize("item, message", [
    ("teacher.dimm=3", "unknown key 'dimm'"),
    ("teachr.dim=3", "unknown config section 'teachr'"),
    ("teacher.dim=abc", "expected int"),
    ("teacher=3", "expected section.key=value"),
    ("train.device=tpu", "train.device must be one of"),
    ("train.max_minutes=0", "max_minutes must be > 0"),
    ("distill.method=nope", "distill.method 'nope' is not available"),
    ("split.foo=1", "unknown key 'foo' in split"),
    ("split.seed=a", "run.split.seed: expected int"),
    ("data.implicit=3", "run.data.implicit: expected true, false or null"),
    ("data.columns=3", "run.data.columns: expected an object of strings"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(InputError, match=message):
        merge(preset("default"), None, [item])


def test_cli_reports_bad_flags_without_a_traceback(capsys, tmp_path: Path):
    assert main(["--data", "movielens-100k", "--out", str(tmp_path / "r"), "--set", "teacher.dimm=3"]) == 2
    err = capsys.readouterr().err
    assert "kdaliens-train: error:" in err and "dimm" in err and "Traceback" not in err


def test_tiny_pipeline_on_the_cpu_with_a_time_budget(tmp_path: Path, tiny_run):
    """The command line end to end: --device cpu, an opt-in budget recorded in config.json.

    The budget is far from binding, so the run must give the same models as the session's
    in-process tiny run (same preset and seed, one thread): the same seed, the same metrics.
    """
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "kdaliens.training", "--data", "movielens-100k", "--out", str(out),
                        "--preset", "tiny", "--device", "cpu", "--max-minutes", "30", "--set", "train.threads=1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "time budget 30.0 min" in r.stderr
    assert json.loads((out / "config.json").read_text())["train"]["max_minutes"] == 30.0
    assert json.loads((out / "run.json").read_text())["device"] == "cpu"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "student_plain", "student_kd", "student_kd_int8"}
    assert all("ranking_full" in m for m in metrics.values())
    _, reference = tiny_run
    for name, m in metrics.items():
        for block in ("ctr", "ranking", "ranking_full"):
            for key, value in m[block].items():
                assert value == pytest.approx(reference[name][block][key], abs=1e-6), (name, block, key)


def test_synthetic_log_is_seeded_and_readable(tmp_path: Path):
    cfg = SyntheticConfig(users=300, items=400, topics=20, mean_len=10, seed=3)
    u1, i1 = generate(cfg)
    u2, i2 = generate(cfg)
    np.testing.assert_array_equal(i1, i2)
    assert not np.array_equal(i1, generate(SyntheticConfig(users=300, items=400, topics=20, mean_len=10, seed=4))[1])
    counts = np.bincount(u1)
    assert len(counts) == 300 and counts.min() >= cfg.min_len and 7 < counts.mean() < 13
    assert i1.min() >= 0 and i1.max() < 400
    path = tmp_path / "synth.txt"
    stats = write_sasrec(path, cfg)
    ds = load_dataset(path)
    assert ds.implicit and len(ds.interactions) == stats["interactions"] == len(i1)
    assert ds.interactions["user_id"].nunique() == 300
