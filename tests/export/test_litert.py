"""LiteRT target and backend: real litert-torch conversion, real ai-edge-litert runs.

One tiny MovieLens run is trained for the module, then exported twice (fp32, int8) with
small buckets (16, 64, 128) to keep conversion short; 100 candidates pad into 128.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("ai_edge_quantizer")

import torch  # noqa: E402

from kdaliens.export import check  # noqa: E402
from kdaliens.sdk.errors import BundleError, InputError  # noqa: E402

BUCKETS = (16, 64, 128)


@pytest.fixture(scope="module")
def litert_run(tiny_run):
    """The session's tiny trained run (QAT weights included)."""
    return tiny_run[0]


def _export(run_dir: Path, out: Path, quantize: str):
    from kdaliens.export.exportable import load_exportable
    from kdaliens.export.targets.litert import export_to_litert

    exp = load_exportable(run_dir, quantize)
    result = export_to_litert(exp, out, quantize=quantize, buckets=BUCKETS, log=lambda s: None)
    return exp, result, out / result.model_file


@pytest.fixture(scope="module")
def fp32(litert_run, tmp_path_factory):
    return _export(litert_run, tmp_path_factory.mktemp("litert-fp32"), "none")


@pytest.fixture(scope="module")
def int8(litert_run, tmp_path_factory):
    return _export(litert_run, tmp_path_factory.mktemp("litert-int8"), "int8")


def _backend(model: Path, result, threads: int = 1):
    from kdaliens.sdk.backends.litert import LiteRTBackend

    # Through JSON, as a bundle's manifest.json would deliver it (bucket keys become strings).
    manifest = json.loads(json.dumps({"signature": result.signature}))
    return LiteRTBackend(model, manifest, threads=threads)


def _request(exp, n: int, seed: int) -> tuple[tuple[torch.Tensor, ...], dict[str, np.ndarray]]:
    tensors = exp.example_inputs(n_cand=n, id_dtype=torch.int32, seed=seed)
    return tensors, {name: t.numpy() for name, t in zip(exp.input_names, tensors)}


def _torch(exp, tensors) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        score, click = exp.module(*tensors)
    return score.numpy(), click.numpy()


def test_signature_describes_buckets_and_int32_ids(fp32):
    exp, result, fp32_model = fp32
    sig = result.signature
    assert result.files == ["model.tflite"] and fp32_model.name == "model.tflite"
    assert sig["max_candidates"] == 128 and sig["candidate_buckets"] == [16, 64, 128]
    assert sig["signature_keys"] == {16: "n16", 64: "n64", 128: "n128"}
    assert [i["name"] for i in sig["inputs"]] == exp.input_names
    for spec in sig["inputs"]:
        assert spec["dtype"] == ("float32" if spec["name"] == "hist_mask" else "int32"), spec
        if spec["role"] == "candidate":
            assert spec["shape"][1] == "n_cand"
    assert [o["name"] for o in sig["outputs"]] == ["score", "click"]
    # Our names map onto the names the converter gave the signature tensors.
    assert set(sig["tensor_names"]["inputs"]) == set(exp.input_names)
    assert set(sig["tensor_names"]["outputs"]) == {"score", "click"}
    assert result.quantization["method"] == "none"
    assert result.check_candidates == BUCKETS  # the export's self-check runs every signature
    backend = _backend(fp32_model, result)
    assert check.self_check(exp, backend.run, False, result.check_candidates)["max_abs_score_diff"] < 1e-4
    assert not [p for p in fp32_model.parent.iterdir() if p.name != "model.tflite"], "temporary files left behind"


@pytest.mark.parametrize("n", [1, 16, 17, 100])
def test_fp32_matches_torch_with_bucket_padding(fp32, n):
    exp, result, fp32_model = fp32
    backend = _backend(fp32_model, result)
    for seed in range(3):
        tensors, arrays = _request(exp, n, seed)
        out = backend.run(arrays)
        ref_score, ref_click = _torch(exp, tensors)
        assert out["score"].shape == (1, n) and out["click"].shape == (1, n)
        assert out["score"].dtype == np.float32
        np.testing.assert_allclose(out["score"], ref_score, rtol=0, atol=1e-4)
        np.testing.assert_allclose(out["click"], ref_click, rtol=0, atol=1e-4)


def test_results_survive_later_calls_in_other_buckets(fp32):
    exp, result, fp32_model = fp32
    backend = _backend(fp32_model, result, threads=2)
    _, a = _request(exp, 20, seed=1)  # bucket 64
    _, b = _request(exp, 100, seed=2)  # bucket 128
    first = backend.run(a)["score"]
    kept = first.copy()
    second = backend.run(b)["score"]
    np.testing.assert_array_equal(first, kept)  # outputs are copies, not views of the interpreter's tensors
    np.testing.assert_allclose(backend.run(a)["score"], kept, atol=1e-6)
    np.testing.assert_allclose(backend.run(b)["score"], second, atol=1e-6)


