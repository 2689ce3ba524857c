"""Bundle verification: tampered, truncated, missing and unsupported bundles are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from kdaliens.sdk import Bundle, BundleError


@pytest.fixture
def bundle(et_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(et_bundle, dst)
    return dst


def test_valid_bundle_loads(bundle):
    b = Bundle.load(bundle)
    assert b.target == "executorch" and b.quantization == "none"
    assert b.model_path.exists() and b.max_candidates >= 2
    history = b.manifest["feature_spec"]["history"]
    assert b.spec.history.length == history["short_len"] + history["long_len"]


def test_tampered_model_is_refused(bundle):
    p = bundle / "model.pte"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.pte: sha256 mismatch"):
        Bundle.load(bundle)


def test_truncated_model_is_refused(bundle):
    p = bundle / "model.pte"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(BundleError, match="model.pte: sha256 mismatch"):
        Bundle.load(bundle)


def test_missing_pieces_are_refused(bundle, tmp_path):
    (bundle / "model.pte").unlink()
    with pytest.raises(BundleError, match="model.pte: artifact listed in the manifest is missing"):
        Bundle.load(bundle)
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        Bundle.load(bundle)
    with pytest.raises(BundleError, match="not a bundle folder"):
        Bundle.load(tmp_path / "nope")


def test_bad_manifests_are_refused(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**m, "format_version": 2}))
    with pytest.raises(BundleError, match="format_version 2 is not supported"):
        Bundle.load(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Bundle.load(bundle)
    bad = dict(m)
    bad["artifacts"] = {**m["artifacts"], "../escape": "0" * 64}
    (bundle / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="plain file name"):
        Bundle.load(bundle)
