"""Signed bundles: Ed25519 over the manifest (which lists every file's sha256), on all three targets.

The round trip is real: ``kdaliens-keygen`` keys, bundles exported by the session
fixtures and signed with :func:`kdaliens.export.bundle.sign_bundle` (and one signed by
``kdaliens-export --sign`` itself), loaded by ``Bundle.load`` / ``Ranker.load`` with
``trusted_keys``, and run in each runtime. A tampered manifest, a wrong key and an older
version are each refused with ``BundleError``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from kdaliens.export.bundle import sign_bundle
from kdaliens.export.keygen import main as keygen
from kdaliens.sdk import Bundle, BundleError, BundleStore, InputError, Ranker
from kdaliens.sdk.signing import KEY_FILE, PUB_FILE, SIGNATURE_FILE

TARGETS = ["et_bundle", "onnx_bundle", "tflite_bundle"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    assert keygen(["--out", str(d / "release")]) == 0
    assert keygen(["--out", str(d / "other")]) == 0
    return d / "release", d / "other"


def _items(b, n=30):
    m = json.loads((b / "manifest.json").read_text())
    field = next(f for f in m["feature_spec"]["item_fields"] if f["name"] == m["feature_spec"]["item_id_field"])
    return field["vocab"][:n]


def _signed(src, tmp_path, key, version=None, name="signed"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    sign_bundle(dst, key / KEY_FILE, bundle_version=version)
    return dst


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path, capsys):
    assert keygen(["--out", str(tmp_path / "k")]) == 0
    key, pub = tmp_path / "k" / KEY_FILE, tmp_path / "k" / PUB_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    first = key.read_bytes()
    assert keygen(["--out", str(tmp_path / "k")]) == 2
    assert "already exist" in capsys.readouterr().err
    assert key.read_bytes() == first
    assert keygen(["--out", str(tmp_path / "k"), "--force"]) == 0
    assert key.read_bytes() != first


@pytest.mark.parametrize("which", TARGETS)
def test_signed_round_trip(which, request, keys, tmp_path):
    release, _ = keys
    src = request.getfixturevalue(which)
    b = _signed(src, tmp_path, release, version=7)
    assert (b / SIGNATURE_FILE).is_file()
    pub = release / PUB_FILE
    for trusted in ([pub], [str(pub)], [pub.read_bytes()], [bytes.fromhex(json.loads(pub.read_text())["key"])]):
        loaded = Bundle.load(b, trusted_keys=trusted)
        assert loaded.signed_by == json.loads(pub.read_text())["key_id"] and loaded.warning is None
        assert loaded.bundle_version == 7
    items = _items(b)
    signed = Ranker.load(b, trusted_keys=[pub]).rerank("1", items, now=1e9)
    plain = Ranker.load(src).rerank("1", items, now=1e9)
    assert [i for i, _ in signed] == [i for i, _ in plain]
    assert "warning" not in signed.meta
    assert "unsigned" in plain.meta["warning"] and "\n" not in plain.meta["warning"]
    # Signed but loaded without keys: it runs, and says its signature was not checked.
    assert "not checked" in Ranker.load(b).rerank("1", items, now=1e9).meta["warning"]


@pytest.mark.parametrize("which", TARGETS)
def test_tampered_manifest_wrong_key_and_older_version_are_refused(which, request, keys, tmp_path):
    release, other = keys
    pub = release / PUB_FILE
    src = request.getfixturevalue(which)
    b = _signed(src, tmp_path, release, version=10)
    # The probe's attack: reverse the item vocabulary (hashes of the model files still match).
    m = json.loads((b / "manifest.json").read_text())
    field = next(f for f in m["feature_spec"]["item_fields"] if f["name"] == m["feature_spec"]["item_id_field"])
    field["vocab"] = field["vocab"][::-1]
    tampered = tmp_path / "tampered"
    shutil.copytree(b, tampered)
    (tampered / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    Bundle.load(tampered)  # without keys the schema alone cannot tell
    with pytest.raises(BundleError, match="does not match manifest.json"):
        Bundle.load(tampered, trusted_keys=[pub])
    with pytest.raises(BundleError, match="does not match manifest.json"):
        Ranker.load(tampered, trusted_keys=[pub])
    # Whitespace is a change too: the signature covers the exact bytes.
    shutil.copy(b / "manifest.json", tampered / "manifest.json")
    with open(tampered / "manifest.json", "ab") as f:
        f.write(b" ")
    with pytest.raises(BundleError, match="does not match"):
        Bundle.load(tampered, trusted_keys=[pub])
    # A wrong key, and a bundle signed by someone else.
    with pytest.raises(BundleError, match="not among the trusted keys"):
        Bundle.load(b, trusted_keys=[other / PUB_FILE])
    forged = _signed(src, tmp_path, other, version=10, name="forged")
    with pytest.raises(BundleError, match="not among the trusted keys"):
        Ranker.load(forged, trusted_keys=[pub])
    # Unsigned, and a broken signature file.
    with pytest.raises(BundleError, match="not signed"):
        Bundle.load(src, trusted_keys=[pub])
    sig = json.loads((b / SIGNATURE_FILE).read_text())
    sig["signature"] = "00" * 64
    (tampered / "manifest.json").write_bytes((b / "manifest.json").read_bytes())
    (tampered / SIGNATURE_FILE).write_text(json.dumps(sig))
    with pytest.raises(BundleError, match="does not match"):
        Bundle.load(tampered, trusted_keys=[pub])
    (tampered / SIGNATURE_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="malformed"):
        Bundle.load(tampered, trusted_keys=[pub])
    # An older version, validly signed, is refused by a store running a newer one.
    store = BundleStore(tmp_path / "store", trusted_keys=[pub])
    assert store.install(b).bundle_version == 10
    older = _signed(src, tmp_path, release, version=9, name="older")
    Bundle.load(older, trusted_keys=[pub])  # a genuine bundle, only older
    with pytest.raises(BundleError, match="older than the one in service"):
        store.install(older)
    assert Bundle.load(store.current(), trusted_keys=[pub]).bundle_version == 10
    assert store.install(older, allow_downgrade=True).bundle_version == 9  # when told to


def test_trusted_keys_are_checked(onnx_bundle, keys, tmp_path):
    release, _ = keys
    with pytest.raises(InputError, match="secret signing key"):
        Bundle.load(onnx_bundle, trusted_keys=[release / KEY_FILE])
    with pytest.raises(InputError, match="empty"):
        Bundle.load(onnx_bundle, trusted_keys=[])
    with pytest.raises(InputError, match="missing"):
        Bundle.load(onnx_bundle, trusted_keys=[tmp_path / "nope.pub"])
    with pytest.raises(InputError, match="not a kdaliens key"):
        Bundle.load(onnx_bundle, trusted_keys=[b"short garbage"])
    with pytest.raises(InputError, match="verify=False"):
        Bundle.load(onnx_bundle, verify=False, trusted_keys=[release / PUB_FILE])
    os.symlink(release / PUB_FILE, tmp_path / "link.pub")
    with pytest.raises(InputError, match="symlink"):
        Bundle.load(onnx_bundle, trusted_keys=[tmp_path / "link.pub"])
    # A Bundle loaded without keys cannot be vouched for afterwards.
    with pytest.raises(InputError, match="without checking its signature"):
        Ranker.load(Bundle.load(onnx_bundle), trusted_keys=[release / PUB_FILE])
    with pytest.raises(InputError, match="public key"):
        sign_bundle(tmp_path, release / PUB_FILE)


def test_export_cli_signs_and_versions(tiny_run, keys, tmp_path):
    from kdaliens.export.cli import main as export

    release, _ = keys
    out = tmp_path / "onnx"
    # 200 requests, as the bundle fixtures: on 50 the parity AUC moves by about 0.002 when one pair swaps.
    assert export(["--target", "onnx", "--run", str(tiny_run[0]), "--out", str(out), "--parity-limit", "200",
                   "--sign", str(release / KEY_FILE), "--bundle-version", "42"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["bundle_version"] == 42 and (out / SIGNATURE_FILE).is_file()
    # The manifest lists every file of the bundle but itself and its signature.
    assert set(m["artifacts"]) | {"manifest.json", SIGNATURE_FILE} == {p.name for p in out.iterdir()}
    assert Bundle.load(out, trusted_keys=[release / PUB_FILE]).bundle_version == 42
    # Re-exporting without a version goes up, never down; without --sign the old signature goes.
    assert export(["--target", "onnx", "--run", str(tiny_run[0]), "--out", str(out), "--parity-limit", "200"]) == 0
    assert json.loads((out / "manifest.json").read_text())["bundle_version"] > 42
    assert not (out / SIGNATURE_FILE).exists()
    # A bad key fails before any lowering.
    assert export(["--target", "onnx", "--run", str(tiny_run[0]), "--out", str(tmp_path / "x"),
                   "--sign", str(release / PUB_FILE)]) == 2
    assert not (tmp_path / "x").exists()