def test_public_signature_runner_path_matches(fp32):
    # Runtimes whose interpreter internals differ (old tflite-runtime) use the public
    # SignatureRunner; it must give the same scores as the direct tensor path.
    exp, result, fp32_model = fp32
    fast, slow = _backend(fp32_model, result), _backend(fp32_model, result)
    for plan in slow._plans.values():
        plan.fast = None
    for n in (3, 64, 100):
        tensors, arrays = _request(exp, n, seed=n)
        np.testing.assert_allclose(slow.run(arrays)["score"], fast.run(arrays)["score"], atol=1e-6)
        np.testing.assert_allclose(slow.run(arrays)["score"], _torch(exp, tensors)[0], atol=1e-4)


def test_candidate_count_outside_buckets(fp32):
    exp, result, fp32_model = fp32
    backend = _backend(fp32_model, result)
    with pytest.raises(InputError, match="largest bucket"):
        backend.run(_request(exp, 129, seed=0)[1])
    _, arrays = _request(exp, 5, seed=0)
    cand = exp.signature.candidate_names[0]
    arrays[cand] = arrays[cand][:, :4]  # candidate inputs disagree on N
    with pytest.raises(InputError):
        backend.run(arrays)


def test_int8_keeps_the_ranking(int8, fp32):
    # Reference: the same (QAT) weights in fp32 torch, so the difference is quantization only.
    # Weight-only int8 per row / per output channel bounds each weight's error by half a step
    # (max|w| / 254), so logits move by about 1e-2 here (0.017-0.02 measured); ranks of
    # 100 candidates can swap only between near-ties. The bounds leave 5x margin.
    exp, result, int8_model = int8
    fp32_model = fp32[2]
    assert result.quantization["method"] == "weight_only_wi8_afp32"
    backend = _backend(int8_model, result)
    worst_diff, worst_rho = 0.0, 1.0
    for seed in range(5):
        tensors, arrays = _request(exp, 100, seed)
        out = backend.run(arrays)
        ref, _ = _torch(exp, tensors)
        worst_diff = max(worst_diff, float(np.abs(out["score"] - ref).max()))
        worst_rho = min(worst_rho, check.spearman(out["score"][0], ref[0]))
    assert worst_diff < 0.1, worst_diff
    assert worst_rho > 0.99, worst_rho
    assert int8_model.stat().st_size < fp32_model.stat().st_size


def test_truncated_or_garbage_file_is_a_bundle_error(fp32, tmp_path):
    _, result, fp32_model = fp32
    data = fp32_model.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated.tflite"):
        _backend(truncated, result)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError, match="garbage.tflite"):
        _backend(garbage, result)
    with pytest.raises(BundleError, match="missing.tflite"):
        _backend(tmp_path / "missing.tflite", result)


def test_manifest_that_does_not_match_the_model(fp32):
    _, result, fp32_model = fp32
    wrong = SimpleNamespace(**json.loads(json.dumps({"signature": result.signature})))
    wrong.signature["signature_keys"] = {"32": "n16"}
    with pytest.raises(BundleError, match="n16"):
        _backend(fp32_model, wrong)
    wrong = SimpleNamespace(**json.loads(json.dumps({"signature": result.signature})))
    wrong.signature["signature_keys"]["256"] = "n256"
    with pytest.raises(BundleError, match="n256"):
        _backend(fp32_model, wrong)
    wrong = SimpleNamespace(**json.loads(json.dumps({"signature": result.signature})))
    wrong.signature["inputs"][0]["dtype"] = "int64"
    with pytest.raises(BundleError, match="int64"):
        _backend(fp32_model, wrong)


def test_no_runtime_names_the_extra(fp32, tmp_path):
    _, result, fp32_model = fp32
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"signature": result.signature}))
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["ai_edge_litert"] = None
        sys.modules["tflite_runtime"] = None
        from kdaliens.sdk.backends.litert import LiteRTBackend
        from kdaliens.sdk.errors import BackendUnavailable
        try:
            LiteRTBackend({str(fp32_model)!r}, json.load(open({str(manifest)!r})), threads=1)
        except BackendUnavailable as e:
            print("UNAVAILABLE:", e)
            sys.exit(0)
        sys.exit("constructed a backend without a runtime")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ".[litert]" in proc.stdout


def test_bad_arguments_and_atomic_write(fp32, tmp_path):
    from kdaliens.export.targets import litert
    from kdaliens.sdk.fileio import atomic_write

    exp, _, _ = fp32
    with pytest.raises(InputError):
        litert.export_to_litert(exp, tmp_path, quantize="int4")
    with pytest.raises(InputError):
        litert.export_to_litert(exp, tmp_path, buckets=(0, 16))
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous")
    with pytest.raises(TypeError):
        atomic_write(target, object())  # fails mid-write
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
