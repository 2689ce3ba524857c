"""BundleStore: verify, canary, switch atomically; roll back; survive kill -9 anywhere in install.

And the server side: ``write_bundle`` replacing a bundle while other processes load it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from kdaliens.export.bundle import sign_bundle, staging_dir, write_bundle
from kdaliens.export.keygen import main as keygen
from kdaliens.sdk import Bundle, BundleError, BundleStore, Ranker, StoreError
from kdaliens.sdk.canary import CANARY_FILE
from kdaliens.sdk.signing import KEY_FILE, PUB_FILE, SIGNATURE_FILE


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    assert keygen(["--out", str(d)]) == 0
    return d


def _version(src, tmp_path, key, version, name=None):
    dst = tmp_path / (name or f"v{version}")
    shutil.copytree(src, dst)
    sign_bundle(dst, key / KEY_FILE, bundle_version=version)
    return dst


def _rehash_and_sign(b, key, name, data):
    """Replace artifact ``name`` and re-sign: a bundle that is genuine, only wrong inside."""
    (b / name).write_bytes(data)
    m = json.loads((b / "manifest.json").read_text())
    m["artifacts"][name] = hashlib.sha256(data).hexdigest()
    (b / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    sign_bundle(b, key / KEY_FILE)


def test_install_rollback_and_pinning(onnx_bundle, key, tmp_path):
    pub = key / PUB_FILE
    store = BundleStore(tmp_path / "store", trusted_keys=[pub], keep=3)
    assert store.current() is None and store.versions() == []
    with pytest.raises(BundleError, match="no earlier bundle"):
        store.rollback()
    v1, v2, v3, v4 = (_version(onnx_bundle, tmp_path, key, v) for v in (1, 2, 3, 4))
    assert store.install(v1).bundle_version == 1                     # a folder
    zpath = tmp_path / "v2.zip"
    zpath.write_bytes(BundleStore.pack(v2))
    assert store.install(zpath).bundle_version == 2                  # a zip file
    assert store.install(BundleStore.pack(v3)).bundle_version == 3   # zip bytes, as downloaded
    assert store.install(v3).bundle_version == 3                     # the same again: nothing changes
    assert [v["bundle_version"] for v in store.versions()] == [3, 2, 1]
    assert Ranker.load(store.current(), trusted_keys=[pub]).rerank("1", ["1", "2"], now=1e9).meta.get("warning") is None
    assert store.install(v4).bundle_version == 4
    assert [v["bundle_version"] for v in store.versions()] == [4, 3, 2]  # keep=3
    assert len(list((tmp_path / "store" / "versions").iterdir())) == 3
    assert Bundle.load(store.rollback()).bundle_version == 3
    assert Bundle.load(store.rollback()).bundle_version == 2
    with pytest.raises(BundleError, match="no earlier bundle"):
        store.rollback()
    with pytest.raises(BundleError, match="older than the one in service"):
        store.install(v1)
    # Same version, other content: a version is never reused.
    other = _version(onnx_bundle, tmp_path, key, 2, name="other2")
    m = json.loads((other / "manifest.json").read_text())
    m["source"]["note"] = "another build"
    (other / "manifest.json").write_text(json.dumps(m))
    sign_bundle(other, key / KEY_FILE)
    with pytest.raises(BundleError, match="already in service with other content"):
        store.install(other)
    assert Bundle.load(store.current()).bundle_version == 2


def test_refused_installs_leave_the_bundle_in_service(onnx_bundle, key, tmp_path):
    pub = key / PUB_FILE
    store = BundleStore(tmp_path / "store", trusted_keys=[pub])
    store.install(_version(onnx_bundle, tmp_path, key, 1))
    serving = store.current()
    # Unsigned, for a store that requires signatures.
    with pytest.raises(BundleError, match="not signed"):
        store.install(onnx_bundle)
    # A genuine, signed bundle whose model computes something else on this device.
    bad = _version(onnx_bundle, tmp_path, key, 5, name="badcanary")
    doc = json.loads((bad / CANARY_FILE).read_text())
    doc["score"] = [s + 1.0 for s in doc["score"]]
    _rehash_and_sign(bad, key, CANARY_FILE, json.dumps(doc).encode())
    with pytest.raises(BundleError, match="parity canary"):
        store.install(bad)
    # A model file the runtime cannot load at all.
    broken = _version(onnx_bundle, tmp_path, key, 6, name="broken")
    _rehash_and_sign(broken, key, "model.onnx", b"\x08\x07garbage" * 100)
    with pytest.raises(BundleError, match="cannot load this model"):
        store.install(broken)
    # No canary (bundles of older exports).
    nocanary = _version(onnx_bundle, tmp_path, key, 7, name="nocanary")
    m = json.loads((nocanary / "manifest.json").read_text())
    del m["canary"], m["artifacts"][CANARY_FILE]
    (nocanary / CANARY_FILE).unlink()
    (nocanary / "manifest.json").write_text(json.dumps(m))
    sign_bundle(nocanary, key / KEY_FILE)
    with pytest.raises(BundleError, match="no parity canary"):
        store.install(nocanary)
    assert store.current() == serving
    assert [p.name for p in (tmp_path / "store").iterdir() if p.name.startswith(".staging")] == []


def _zip(entries):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)
    return out.getvalue()


def test_hostile_archives_are_refused(onnx_bundle, key, tmp_path):
    store = BundleStore(tmp_path / "store")
    files = [(p.name, p.read_bytes(), 0o100644) for p in onnx_bundle.iterdir()]
    assert store.install(_zip(files)).bundle_version >= 0  # the plain archive installs (unsigned allowed)
    for entries, message in [
        ([*files, ("../evil", b"x", 0o100644)], "not a plain bundle file name"),
        ([*files, ("sub/model.onnx", b"x", 0o100644)], "not a plain bundle file name"),
        ([*files, ("link", b"/etc/passwd", 0o120777)], "not a plain bundle file name"),
        ([*files, files[0]], "not a plain bundle file name"),
        ([(n, d, m) for n, d, m in files if n != "manifest.json"], "no manifest.json"),
        ([(n, d, m) for n, d, m in files if n != "model.onnx"], "missing"),
    ]:
        with pytest.raises(BundleError, match=message):
            store.install(_zip(entries))
    with pytest.raises(BundleError, match="not a bundle zip"):
        store.install(b"PK\x03\x04 truncated")
    with pytest.raises(BundleError, match="no bundle folder or archive"):
        store.install(tmp_path / "nothing-here")


def test_corrupt_state_is_a_store_error(onnx_bundle, tmp_path):
    store = BundleStore(tmp_path / "store")
    store.install(onnx_bundle)
    (tmp_path / "store" / "state.json").write_text('{"current": "../../etc", "previous": []}')
    with pytest.raises(StoreError, match="corrupt"):
        store.current()


_CHILD = r"""
import io, json, sys, zipfile
from pathlib import Path
from kdaliens.sdk import BundleStore
from kdaliens.sdk.signing import load_signing_key, sign_manifest
root, base, key, start = sys.argv[1], Path(sys.argv[2]), load_signing_key(sys.argv[3]), int(sys.argv[4])
store = BundleStore(root, trusted_keys=[sys.argv[5]])
manifest = json.loads((base / "manifest.json").read_text())
files = {n: (base / n).read_bytes() for n in manifest["artifacts"]}
def archive(v):
    data = json.dumps({**manifest, "bundle_version": v}).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", data)
        z.writestr("manifest.sig", sign_manifest(data, key))
        for n, b in files.items():
            z.writestr(n, b)
    return out.getvalue()
