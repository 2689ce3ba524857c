"""``benchmarks/distillers.py``: one table from seeds run apart (``--merge``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("distillers_bench", ROOT / "benchmarks" / "distillers.py")
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))  # its runs_common
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


@pytest.fixture(scope="module")
def seed0(bench, tmp_path_factory):
    """A real tiny run of the default row, seed 0, no exports."""
    out = tmp_path_factory.mktemp("distillers") / "a"
    assert bench.main(["--preset", "tiny", "--seeds", "0,", "--labels", "", "--targets", "", "--out", str(out)]) == 0
    return out / "distillers.json"


def test_per_seed_figures_are_kept_and_merge_into_one_table(bench, seed0, tmp_path):
    first = json.loads(seed0.read_text())
    rec = first["per_seed"]["default"]["0"]
    assert set(rec["metrics"]) == {"teacher", "student_plain", "student_kd", "student_kd_int8"}
    assert 0.5 < rec["metrics"]["student_kd"]["ctr"]["auc"] <= 1.0
    assert first["summary"]["default"]["seeds"] == [0]

    # Another file with seed 0 under another seed number stands in for a seed run elsewhere.
    other = dict(first, per_seed={"default": {"1": rec}})
    (tmp_path / "b.json").write_text(json.dumps(other))
    out = tmp_path / "merged"
    assert bench.main(["--preset", "tiny", "--seeds", ",", "--labels", "", "--out", str(out),
                       "--merge", str(seed0), "--merge", str(tmp_path / "b.json")]) == 0
    merged = json.loads((out / "distillers.json").read_text())
    row = merged["summary"]["default"]
    assert row["seeds"] == [0, 1]
    hr = rec["metrics"]["student_kd"]["ranking"]["hr@10"]
    assert row["models"]["student_kd"]["ranking.hr@10"] == [hr, hr]
    assert "| default | fp32 |" in (out / "distillers.md").read_text()


def test_merge_refuses_a_run_made_with_other_settings(bench, seed0, tmp_path, capsys):
    rc = bench.main(["--preset", "tiny", "--seeds", ",", "--labels", "", "--out", str(tmp_path),
                     "--set", "train.epochs=2", "--merge", str(seed0)])
    assert rc == 2
    assert "made with sets=[]" in capsys.readouterr().err
    assert not (tmp_path / "distillers.json").exists()
