"""kdaliens-profile on real bundles of the session's tiny run, with the real runtimes (no mocks)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.profile import format_profile, main, plot_profiles, profile_bundle

FAST = {"runs": 40, "warmup": 5}


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def et_profile(et_bundle) -> dict:
    return profile_bundle(et_bundle, candidates=(10, 100), **FAST)


def _check_profile(p: dict, bundle: Path, counts: tuple[int, ...]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert p["bundle"] == str(bundle) and p["target"] == manifest["target"]
    assert p["threads"] == 1 and p["runs"] == FAST["runs"] and p["warmup"] == FAST["warmup"]
    assert [r["candidates"] for r in p["rows"]] == list(counts)
    for r in p["rows"]:
        assert 0 < r["sdk_p50_us"] <= r["sdk_p90_us"] <= r["sdk_p99_us"], r
        assert 0 < r["model_p50_us"] <= r["model_p90_us"] <= r["model_p99_us"], r
        # The SDK path runs the same model calls plus encoding and sorting.
        assert r["model_p50_us"] <= r["sdk_p50_us"], r
        assert 0 < r["encode_p50_us"] < r["sdk_p50_us"] and 0 < r["encode_share"] < 1, r
        assert r["chunks"] == -(-r["candidates"] // p["max_candidates"])
    # Sizes are the files' own.
    assert p["model_file"] == manifest["model_file"]
    assert p["model_bytes"] == (bundle / manifest["model_file"]).stat().st_size
    files = {f.name: f.stat().st_size for f in bundle.iterdir() if f.is_file()}
    assert p["files"] == files and p["bundle_bytes"] == sum(files.values())
    # Load time is verification plus backend load.
    assert p["load_ms"] > 0 and p["warm_load_ms"] > 0
    assert p["verify_ms"] + p["backend_load_ms"] == pytest.approx(p["load_ms"], abs=0.05)
    assert p["rss_method"]
    if sys.platform.startswith("linux"):
        assert p["rss_added_mb"] is not None and p["rss_added_mb"] >= 0
        assert "/proc/self/status" in p["rss_method"]
    # Synthetic requests: 3x the history length by default, items from the vocabulary.
    history = manifest["feature_spec"]["history"]
    assert p["history_len"] == 3 * p["history_slots"] == 3 * (history["short_len"] + history["long_len"])
    json.dumps(p, allow_nan=False)  # JSON-ready, no NaN


def test_executorch_profile_is_sane(et_profile, et_bundle):
    _check_profile(et_profile, et_bundle, (10, 100))
    assert et_profile["backend"] == "executorch"
    assert et_profile["runtime"]["version"]
    table = format_profile(et_profile)
    assert "SDK rerank" in table and "bare model" in table and "model.pte" in table


@pytest.mark.skipif(importlib.util.find_spec("executorch.devtools") is None,
                    reason="executorch.devtools (ETDump Inspector) is not installed: the profile then carries "
                           "operators=None and an operators_note saying so")
def test_executorch_operator_breakdown(et_profile, et_bundle):
    ops = et_profile["operators"]
    assert ops is not None, et_profile["operators_note"]
    assert et_profile["operators_note"] is None and ops["etrecord"] is True
    assert (et_bundle.with_name("executorch.debug") / "model.etrecord").is_file()
    assert ops["candidates"] == 100 and ops["runs"] == FAST["runs"]
    top = ops["top"]
    assert top and [r["total_us"] for r in top] == sorted((r["total_us"] for r in top), reverse=True)
    kinds = {r["kind"] for r in top}
    manifest = json.loads((et_bundle / "manifest.json").read_text())
    if manifest["export"]["delegation"]["delegate_calls"]:
        assert "delegate" in kinds
        assert any(r["backend"] == "XnnpackBackend" and r["ops"] for r in top if r["kind"] == "delegate")
        assert ops["inside_delegates"] and all(r["total_us"] >= 0 for r in ops["inside_delegates"])
    if manifest["export"]["delegation"]["not_delegated"]:
        assert "portable" in kinds
    # Operators plus the time between them make up the whole model call.
    total = sum(r["total_us"] for r in top) + ops["other_us"]
    assert total == pytest.approx(ops["execute_mean_us"], rel=0.02, abs=1.0)
    assert 0.5 < sum(r["share"] for r in top) <= 1.01
    assert "per operator (ETDump" in format_profile(et_profile)


def test_main_writes_table_json_and_png(et_bundle, tmp_path, capsys):
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    code = main([str(et_bundle), "--candidates", "10,30", "--runs", "20", "--warmup", "2",
                 "--json", str(out_json), "--plot", str(out_png)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "SDK rerank" in captured.out and "candidates" in captured.out
    p = json.loads(out_json.read_text())
    for key in ("bundle", "backend", "threads", "load_ms", "rss_added_mb", "rss_method", "model_bytes",
                "bundle_bytes", "rows", "operators"):
        assert key in p
    assert [r["candidates"] for r in p["rows"]] == [10, 30]
    for key in ("sdk_p50_us", "sdk_p90_us", "sdk_p99_us", "model_p50_us", "model_p90_us", "model_p99_us",
                "encode_share"):
        assert isinstance(p["rows"][0][key], float)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000


def test_onnxruntime_and_litert_bundles(onnx_bundle, tflite_bundle, et_profile, tmp_path):
    results = []
    for bundle, backend in ((onnx_bundle, "onnxruntime"), (tflite_bundle, "litert")):
        p = profile_bundle(bundle, candidates=(10, 100), **FAST)
        _check_profile(p, bundle, (10, 100))
        assert p["backend"] == backend and p["operators"] is None and "ExecuTorch" in p["operators_note"]
        results.append(p)
    # The LiteRT bundle holds 64 candidates at most: 100 run in two chunks, in both paths.
    assert results[1]["max_candidates"] == 64 and results[1]["rows"][1]["chunks"] == 2
    png = plot_profiles([et_profile, *results], tmp_path / "all.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_sqlite_stores_and_cold_start_user(onnx_bundle):
    p = profile_bundle(onnx_bundle, candidates=(20,), runs=10, warmup=2, store="sqlite")
    assert p["store"] == "sqlite" and p["rows"][0]["model_p50_us"] <= p["rows"][0]["sdk_p50_us"]
    p = profile_bundle(onnx_bundle, candidates=(5,), history_len=0, attributes=False, runs=10, warmup=2)
    assert p["history_len"] == 0 and p["attributes"] is False and p["rows"][0]["sdk_p50_us"] > 0


def test_tampered_or_missing_bundle_exits_2(et_bundle, tmp_path, capsys):
    bad = tmp_path / "tampered"
    shutil.copytree(et_bundle, bad)
    pte = bad / "model.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    assert main([str(bad), "--runs", "5", "--warmup", "0"]) == 2
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "model.pte" in err and "Traceback" not in err
    assert main([str(tmp_path / "nowhere"), "--runs", "5"]) == 2
    assert "not a bundle folder" in capsys.readouterr().err


def test_missing_runtime_exits_2_naming_the_extra(onnx_bundle):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["onnxruntime"] = None  # as on a device without it: any import raises ImportError
        from kdaliens.sdk.profile import main
        sys.exit(main([{str(onnx_bundle)!r}, "--runs", "5", "--warmup", "0"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert ".[onnxruntime]" in r.stderr and "Traceback" not in r.stderr


def test_missing_matplotlib_still_profiles(onnx_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    code = main([str(onnx_bundle), "--candidates", "10", "--runs", "5", "--warmup", "1",
                 "--json", str(out_json), "--plot", str(out_png)])
    captured = capsys.readouterr()
    assert code == 1
    assert "pip install matplotlib" in captured.err and "Traceback" not in captured.err
    assert "SDK rerank" in captured.out and json.loads(out_json.read_text())["rows"]
    assert not out_png.exists()


def test_bad_arguments(onnx_bundle, et_bundle, tmp_path, capsys):
    with pytest.raises(InputError):
        profile_bundle(onnx_bundle, candidates=())
    with pytest.raises(InputError):
        profile_bundle(onnx_bundle, runs=0)
    with pytest.raises(SystemExit) as e:
        main([str(onnx_bundle), "--candidates", "ten"])
    assert e.value.code == 2
    # A backend that cannot run the bundle's target.
    assert main([str(et_bundle), "--backend", "onnxruntime", "--runs", "5"]) == 2
    assert "onnxruntime" in capsys.readouterr().err
    assert main([str(onnx_bundle), "--json", str(tmp_path / "no" / "such" / "dir" / "p.json")]) == 2


def test_profile_module_imports_light():
    code = textwrap.dedent("""
        import sys
        for name in ("torch", "onnxruntime", "executorch", "ai_edge_litert", "tflite_runtime", "pandas",
                     "matplotlib", "tqdm"):
            sys.modules[name] = None
        import kdaliens.sdk.profile as prof
        assert callable(prof.main) and callable(prof.profile_bundle)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
