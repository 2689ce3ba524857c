"""ExecuTorch target: round trip through the real runtime, parity gate, bundle atomicity."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from kdaliens.export.api import export_bundle
from kdaliens.export.bundle import sha256_file, validate_manifest, write_debug
from kdaliens.export.exportable import load_exportable
from kdaliens.export.parity import ParityError, check_parity, load_requests, torch_runner
from kdaliens.export.targets import ExportConfig, get_target
from kdaliens.sdk.backends.executorch import ExecuTorchBackend
from kdaliens.sdk.bundle import debug_dir, debug_file
from kdaliens.sdk.errors import BundleError


@pytest.fixture(scope="module")
def bundles(tiny_run, tmp_path_factory):
    run_dir, _ = tiny_run
    root = tmp_path_factory.mktemp("et-bundles")
    out = {}
    for q in ("none", "int8"):
        export_bundle(run_dir, "executorch", root / q, quantize=q, parity_limit=300, log=lambda s: None,
                      debug=q == "int8")
        out[q] = root / q
    return run_dir, out


def _backend(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    return ExecuTorchBackend(bundle / m["model_file"], m, threads=1), m


def test_round_trip_matches_pytorch(bundles):
    run_dir, b = bundles
    exp = load_exportable(run_dir, "none")
    backend, m = _backend(b["none"])
    for n in (1, 7, 100, m["signature"]["max_candidates"]):
        x = exp.example_inputs(n_cand=n, seed=n)
        inputs = {k: v.numpy() for k, v in zip(exp.input_names, x)}
        with torch.no_grad():
            ref_s, ref_c = exp.module(*x)
        got = backend.run(inputs)
        assert got["score"].shape == (1, n)
        np.testing.assert_allclose(got["score"], ref_s.numpy(), atol=1e-4)
        np.testing.assert_allclose(got["click"], ref_c.numpy(), atol=1e-5)


def test_int8_bundle_is_smaller_and_keeps_parity(bundles):
    _, b = bundles
    m8 = json.loads((b["int8"] / "manifest.json").read_text())
    m32 = json.loads((b["none"] / "manifest.json").read_text())
    assert (b["int8"] / "model.pte").stat().st_size < (b["none"] / "model.pte").stat().st_size
    for m in (m8, m32):
        assert abs(m["parity"]["auc_exported"] - m["parity"]["auc_reference"]) <= 0.002
        assert m["parity"]["requests"] == 300
    assert m8["export"]["quantization"]["scheme"] == "int8"
    assert m32["parity"]["max_abs_diff"] < 1e-4


def test_manifest_schema_and_hashes(bundles):
    _, b = bundles
    for bundle in b.values():
        m = json.loads((bundle / "manifest.json").read_text())
        assert validate_manifest(m) == []
        for f, h in m["artifacts"].items():
            assert sha256_file(bundle / f) == h
        assert "history_sampler" not in m  # the sampler's settings are feature_spec.history, stated once
        assert all(i["shape"][1] == "history" for i in m["signature"]["inputs"] if i["role"] == "history")
        assert set(m["source"]["metrics"]) >= {"teacher", "student_kd", "student_kd_int8"}
        assert set(m["artifacts"]) == {"model.pte", "canary.json"}  # what ships is what runs, and its canary
        assert m["canary"] == "canary.json" and isinstance(m["bundle_version"], int)
    bad = dict(m)
    del bad["parity"]
    assert "missing key 'parity'" in validate_manifest(bad)
    assert validate_manifest({**m, "format_version": 99})


def test_parity_gate_refuses_scrambled_weights(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    exp = load_exportable(run_dir, "none")
    requests = load_requests(run_dir, exp, "test", limit=300)
    reference = torch_runner(exp.module, exp.input_names)  # scored with the good weights
    broken = copy.deepcopy(exp)
    broken.module = copy.deepcopy(exp.module)
    with torch.no_grad():
        for p in broken.module.parameters():
            p.copy_(p[torch.randperm(p.shape[0])] if p.dim() > 0 else p)
    res = get_target("executorch").lower(broken, ExportConfig("executorch", "none", 64), [], tmp_path / "broken",
                                         log=lambda s: None)
    backend = ExecuTorchBackend(tmp_path / "broken" / res.model_file, {"signature": res.signature})
    with pytest.raises(ParityError, match="below the reference"):
        check_parity(reference, backend.run, requests, tolerance=0.002)


def test_refused_export_writes_nothing(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "refused"
    with pytest.raises(ParityError):
        # No exported model can beat its reference by a full AUC point: the gate refuses.
        export_bundle(run_dir, "executorch", out, quantize="none", tolerance=-1.0, parity_limit=100,
                      log=lambda s: None)
    assert not out.exists()
    assert not list(tmp_path.glob(".refused.tmp-*"))


def test_killed_export_leaves_no_bundle(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kdaliens.export.cli", "--target", "executorch", "--run",
                             str(run_dir), "--out", str(out), "--quantize", "none", "--parity-limit", "2000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        # Kill it once the model file is being staged, before the bundle is renamed into place.
        while time.time() < deadline and not any((d / "model.pte").exists() for d in tmp_path.glob(".killed.tmp-*")):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()


def test_truncated_program_raises_bundle_error(bundles, tmp_path):
    _, b = bundles
    m = json.loads((b["none"] / "manifest.json").read_text())
    data = (b["none"] / "model.pte").read_bytes()
    bad = tmp_path / "model.pte"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match="model.pte"):
        ExecuTorchBackend(bad, m)


@pytest.mark.parametrize("bits,scale_dtype", [(4, "float16"), (4, "float32"), (8, "float32")])
def test_packed_tables_run_exactly_in_the_runtime(bits, scale_dtype, tmp_path):
    """Each table kind goes through ExecuTorch's own kernel and returns the QAT grid's
    values (fp16 scales once returned NaN through the fp32-output kernel variant)."""
    import executorch.kernels.quantized  # noqa: F401  (the embedding kernels, as the SDK backend loads them)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from kdaliens.export.targets.executorch import PackedEmbedding
    from kdaliens.training.quantize import dequantize_table, quantize_table

    g = torch.Generator().manual_seed(bits)
    q, s = quantize_table(torch.randn(500, 16, generator=g), bits, scale_dtype)
    table = dequantize_table(q, s)

    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = PackedEmbedding(table, bits, scale_dtype)

        def forward(self, a, b):  # the same table read twice, as hist_ and cand_ do
            return self.emb(a) + 0.0, self.emb(b) * 1.0

    ids = (torch.randint(0, 500, (1, 30)), torch.randint(0, 500, (1, 9)))
    ep = torch.export.export(Lookup().eval(), ids)
    pte = tmp_path / "t.pte"
    pte.write_bytes(to_edge_transform_and_lower(ep).to_executorch().buffer)
    out = Runtime.get().load_program(str(pte)).load_method("forward").execute(list(ids))
    torch.testing.assert_close(out[0], table[ids[0]], rtol=0, atol=0)
    torch.testing.assert_close(out[1], table[ids[1]], rtol=0, atol=0)
    # Packed: 4-bit codes take half the bytes of int8 ones, and the table is stored once.
    from executorch.exir._serialize._program import deserialize_pte_binary

    sizes = sorted(len(b.storage) for b in deserialize_pte_binary(pte.read_bytes()).program.constant_buffer)
    assert sizes[-1] - 500 * 16 * bits // 8 in range(16)  # storage is padded to 16 bytes
    assert sizes[-2] - 500 * (2 if scale_dtype == "float16" else 4) in range(16)


def test_int8_bundle_records_the_table_recipe(bundles):
    _, b = bundles
    m = json.loads((b["int8"] / "manifest.json").read_text())
    tables = {t["name"]: t for t in m["export"]["quantization"]["embedding_tables"]}
    item = next(t for n, t in tables.items() if t["shape"][0] >= 256)
    assert (item["bits"], item["scale_dtype"]) == (4, "float16")
    assert all(t["bits"] == 8 for t in tables.values() if t["shape"][0] < 256)


def test_debug_artifacts_live_beside_the_bundle(bundles, tmp_path):
    _, b = bundles
    m = json.loads((b["int8"] / "manifest.json").read_text())
    dbg = debug_dir(b["int8"])
    assert dbg == b["int8"].with_name("int8.debug") and not (b["int8"] / "model.etrecord").exists()
    assert json.loads((dbg / "debug.json").read_text())["model_sha256"] == m["artifacts"]["model.pte"]
    assert debug_file(b["int8"], "model.etrecord", m) == dbg / "model.etrecord"
    assert not debug_dir(b["none"]).exists()  # opt-in
    # A debug folder made for another model is ignored, and a plain re-export removes it.
    copy_ = tmp_path / "int8"
    shutil.copytree(b["int8"], copy_)
    shutil.copytree(dbg, debug_dir(copy_))
    other = json.loads((b["none"] / "manifest.json").read_text())
    assert debug_file(copy_, "model.etrecord", other) is None
    assert write_debug(copy_, None, "") is None and not debug_dir(copy_).exists()
