"""A bundle from a download is not trusted: each way a probe broke loading, refused with BundleError.

Symlinked or special files, files changed after verification, unlisted ONNX external
data, and manifests with wrong types, absurd sizes or nesting bombs; plus a bounded
hypothesis fuzz of the manifest loader that fails on any exception but a BundleError.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdaliens.sdk import Bundle, BundleError, Ranker


def _copy(src, tmp_path, name="b"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _items(bundle_dir, n=20):
    m = json.loads((bundle_dir / "manifest.json").read_text())
    field = next(f for f in m["feature_spec"]["item_fields"] if f["name"] == m["feature_spec"]["item_id_field"])
    return field["vocab"][:n]


def _scores(ranker, items):
    ranked = ranker.rerank("1", items, now=1e9)
    return dict(ranked)


# ------------------------------------------------------------------ files on disk
def test_symlinked_model_is_refused_without_leaking_the_target(onnx_bundle, tmp_path):
    b = _copy(onnx_bundle, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours " * 100)
    (b / "model.onnx").unlink()
    os.symlink(secret, b / "model.onnx")
    with pytest.raises(BundleError, match="symlink") as e:
        Bundle.load(b)
    assert hashlib.sha256(secret.read_bytes()).hexdigest()[:12] not in str(e.value)
    with pytest.raises(BundleError, match="symlink"):
        Ranker.load(b)


def test_symlinked_or_special_manifest_is_refused(et_bundle, tmp_path):
    b = _copy(et_bundle, tmp_path)
    real = tmp_path / "elsewhere.json"
    shutil.move(b / "manifest.json", real)
    os.symlink(real, b / "manifest.json")
    with pytest.raises(BundleError, match="symlink"):
        Bundle.load(b)
    (b / "manifest.json").unlink()
    os.symlink("/dev/zero", b / "manifest.json")  # a link to an endless device
    with pytest.raises(BundleError, match="symlink"):
        Bundle.load(b)
    (b / "manifest.json").unlink()
    os.mkfifo(b / "manifest.json")  # would block a plain open() forever
    with pytest.raises(BundleError, match="not a regular file"):
        Bundle.load(b)


def test_bundle_folder_may_be_reached_through_a_symlink(et_bundle, tmp_path):
    link = tmp_path / "current"
    os.symlink(et_bundle, link)
    assert Bundle.load(link).target == "executorch"


@pytest.mark.parametrize("which", ["et_bundle", "onnx_bundle", "tflite_bundle"])
def test_files_changed_after_verification_never_run(which, request, tmp_path):
    """Replaced between Bundle.load and Ranker.load, or truncated under a live Ranker: the
    verified bytes run (same scores), and the process neither runs the new file nor dies."""
    b = _copy(request.getfixturevalue(which), tmp_path)
    items = _items(b)
    before = _scores(Ranker.load(b), items)
    bundle = Bundle.load(b)
    model = bundle.model_path
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])  # truncated after verification
    ranker = Ranker.load(bundle)
    assert _scores(ranker, items) == pytest.approx(before, abs=1e-6)
    model.write_bytes(b"\0" * 16)  # overwritten in place while the ranker is live
    assert _scores(ranker, items) == pytest.approx(before, abs=1e-6)
    with pytest.raises(BundleError, match="sha256 mismatch"):  # a fresh load sees the change
        Ranker.load(b)


def test_unlisted_onnx_external_data_cannot_run(onnx_bundle, tmp_path):
    """A model.onnx that points at an external-data file outside the manifest does not load:
    the runtime gets bytes, and bytes cannot reach a file on disk."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    b = _copy(onnx_bundle, tmp_path)
    model = onnx.load(str(b / "model.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save_model(model, str(b / "model.onnx"))
    assert (b / "weights.bin").stat().st_size > 0
    m = json.loads((b / "manifest.json").read_text())  # an attacker re-hashes the unsigned manifest
    m["artifacts"]["model.onnx"] = hashlib.sha256((b / "model.onnx").read_bytes()).hexdigest()
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        Ranker.load(b)


# ------------------------------------------------------------------ bad manifests
def _set(m, path, value):
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def _field_index(m, name):
    for part in ("user_fields", "item_fields"):
        for i, f in enumerate(m["feature_spec"][part]):
            if f["kind"] == name:
                return ["feature_spec", part, i]
    raise LookupError(name)


BAD = [
    (["signature", "inputs"], 5, "signature.inputs: must be a list"),
    (["model_file"], [], "model_file: must be a string"),
    (["feature_spec", "history"], [], "feature_spec.history: must be an object"),
    (["feature_spec", "history", "short_len"], 1e10, "short_len: must be an integer"),
    (["feature_spec", "history", "short_len"], 10**10, r"short_len: 10000000000 is outside"),
    (["signature", "max_candidates"], 0, r"max_candidates: 0 is outside"),
    (["signature", "max_candidates"], -1, r"max_candidates: -1 is outside"),
    (["format_version"], 1.0, "format_version: must be an integer"),
    (["format_version"], True, "format_version: must be an integer"),
    (["target"], ["executorch"], "target: must be a string"),
    (["artifacts"], {"model.pte": 7}, "must be a string"),
    (["parity"], {"max_abs_diff": "x", "auc_reference": 0.5, "auc_exported": 0.5}, "parity.max_abs_diff"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[".".join(map(str, p)) + "=" + repr(v)[:12]
                                                          for p, v, _ in BAD])
def test_bad_manifest_values_are_bundle_errors(et_bundle, tmp_path, path, value, message):
    b = _copy(et_bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    _set(m, path, value)
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        Bundle.load(b)


@pytest.mark.parametrize("kind,key,value,message", [
    ("numeric", "boundaries", ["a"], "boundaries\\[0\\]: must be a finite number"),
    ("numeric", "boundaries", [3.0, 1.0], "strictly increasing"),
    ("multi", "max_len", "abc", "max_len: must be an integer"),
    ("multi", "max_len", 10**6, "max_len: 1000000 is outside"),
    ("categorical", "vocab", [1, 2], r"vocab\[0\]: must be a string"),
])
def test_bad_field_specs_are_bundle_errors(et_bundle, tmp_path, kind, key, value, message):
    b = _copy(et_bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    _set(m, _field_index(m, kind) + [key], value)
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        Bundle.load(b)


def test_nesting_bombs_and_huge_manifests_are_refused(et_bundle, tmp_path):
    b = _copy(et_bundle, tmp_path)
    (b / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="nested 200000 deep"):
        Bundle.load(b)
    (b / "manifest.json").write_text('{"a": "' + "[" * 100 + '"}')  # brackets inside a string are text
    with pytest.raises(BundleError, match="missing key"):
        Bundle.load(b)
    (b / "manifest.json").write_text('{"format_version": NaN}')
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(b)
    with open(b / "manifest.json", "wb") as f:  # sparse: 65 MiB on paper, no disk used
        f.truncate((64 << 20) + 1)
    with pytest.raises(BundleError, match="over the"):
        Bundle.load(b)


# ------------------------------------------------------------------ fuzz
def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree, lists cut to their first 3 entries."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from _paths(v, prefix + (i,))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def fuzz_base(et_bundle, tmp_path_factory):
    b = tmp_path_factory.mktemp("fuzz") / "b"
    shutil.copytree(et_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    return b, m, [p for p, _ in _paths(m) if p]


@settings(max_examples=int(os.environ.get("KDALIENS_FUZZ_EXAMPLES", 300)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_manifests_load_or_raise_bundle_error(fuzz_base, data):
    """Any manifest either loads or raises BundleError: no other exception escapes."""
    b, base, paths = fuzz_base
    m = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["replace", "delete"]))
        try:
            node = m
            for k in path[:-1]:
                node = node[k]
            if action == "delete" and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the path
            pass
    (b / "manifest.json").write_text(json.dumps(m))
    try:
        Bundle.load(b, verify=False)
    except BundleError:
        pass

