"""ONNX target and onnxruntime backend, end to end on real onnxruntime.

Everything runs on the session's tiny trained run of the real MovieLens-100K (QAT
weights included), shared with the other test folders.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from kdaliens.export import check  # noqa: E402
from kdaliens.export.exportable import Exportable, load_exportable  # noqa: E402
from kdaliens.export.targets import onnx as onnx_target  # noqa: E402
from kdaliens.sdk.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from kdaliens.sdk.errors import BundleError, InputError  # noqa: E402


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """The session's tiny trained run (QAT weights included)."""
    return tiny_run[0]


@pytest.fixture(scope="module")
def exp(run_dir) -> Exportable:
    return load_exportable(run_dir, "int8")


@pytest.fixture(scope="module")
def fp32(exp, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx-fp32")
    return out, onnx_target.export_to_onnx(exp, out, quantize="none", max_candidates=256, log=_quiet)


@pytest.fixture(scope="module")
def int8(exp, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx-int8")
    return out, onnx_target.export_to_onnx(exp, out, quantize="int8", max_candidates=256, log=_quiet)


def _backend(export: tuple[Path, dict], threads: int = 1) -> OnnxRuntimeBackend:
    out, info = export
    return OnnxRuntimeBackend(out / info.model_file, {"signature": info.signature}, threads=threads)


def _request(exp: Exportable, n: int, seed: int) -> dict[str, np.ndarray]:
    return check.random_requests(exp, n=1, n_cand=n, seed=seed)[0]


def _torch(exp: Exportable, req: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        score, click = exp.module(*(torch.from_numpy(req[n]) for n in exp.input_names))
    return score.numpy(), click.numpy()


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# ------------------------------------------------------------------------------ export
def test_fp32_export_writes_one_checked_file_with_the_signature(exp, fp32):
    out, info = fp32
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no temporary files left
    assert info.model_file == "model.onnx" and info.files == ["model.onnx"]
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in model.graph.input] == exp.input_names
    assert [o.name for o in model.graph.output] == ["score", "click"]
    for vi in model.graph.input:
        dims = _dims(vi)
        if vi.name.startswith("cand_"):
            assert isinstance(dims[1], str), f"{vi.name}: candidate dim is not dynamic ({dims})"
        else:
            assert all(isinstance(d, int) for d in dims), f"{vi.name}: history/user dims must stay fixed ({dims})"
    sig = info.signature
    assert sig["inputs"] == exp.signature.to_manifest("int64", 256)["inputs"]
    assert sig["outputs"] == [{"name": "score", "dtype": "float32", "shape": [1, "n_cand"]},
                              {"name": "click", "dtype": "float32", "shape": [1, "n_cand"]}]
    assert sig["max_candidates"] == 256
    assert info.quantization["method"] == "none"
    json.dumps({"signature": info.signature, "quantization": info.quantization})  # goes into manifest.json as is


@pytest.mark.parametrize("n", [1, 7, 100])
def test_fp32_matches_torch_for_any_candidate_count(exp, fp32, n):
    backend = _backend(fp32)
    req = _request(exp, n, seed=n)
    got = backend.run(req)
    ref_score, ref_click = _torch(exp, req)
    assert got["score"].shape == (1, n) and got["click"].shape == (1, n)
    assert got["score"].dtype == np.float32 and got["click"].dtype == np.float32
    np.testing.assert_allclose(got["score"], ref_score, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["click"], ref_click, atol=1e-4, rtol=0)


def test_backend_session_settings(fp32):
    backend = _backend(fp32, threads=2)
    so = backend._session.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_int8_is_smaller_quantized_and_ranks_like_fp32(exp, fp32, int8):
    out, info = int8
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    onnx.checker.check_model(str(out / "model.onnx"))
    q = info.quantization
    assert q["method"] == onnx_target.DEFAULT_METHOD
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "MatMulInteger" in ops  # int8 hidden layers really are in the file
    # ... and the tables are QAT's int8 codes (the largest initializer), per-row scales beside them.
    big = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    assert big.data_type == onnx.TensorProto.INT8 and big.dims[0] >= 256
    assert (out / "model.onnx").stat().st_size < 0.7 * (fp32[0] / "model.onnx").stat().st_size
    backend = _backend(int8)
    for seed in range(8):
        req = _request(exp, 100, seed=100 + seed)
        got = backend.run(req)["score"].ravel()
        ref = _torch(exp, req)[0].ravel()
        # int8 per-channel weights (step = 1/127 of each row's range) and dynamically
        # quantized activations perturb each logit by a small fraction of the score
        # spread; what must survive is the order of the candidates.
        assert check.spearman(got, ref) > 0.98
        assert np.abs(got - ref).max() < 0.05 * (ref.max() - ref.min())
        assert len(set(np.argsort(-ref)[:10]) & set(np.argsort(-got)[:10])) >= 8


def test_qdq_method_with_caller_calibration(exp, tmp_path):
    calib = check.random_requests(exp, n=8, n_cand=(2, 64), seed=7)
    info = onnx_target.export_to_onnx(exp, tmp_path, method="qdq", calibration=calib, log=_quiet)
    assert info.quantization["method"] == "qdq"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    backend = _backend((tmp_path, info))
    req = _request(exp, 100, seed=3)
    got, ref = backend.run(req)["score"].ravel(), _torch(exp, req)[0].ravel()
    assert check.spearman(got, ref) > 0.95


def test_bad_arguments_are_input_errors(exp, tmp_path):
    with pytest.raises(InputError, match="method"):
        onnx_target.export_to_onnx(exp, tmp_path, method="fp16", log=_quiet)
    with pytest.raises(InputError, match="quantize"):
        onnx_target.export_to_onnx(exp, tmp_path, quantize="int4", log=_quiet)
    with pytest.raises(InputError, match="lacks inputs"):
        onnx_target.export_to_onnx(exp, tmp_path, calibration=[{"user_age": np.ones(1)}], log=_quiet)
    assert not (tmp_path / "model.onnx").exists()


def test_failed_export_leaves_no_half_written_file(exp, tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"previous model")

    def broken(src, dst, *args):
        Path(dst).write_bytes(b"half")
        raise RuntimeError("quantizer crashed")

    monkeypatch.setattr(onnx_target, "_quantize", broken)
    with pytest.raises(RuntimeError, match="quantizer crashed"):
        onnx_target.export_to_onnx(exp, tmp_path, log=_quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == b"previous model"


# ------------------------------------------------------------------------------ backend errors
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_model_file_raises_bundle_error(fp32, tmp_path, damage):
    out, info = fp32
    data = (out / "model.onnx").read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00kdaliens" * 100, "empty": b""}[damage])
    with pytest.raises(BundleError, match="model.onnx"):
        OnnxRuntimeBackend(bad, {"signature": info.signature})


def test_missing_model_file_raises_bundle_error(fp32, tmp_path):
    with pytest.raises(BundleError, match="missing"):
        OnnxRuntimeBackend(tmp_path / "model.onnx", {"signature": fp32[1].signature})


def test_signature_mismatch_raises_bundle_error(fp32):
    out, info = fp32
    sig = dict(info.signature, inputs=info.signature["inputs"] + [{"name": "x", "dtype": "int64",
                                                                          "shape": [1]}])
    with pytest.raises(BundleError, match="lacks"):
        OnnxRuntimeBackend(out / "model.onnx", {"signature": sig})
    int32 = [dict(i, dtype="int32") if i["dtype"] == "int64" else i for i in info.signature["inputs"]]
    with pytest.raises(BundleError, match="input types differ"):
        OnnxRuntimeBackend(out / "model.onnx", {"signature": dict(info.signature, inputs=int32)})


def test_without_onnxruntime_the_backend_names_the_extra(fp32):
    out, info = fp32
    manifest = json.dumps({"signature": info.signature})
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        from kdaliens.sdk.backends.onnxruntime import OnnxRuntimeBackend
        from kdaliens.sdk.errors import BackendUnavailable
        try:
            OnnxRuntimeBackend({str(out / "model.onnx")!r}, json.loads({manifest!r}))
        except BackendUnavailable as e:
            print("UNAVAILABLE:", e)
        assert "torch" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "UNAVAILABLE:" in proc.stdout and ".[onnxruntime]" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------ .ort
def test_ort_format_runs_like_the_onnx_model(exp, fp32, tmp_path):
    out, info = fp32
    src = tmp_path / "model.onnx"
    shutil.copy(out / "model.onnx", src)
    try:
        ort_path = onnx_target.to_ort_format(src)
    except InputError as e:
        if "tools.convert_onnx_models_to_ort" in str(e):
            pytest.skip(f"onnxruntime has no .ort converter here: {e}")
        raise
    assert ort_path.suffix == ".ort" and ort_path.stat().st_size > 0
    req = _request(exp, 9, seed=5)
    got = OnnxRuntimeBackend(ort_path, {"signature": info.signature}).run(req)
    np.testing.assert_allclose(got["score"], _torch(exp, req)[0], atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ trained run
def test_int8_parity_on_the_trained_run(exp, tmp_path):
    info = onnx_target.export_to_onnx(exp, tmp_path / "int8", log=_quiet)  # QAT weights
    backend = OnnxRuntimeBackend(tmp_path / "int8" / info.model_file, {"signature": info.signature})
    parity = check.self_check(exp, backend.run, quantized=True)
    assert parity["min_spearman"] > 0.98 and parity["top10_agreement"] >= 0.8


def test_model_flag_exports_the_plain_student_or_the_better_on_validation(run_dir, tmp_path):
    """--model student_plain ships the plain student (int8 by post-training quantization, through
    the same parity gate); --model auto picks by validation, never test."""
    from kdaliens.export.api import export_bundle
    from kdaliens.export.exportable import choose_model

    m = export_bundle(run_dir, "onnx", tmp_path / "plain", model="student_plain", parity_limit=200, log=_quiet)
    assert m["source"]["checkpoint"] == "student_plain.pt" and m["quantization"] != "none"
    assert m["parity"]["auc_exported"] >= m["parity"]["auc_reference"] - 0.002
    hist = json.loads((run_dir / "history.json").read_text())
    best = {k: max(r["val"]["ctr"]["auc"] + r["val"]["ranking"]["ndcg@10"] for r in hist[k])
            for k in ("student_kd", "student_plain")}
    picked, why = choose_model(run_dir, "auto")
    assert picked == max(best, key=best.get) and "validation" in why
    with pytest.raises(InputError, match="model must be"):
        choose_model(run_dir, "teacher")


@pytest.mark.parametrize("flag, value, match", [
    ("--tolerance", "-1", "not in \\[0, 1\\]"),
    ("--tolerance", "abc", "not a number"),
    ("--parity-limit", "0", "at least 1"),
])
def test_export_flags_are_checked_before_any_work(run_dir, tmp_path, flag, value, match):
    import re

    r = subprocess.run([sys.executable, "-m", "kdaliens.export.cli", "--target", "onnx", "--run", str(run_dir),
                        "--out", str(tmp_path / "b"), flag, value], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and re.search(match, r.stderr) and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()
