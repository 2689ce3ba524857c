"""The Raspberry Pi demo (examples/raspberrypi/demo.py) runs, reports latency, fails clearly, and needs no torch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "raspberrypi" / "demo.py"

STEP_RE = re.compile(r"^step (\d+)/(\d+) ", re.M)
LATENCY_RE = re.compile(r"latency ms: model +\d+\.\d+ \| encode +\d+\.\d+ \| total +\d+\.\d+", re.M)
RANKED_RE = re.compile(r"^ +(\d+)\. +(\S+) +(-?\d+\.\d+)  (.*)$", re.M)
SUMMARY_RE = re.compile(r"^  (total|model|encode) +median +\d+\.\d+ ms +p99 +\d+\.\d+ ms$", re.M)


def run_demo(*args: str, python: str | Path = sys.executable, env: dict | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(DEMO), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def check_output(r: subprocess.CompletedProcess, steps: int, top: int, backend: str) -> list[tuple[str, str]]:
    """Exit 0, one block per step (top items with titles, a latency line), a summary; returns the ranked items."""
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    out = r.stdout
    assert [int(s) for s, _ in STEP_RE.findall(out)] == list(range(1, steps + 1)), out
    assert len(LATENCY_RE.findall(out)) == steps, out
    ranked = RANKED_RE.findall(out)
    assert len(ranked) == steps * top, out
    assert [int(rank) for rank, *_ in ranked] == list(range(1, top + 1)) * steps
    assert all(title.strip() for *_, title in ranked), out  # every item shown with its title
    assert f"backend {backend}" in out
    assert sorted(SUMMARY_RE.findall(out)) == ["encode", "model", "total"], out
    assert "warning" not in out  # no fallback: the model ran
    return [(item, title) for _, item, _, title in ranked]


@pytest.mark.parametrize("bundle_fixture, backend", [("onnx_bundle", "onnxruntime"), ("tflite_bundle", "litert")])
def test_demo_on_the_embedded_movielens(request, bundle_fixture, backend, tmp_path):
    bundle = request.getfixturevalue(bundle_fixture)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    r = run_demo("--bundle", bundle, "--steps", 3, "--top", 4, "--user", 1, env=env, cwd=tmp_path)
    ranked = check_output(r, steps=3, top=4, backend=backend)
    # The catalogue, events and user attributes are the MovieLens-100K files shipped in the package.
    assert "1682 items" in r.stdout
    assert re.search(r"^user +1 \(age 24, gender M, occupation technician\): 272 events", r.stdout, re.M), r.stdout
    assert all(item.isdigit() for item, _ in ranked)
    assert f"{tmp}/kdaliens-demo-" in r.stdout  # the SQLite files went to a temporary folder...
    assert not list(tmp.glob("kdaliens-demo-*"))  # ...which is gone after the run


def test_demo_with_user_files_and_kept_db(onnx_bundle, tmp_path):
    (tmp_path / "items.csv").write_text(
        "item_id,title,release_year,class\n"
        "50,Star Wars,1977,Action Adventure Romance Sci-Fi War\n"
        "100,Fargo,1996,Crime Drama Thriller\n"
        "181,Return of the Jedi,1997,Action Adventure Romance Sci-Fi War\n"
        "1,Toy Story,1995,Animation Children's Comedy\n"
        "new-1,A film the model never saw,2024,Comedy\n")
    (tmp_path / "events.jsonl").write_text(
        '{"user_id": "u7", "item_id": 1, "timestamp": "2024-05-01T10:00:00", "rating": 5}\n'
        '{"user_id": "u8", "item_id": 50, "timestamp": 1714557000, "rating": 3}\n'
        '{"user_id": "u7", "item_id": "100", "timestamp": 1714557700, "rating": 4}\n'
        '{"user_id": "u7", "item_id": 181, "timestamp": 1714557800, "event": "2"}\n')
    (tmp_path / "users.csv").write_text("user_id,age,gender,occupation\nu7,31,F,engineer\n")
    db = tmp_path / "db"
    args = ["--bundle", onnx_bundle, "--catalogue", tmp_path / "items.csv", "--events", tmp_path / "events.jsonl",
            "--users", tmp_path / "users.csv", "--user", "u7", "--top", 2, "--db-dir", db]
    r = run_demo(*args, "--steps", 2)
    ranked = check_output(r, steps=2, top=2, backend="onnxruntime")
    assert "user       u7 (age 31, gender F, occupation engineer): 3 events" in r.stdout
    assert {item for item, _ in ranked} <= {"50", "100", "181", "new-1"}  # never an item the user has seen
    assert (db / "items.db").is_file() and (db / "behavior.db").is_file()
    # A second run with the same --db-dir goes on where the first stopped.
    r = run_demo(*args, "--steps", 5)
    check_output(r, steps=1, top=2, backend="onnxruntime")
    assert "2 events of this user already logged, replaying 1" in r.stdout


def test_bad_bundle_path_is_a_clear_error(tmp_path):
    r = run_demo("--bundle", tmp_path / "no-such-bundle", "--steps", 1)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: error: ") and "not a bundle folder" in lines[0], r.stderr
    assert "Traceback" not in r.stderr

    (tmp_path / "empty").mkdir()
    r = run_demo("--bundle", tmp_path / "empty")
    assert r.returncode == 2 and "manifest.json: missing" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("case", ["unknown user", "bad timestamp", "bad json", "missing file", "no columns"])
def test_bad_input_is_a_clear_error(onnx_bundle, tmp_path, case):
    args: list = ["--bundle", onnx_bundle]
    expected = {
        "unknown user": "unknown user '999999'",
        "bad timestamp": "line 2: timestamp must be Unix seconds or ISO 8601, got 'yesterday'",
        "bad json": "line 1: not a JSON object",
        "missing file": "cannot read",
        "no columns": "expected columns user_id,item_id,timestamp",
    }[case]
    if case == "unknown user":
        args += ["--user", "999999"]
    elif case == "bad timestamp":
        (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\nu1,3,yesterday\n")
        args += ["--events", tmp_path / "e.csv"]
    elif case == "bad json":
        (tmp_path / "items.jsonl").write_text('{"item_id": 1\n')
        args += ["--catalogue", tmp_path / "items.jsonl"]
    elif case == "missing file":
        args += ["--catalogue", tmp_path / "nope.csv"]
    else:
        (tmp_path / "e.csv").write_text("user,item\nu1,3\n")
        args += ["--events", tmp_path / "e.csv"]
    r = run_demo(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: error: ") and expected in lines[0], r.stderr


def test_missing_runtime_is_a_clear_error(onnx_bundle, tmp_path):
    # Hide onnxruntime behind a package that fails to import, as on a device without it.
    blocker = tmp_path / "blocker" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('onnxruntime hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    r = run_demo("--bundle", onnx_bundle, "--steps", 1, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a runtime that is not installed" in lines[0] and "pip install" in lines[0], r.stderr
    # A backend that cannot run the bundle's target is an error too, not a crash.
    r = run_demo("--bundle", onnx_bundle, "--backend", "litert")
    assert r.returncode == 2 and "targets 'onnx'" in r.stderr and "Traceback" not in r.stderr


# -------------------------------------------------------------------------------------------
# The device install: a fresh venv with kdaliens[onnxruntime,litert] and no torch.

_NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".ci-venv",
                                     ".pytest_cache", ".ruff_cache", ".hypothesis", "runs", "bundles", "quickstart")


def test_demo_runs_in_a_venv_without_torch(onnx_bundle, tflite_bundle, tmp_path):
    # Build from a copy of the checkout, so the in-tree build (build/, *.egg-info) never touches
    # the working tree or races another test that builds the package.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    t0 = time.perf_counter()
    r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{src}[onnxruntime,litert]"],
                       capture_output=True, text=True, timeout=600)
    install_s = time.perf_counter() - t0
    assert r.returncode == 0, f"pip install failed after {install_s:.0f} s:\n{r.stdout}\n{r.stderr}"
    print(f"fresh-venv install of kdaliens[onnxruntime,litert]: {install_s:.1f} s")

    no_torch = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    assert subprocess.run([str(python), "-c", no_torch], timeout=60).returncode == 0, "torch is installed in the venv"
    # The installed package, not the checkout, is what the demo imports.
    r = subprocess.run([str(python), "-c", "import kdaliens.sdk; print(kdaliens.sdk.__file__)"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and str(venv) in r.stdout, r.stdout + r.stderr

    for bundle, backend in ((onnx_bundle, "onnxruntime"), (tflite_bundle, "litert")):
        r = run_demo("--bundle", bundle, "--steps", 3, "--top", 3, python=python, cwd=tmp_path)
        check_output(r, steps=3, top=3, backend=backend)
        assert "1682 items" in r.stdout  # the MovieLens-100K files came with the wheel

    # The server tools are installed too; without their extras each prints one line that
    # names the extra and the command, and exits 2 (no traceback).
    bindir = python.parent
    tools = {
        "kdaliens-train": (["--data", "movielens-100k", "--out", str(tmp_path / "run")], "[train]"),
        "kdaliens-export": (["--target", "onnx", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "b")],
                            "[export]"),
        "kdaliens-quickstart": (["--out", str(tmp_path / "qs")], "[all]"),
        "kdaliens-keygen": (["--out", str(tmp_path / "keys")], "[signing]"),
    }
    for tool, (args, extra) in tools.items():
        r = subprocess.run([str(bindir / tool), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (tool, r.returncode, r.stderr)
        assert extra in lines[0] and "pip install -e" in lines[0] and "Traceback" not in r.stderr, (tool, lines[0])
        assert not (tmp_path / "run").exists() and not (tmp_path / "qs").exists()  # nothing half-written
