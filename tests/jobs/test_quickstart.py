"""``kdaliens-quickstart`` end to end on the tiny run: report, plots, reuse, demo."""

from __future__ import annotations

import json
import shutil

import pytest

from kdaliens.jobs.quickstart import SCHEMA, main, run_quickstart
from kdaliens.training.config import tiny_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quickstart(tiny_run, onnx_bundle, tflite_bundle, tmp_path_factory):
    """A quickstart folder seeded with the session's tiny run and two of its bundles
    (the same run made them, so they are reused); the ExecuTorch int8 bundle is new."""
    out = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(tiny_run[0], out / "run")
    shutil.copytree(onnx_bundle, out / "bundles" / "onnx")
    shutil.copytree(tflite_bundle, out / "bundles" / "litert")
    lines: list[str] = []
    rep = run_quickstart(out, config=tiny_config(), n_users=2, runs=20, candidates=(10, 100), teacher_repeats=10,
                         parity_limit=200, log=lines.append)
    return out, rep, "\n".join(lines)


def test_report_has_the_latency_rows_and_checks(quickstart):
    out, rep, _ = quickstart
    assert rep["failures"] == []
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema"] == SCHEMA
    assert list(rep["metrics"]) == ["teacher", "student_plain", "student_kd", "student_kd_int8"]
    assert on_disk["metrics"] == rep["metrics"]
    for m in on_disk["metrics"].values():  # sampled and full-catalogue ranking side by side
        assert set(m["ranking"]) >= {"hr@10", "ndcg@10"}
        assert 0 <= m["ranking_full"]["hr@10"] <= m["ranking"]["hr@10"] + 0.05 and m["ranking_full"]["users"] > 0
    keys = {(r["model"], r["backend"], r["quantization"], r["candidates"]) for r in on_disk["latency"]}
    for n in (10, 100):
        assert ("teacher", "torch", "none", n) in keys
        assert ("student", "torch", "none", n) in keys
        for backend in ("executorch", "onnxruntime", "litert"):
            assert ("student", backend, "int8", n) in keys
    for r in on_disk["latency"]:
        assert 0 < r["p50_us"] <= r["p99_us"]
        if r["backend"] != "torch":
            assert r["sdk_p50_us"] > r["p50_us"] * 0.5
    assert set(on_disk["bundles"]) == {"executorch", "onnx", "litert"}
    for b in on_disk["bundles"].values():
        assert b["model_bytes"] > 0 and b["quantization"] == "int8"
        assert abs(b["parity"]["auc_exported"] - b["parity"]["auc_reference"]) <= 0.002
    names = [c["name"] for c in on_disk["checks"]]
    assert any("speed-up" in n for n in names) and any("p50 at 100" in n for n in names)
    speed = next(c for c in on_disk["checks"] if "speed-up" in c["name"])
    teacher = next(r for r in on_disk["latency"] if r["model"] == "teacher" and r["candidates"] == 100)
    et = next(r for r in on_disk["latency"] if r["backend"] == "executorch" and r["candidates"] == 100)
    assert speed["value"] == pytest.approx(teacher["p50_us"] / et["p50_us"], rel=0.01)
    assert speed["met"] == (speed["value"] >= 10)


def test_plots_and_markdown(quickstart):
    out, rep, _ = quickstart
    assert set(rep["plots"]) == {"accuracy.png", "latency.png", "training.png"}
    for name in rep["plots"]:
        assert (out / name).read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    for part in ("## Accuracy", "| student_kd_int8 |", "full HR@10", "## Latency", "| teacher | torch |", "## Checks",
                 "![latency](latency.png)", "what they did next"):
        assert part in md, part


def test_demo_reranks_real_users(quickstart):
    _, rep, log = quickstart
    assert len(rep["demo"]) == 2
    for d in rep["demo"]:
        assert d["n_candidates"] == 101 and 1 <= d["next_rank"] <= 101
        assert d["n_history"] >= 40 and d["backend"] == "executorch"
        assert len(d["top"]) == 10 and all(t["title"] for t in d["top"])
        scores = [t["score"] for t in d["top"]]
        assert scores == sorted(scores, reverse=True)
    assert "what they did next" in log


def test_steps_reused_then_all_reused(quickstart):
    out, rep, _ = quickstart
    steps = rep["steps"]
    assert steps["train"]["reused"] and steps["export onnx"]["reused"] and steps["export litert"]["reused"]
    assert not steps["export executorch"]["reused"]
    pte = (out / "bundles" / "executorch" / "model.pte").stat().st_mtime_ns
    again = run_quickstart(out, config=tiny_config(), n_users=2, runs=20, candidates=(10, 100), teacher_repeats=10,
                           parity_limit=200, log=lambda s: None)
    reused = {k for k, v in again["steps"].items() if v["reused"]}
    assert {"train", "export executorch", "export onnx", "export litert", "profile executorch",
            "profile onnx", "profile litert", "profile torch"} <= reused
    assert (out / "bundles" / "executorch" / "model.pte").stat().st_mtime_ns == pte
    assert again["latency"] == rep["latency"]
    # One timing gone: every row is timed again, so the report's ratios share a sitting.
    (out / "profiles" / "onnx.json").unlink()
    third = run_quickstart(out, config=tiny_config(), n_users=2, runs=20, candidates=(10, 100), teacher_repeats=10,
                           parity_limit=200, log=lambda s: None)
    retimed = {k for k, v in third["steps"].items() if k.startswith("profile") and not v["reused"]}
    assert retimed == {"profile executorch", "profile onnx", "profile litert", "profile torch"}
    assert third["steps"]["export onnx"]["reused"]


def test_cli_rejects_bad_arguments(capsys):
    assert main(["--users", "0"]) == 2
    assert "--users" in capsys.readouterr().err


@pytest.mark.slow
def test_console_quickstart_is_quiet(tmp_path):
    """``kdaliens-quickstart`` (tiny) as a user runs it, stderr to a file: no Python warnings, and small."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(sys.executable).parent / "kdaliens-quickstart"
    with open(tmp_path / "stderr.txt", "w") as err:
        r = subprocess.run([str(tool), "--tiny", "--out", str(tmp_path / "qs")], stdout=subprocess.DEVNULL,
                           stderr=err, timeout=1800)
    text = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert r.returncode == 0, text[-3000:]
    warned = [line for line in text.splitlines() if re.search(r"\b\w*(Warning|Deprecation)\b:", line)]
    assert not warned, warned[:5]
    assert len(text.encode()) < 20_000, len(text.encode())
