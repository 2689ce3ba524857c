"""Fuzzing what a device downloads: signatures, trusted keys and bundle archives.

Any input either works or raises a KdaliensError (BundleError for the bundle, InputError
for the caller's keys); any other exception fails the test. ``KDALIENS_FUZZ_EXAMPLES``
raises the example count (default: small enough for the default test run).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdaliens.export.bundle import sign_bundle
from kdaliens.export.keygen import main as keygen
from kdaliens.sdk import Bundle, BundleError, BundleStore, InputError
from kdaliens.sdk.signing import KEY_FILE, PUB_FILE, SIGNATURE_FILE

EXAMPLES = int(os.environ.get("KDALIENS_FUZZ_EXAMPLES", 150))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=8)


class _Signed(tuple):
    def __repr__(self):  # hypothesis prints its arguments on a failure; the zip is 26 KB
        return f"signed bundle at {self[0]}"


@pytest.fixture(scope="module")
def signed(onnx_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-signed")
    assert keygen(["--out", str(d / "keys")]) == 0
    b = d / "b"
    shutil.copytree(onnx_bundle, b)
    sign_bundle(b, d / "keys" / KEY_FILE, bundle_version=5)
    return _Signed((b, d / "keys" / PUB_FILE, (b / SIGNATURE_FILE).read_bytes(), BundleStore.pack(b)))


@FUZZ
@given(doc=st.one_of(JSON, st.fixed_dictionaries({"key_id": JSON, "signature": JSON, "algorithm": JSON}),
                     st.fixed_dictionaries({"key_id": st.text(max_size=20), "signature": st.text("0123456789abcdef"),
                                            "algorithm": st.just("ed25519")})),
       raw=st.binary(max_size=300), use_raw=st.booleans())
def test_fuzzed_signatures_are_refused_with_bundle_error(signed, doc, raw, use_raw):
    b, pub, good, _ = signed
    data = raw if use_raw else json.dumps(doc).encode()
    if data == good:
        return
    (b / SIGNATURE_FILE).write_bytes(data)
    try:
        with pytest.raises(BundleError):
            Bundle.load(b, trusted_keys=[pub])
    finally:
        (b / SIGNATURE_FILE).write_bytes(good)


@FUZZ
@given(key=st.one_of(st.binary(max_size=100), JSON.map(lambda v: json.dumps(v).encode()),
                     st.fixed_dictionaries({"kind": st.sampled_from(["kdaliens-ed25519-public-key",
                                                                     "kdaliens-ed25519-signing-key", "x"]),
                                            "key": JSON, "seed": JSON}).map(lambda v: json.dumps(v).encode()),
                     st.integers(), st.none(), st.lists(st.integers(), max_size=3)))
def test_fuzzed_trusted_keys_raise_input_or_bundle_error(signed, key):
    b, _, _, _ = signed
    try:
        Bundle.load(b, trusted_keys=[key])
    except (InputError, BundleError):  # an unusable key / a usable key that did not sign it
        return
    raise AssertionError(f"a bundle loaded with a key that did not sign it: {key!r}")


@FUZZ
@given(data=st.data())
def test_fuzzed_archives_install_genuinely_or_raise_bundle_error(signed, tmp_path_factory, data):
    """Flipped, cut or spliced bytes of a signed bundle zip: refused, or (when the damage
    missed everything that matters) the genuine bundle is what gets installed."""
    b, pub, _, archive = signed
    blob = bytearray(archive)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "splice"]))
        at = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del blob[at:at + data.draw(st.integers(1, 4096))]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    store = BundleStore(tmp_path_factory.mktemp("fuzz-store"), trusted_keys=[pub])
    try:
        installed = store.install(bytes(blob))
    except BundleError:
        assert store.current() is None
        return
    assert installed.manifest == Bundle.load(b).manifest and installed.blobs == Bundle.load(b).blobs