print("ready", flush=True)
for v in range(start, start + 10_000):
    data = archive(v)
    print("start", v, flush=True)
    store.install(data)
    print("done", v, flush=True)
"""


def test_kill_9_during_install_always_leaves_a_bundle_in_service(onnx_bundle, key, tmp_path):
    """>= 20 kills at random points of a loop of installs: after each, the store serves a
    bundle that verifies and runs, and it is the new one whenever install returned."""
    pub = key / PUB_FILE
    root = tmp_path / "store"
    store = BundleStore(root, trusted_keys=[pub])
    store.install(_version(onnx_bundle, tmp_path, key, 1))
    rng = random.Random(0)
    v, kills, mid, committed_unreturned, before = 2, 0, 0, 0, 1
    while kills < 24:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(onnx_bundle), str(key / KEY_FILE),
                                  str(v), str(pub)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Read through the same file objects as readline(): it may already hold lines after
        # "ready" in its buffer, which communicate() (raw fd reads) would lose.
        with child.stdout, child.stderr:
            out, err = child.stdout.read(), child.stderr.read()
        kills += 1
        lines = out.split()
        started = [int(x) for k, x in zip(lines[::2], lines[1::2]) if k == "start"]
        done = [int(x) for k, x in zip(lines[::2], lines[1::2]) if k == "done"]
        serving = Bundle.load(store.current(), trusted_keys=[pub])
        ranked = Ranker.load(store.current(), trusted_keys=[pub]).rerank("1", ["1", "2", "3"], now=1e9)
        assert len(ranked) == 3 and not ranked.meta["fallback"]
        if started and (not done or done[-1] != started[-1]):  # killed inside install(started[-1])
            mid += 1
            last_done = done[-1] if done else before
            assert serving.bundle_version in (last_done, started[-1]), (
                out, (root / "state.json").read_text(), sorted(os.listdir(root / "versions")), err[-2000:])
            committed_unreturned += serving.bundle_version == started[-1]
        elif done:
            assert serving.bundle_version == done[-1]
        v = (started[-1] if started else v) + 1
        before = serving.bundle_version
    assert mid >= 5, f"only {mid} of {kills} kills landed inside install"
    # Leftovers of killed installs are cleaned by the next one.
    store.install(_version(onnx_bundle, tmp_path, key, v))
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]
    assert len(list((root / "versions").iterdir())) <= store.keep
    print(f"kills {kills}, inside install {mid}, of which after the commit point {committed_unreturned}")


def test_write_bundle_replaces_atomically_under_concurrent_loads(onnx_bundle, tmp_path):
    """The probe saw 5 of 4,810 loads fail while a bundle was replaced; now none may."""
    out = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, out)
    manifest = json.loads((onnx_bundle / "manifest.json").read_text())
    failures, loads, stop = [], [0], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                Bundle.load(out)
                loads[0] += 1
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            staging = staging_dir(out)
            for name in manifest["artifacts"]:
                shutil.copy(onnx_bundle / name, staging / name)
            write_bundle(out, staging, manifest, bundle_version=100 + i)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and loads[0] > 60
    assert Bundle.load(out).bundle_version == 159
    assert not (out / SIGNATURE_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or old folders left
    assert set(os.listdir(out)) == {*manifest["artifacts"], "manifest.json"}
