"""The Android sample's Java encoder against golden vectors written by the Python SDK.

The Java sources compile with plain ``javac`` (no Android SDK, no jars); ``GoldenCheck``
re-encodes every request of the golden file and must reproduce every model input exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdaliens.jobs.golden import build_golden, write_golden
from kdaliens.sdk import Bundle

ROOT = Path(__file__).resolve().parents[2]
ANDROID = ROOT / "examples" / "android"
ENCODER_SRC = ANDROID / "app" / "src" / "main" / "java" / "dev" / "kdaliens" / "encoder"
CHECK_SRC = ANDROID / "app" / "src" / "test" / "java" / "dev" / "kdaliens" / "encoder" / "GoldenCheck.java"


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory) -> Path:
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        pytest.skip("javac/java not on PATH: install a JDK (17+) to check the Android encoder")
    out = tmp_path_factory.mktemp("java-classes")
    sources = sorted(str(p) for p in ENCODER_SRC.glob("*.java")) + [str(CHECK_SRC)]
    r = subprocess.run([javac, "-encoding", "UTF-8", "-Xlint:all", "-Werror", "-d", str(out), *sources],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"javac failed:\n{r.stdout}\n{r.stderr}"
    return out


@pytest.fixture(scope="module")
def golden(et_bundle, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "golden.json"
    write_golden(et_bundle, path)
    return path


def _check(classes: Path, golden_path: Path, manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("java") or "java", "-cp", str(classes), "dev.kdaliens.encoder.GoldenCheck",
                           str(golden_path), str(manifest)], capture_output=True, text=True, timeout=120)


def test_java_encoder_reproduces_every_model_input(java_classes, golden, et_bundle):
    r = _check(java_classes, golden, et_bundle / "manifest.json")
    assert r.returncode == 0, f"GoldenCheck failed:\n{r.stdout}\n{r.stderr}"
    assert "golden check passed" in r.stdout


def test_golden_covers_the_hard_cases(golden, et_bundle):
    doc = json.loads(golden.read_text())
    manifest = json.loads((et_bundle / "manifest.json").read_text())
    L = manifest["feature_spec"]["history"]["short_len"] + manifest["feature_spec"]["history"]["long_len"]
    cases = {c["name"]: c for c in doc["cases"]}
    assert set(cases) == {"bundle", "synthetic-hashed-int32", "synthetic-minimal"}
    bundle = cases["bundle"]
    assert bundle["manifest"] is None  # the check reads the real manifest.json
    lengths = [len(r["events"]) for r in bundle["requests"]]
    assert 0 in lengths and max(lengths) > 3 * L  # cold start and sampled long histories
    assert {r["seed"] for r in bundle["requests"]} >= {None, 7, 2**64 - 1}
    assert len({r["now"] for r in bundle["requests"]}) >= 3
    # Inputs are those of the bundle's signature, in its order and dtypes.
    first = bundle["requests"][-1]["expected"]["chunks"][0]
    assert list(first) == [i["name"] for i in manifest["signature"]["inputs"]]
    assert {v["dtype"] for v in first.values()} == {i["dtype"] for i in manifest["signature"]["inputs"]}
    # Chunking and int32 ids are exercised by the synthetic case.
    hashed = cases["synthetic-hashed-int32"]
    assert any(len(r["expected"]["chunks"]) > 1 for r in hashed["requests"])
    assert "int32" in {v["dtype"] for v in hashed["requests"][0]["expected"]["chunks"][0].values()}
    # Events without a kind (no key, or null) read as the spec's default kind: the bundle's
    # (the most common rating of MovieLens-100K) and a synthetic non-first one.
    assert manifest["feature_spec"]["default_event"] == "4"
    assert hashed["manifest"]["feature_spec"]["default_event"] == "buy"
    events = [e for c in cases.values() for r in c["requests"] for e in r["events"]]
    assert any("event" not in e for e in events) and any(e.get("event", 0) is None for e in events)
    values = [v["value"] for v in doc["normalize_token"]]
    assert 5 in values and any(isinstance(v, float) and v == 5.0 for v in values) and " 5 " in values


def test_golden_is_deterministic(et_bundle, golden, tmp_path):
    again = tmp_path / "again.json"
    doc = write_golden(et_bundle, again)
    assert again.read_bytes() == golden.read_bytes()
    # What write_golden returns is what it wrote (compared as text: the file holds NaNs).
    assert json.dumps(doc) == json.dumps(json.loads(golden.read_text()))
    assert json.dumps(build_golden(Bundle.load(et_bundle))) == json.dumps(doc)


def _tamper_array(doc: dict) -> str:
    req = next(r for r in doc["cases"][0]["requests"] if r["expected"]["n_history"] > 0)
    arr = req["expected"]["chunks"][0]["hist_item_id"]["data"]
    arr[-1] += 1
    return "hist_item_id"


def _tamper_token(doc: dict) -> str:
    vec = next(v for v in doc["normalize_token"] if v["token"] == "5")
    vec["token"] = "5.0"
    return "normalize_token"


def _tamper_ranking(doc: dict) -> str:
    req = next(r for r in doc["cases"][1]["requests"] if len(r["expected"]["ranked"]) > 2)
    ranked = req["expected"]["ranked"]
    ranked[0], ranked[-1] = ranked[-1], ranked[0]
    return "ranking"


@pytest.mark.parametrize("tamper", [_tamper_array, _tamper_token, _tamper_ranking])
def test_check_fails_on_a_tampered_golden_value(java_classes, golden, et_bundle, tmp_path, tamper):
    doc = json.loads(golden.read_text())
    where = tamper(doc)
    bad = tmp_path / "golden-tampered.json"
    bad.write_text(json.dumps(doc))
    r = _check(java_classes, bad, et_bundle / "manifest.json")
    assert r.returncode == 1, f"a tampered golden file passed:\n{r.stdout}\n{r.stderr}"
    assert "golden check FAILED" in r.stdout and where in r.stdout, r.stdout


def test_check_refuses_another_manifest(java_classes, golden, et_bundle, tmp_path):
    other = tmp_path / "manifest.json"
    other.write_text((et_bundle / "manifest.json").read_text() + "\n")
    r = _check(java_classes, golden, other)
    assert r.returncode == 1 and "manifest_sha256" in r.stdout, r.stdout


def test_golden_module_imports_without_heavy_runtimes():
    code = textwrap.dedent("""
        import sys
        for name in ("torch", "onnxruntime", "executorch", "ai_edge_litert", "tflite_runtime", "pandas"):
            sys.modules[name] = None
        import kdaliens.jobs.golden  # noqa: F401
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
