"""Golden vectors: the exact model inputs the Python SDK builds, for ports of the encoder.

A port of the feature encoder to another language (the Java encoder of the Android sample
in ``examples/android``) proves itself against a file written here: raw inputs (item
attributes, users, behaviour events, candidates, request times, sampler seeds) with odd
values on purpose, and what :class:`~kdaliens.sdk.Ranker` feeds the model for each
request, array by array, after the cast to the bundle signature's dtypes. The port must
reproduce every array exactly.

The file is built by running the real :meth:`Ranker.rerank` with a recording backend in
place of the model, so it is the app's code path, not a reimplementation of it. The
recorder returns a fake score per candidate (:data:`FAKE_SCORE`) so that the ranking step
(duplicates, chunks, ties) is checked too. Besides the bundle's own spec, two synthetic
specs cover what a bundle may not use: hashed fields, a user multi field, a separator
other than a space, int32 ids (as LiteRT bundles have), a small candidate limit (chunks),
``short_len=0``, a 64-bit seed, and ``history_item_fields`` in another order.

Unit vectors come first in the file: ``stable_hash``, ``normalize_token`` (including
Python's float ``repr`` of non-integral floats), ``to_float``, time-gap buckets and
sampler positions, so a port failing there gets a precise message.

Everything is deterministic: the same bundle gives the same file, byte for byte.

Example:
    >>> from kdaliens.jobs.golden import write_golden               # doctest: +SKIP
    >>> write_golden("bundles/executorch", "golden.json")          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kdaliens.sdk.backends.base import Backend
from kdaliens.sdk.bundle import Bundle
from kdaliens.sdk.features import (
    CategoricalField,
    FeatureEncoder,
    FeatureSpec,
    Field,
    MultiField,
    NumericField,
    normalize_token,
    stable_hash,
    to_float,
)
from kdaliens.sdk.history import HistorySampler, HistorySpec
from kdaliens.sdk.ranker import Ranker
from kdaliens.sdk.readers import MemoryItems
from kdaliens.sdk.signature import ModelSignature, Role

__all__ = ["FAKE_SCORE", "GOLDEN_FORMAT", "GOLDEN_VERSION", "build_golden", "write_golden"]

GOLDEN_FORMAT = "kdaliens-golden"
GOLDEN_VERSION = 1

#: The recorder's stand-in for the model: one score per candidate, from its encoded id.
FAKE_SCORE = "score[j] = float32((cand_<item_id_field>[0, j] * 37) % 11)"

_U64 = (1 << 64) - 1
# Seeds for the sampler: None means the bundle's own seed (what a device uses).
_SEEDS: tuple[int | None, ...] = (None, 7, _U64)


def write_golden(bundle: str | Path | Bundle, out_path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Build the golden vectors of a bundle and write them to ``out_path`` as JSON.

    Args:
        bundle: a bundle folder (its ``manifest.json`` is read) or a loaded :class:`Bundle`.
        out_path: the JSON file to write (its folder must exist).
        verify: check the bundle's artifact hashes when loading it from a folder.

    Returns:
        The document that was written.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, verify=verify)
    doc = build_golden(b)
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    Path(out_path).write_text(text + "\n", encoding="utf-8")
    return doc


def build_golden(bundle: Bundle) -> dict[str, Any]:
    """The golden document of a bundle (see the module docstring for its content)."""
    mpath = bundle.path / "manifest.json"
    manifest_sha = hashlib.sha256(mpath.read_bytes()).hexdigest() if mpath.is_file() else None
    spec = bundle.spec
    return {
        "format": GOLDEN_FORMAT,
        "version": GOLDEN_VERSION,
        "manifest_sha256": manifest_sha,
        "fake_score": FAKE_SCORE,
        "stable_hash": [{"token": t, "hash": stable_hash(t)} for t in _HASH_TOKENS],
        "normalize_token": [{"value": v, "token": normalize_token(v)} for v in _normalize_values()],
        "to_float": [{"value": v, "repr": repr(to_float(v))} for v in _FLOAT_VALUES],
        "time_gaps": _time_gap_vectors(spec),
        "sampler": _sampler_vectors(spec.history),
        "cases": [
            _case("bundle", bundle, inline_manifest=False),
            _case("synthetic-hashed-int32", _synthetic_bundle(bundle, _hashed_spec(), "int32", 3), True),
            _case("synthetic-minimal", _synthetic_bundle(bundle, _minimal_spec(), "int64", 512), True),
        ],
    }


# --------------------------------------------------------------------------------------
# Unit vectors.

_HASH_TOKENS = (
    "", "a", "foobar", "5", "Children's", "Sci-Fi", "ünïcødé", "日本語", "😀", "a b", " ", "\t",
    "1995", "x" * 300,
)

_FLOAT_VALUES: tuple[Any, ...] = (
    None, True, False, 0, 5, -7, 2**63, 2**70, 0.0, -0.0, 2.5, 1e300, float("nan"), float("inf"), float("-inf"),
    "5", " 5 ", "5.0", "-1.5e3", "1e", "1e+", ".5", "5.", ".", "e5", "+.5e-3", "1_000", "1_000.5", "1__0", "_1",
    "1_", "1_.5", "1._5", "1e1_0", "inf", "-Infinity", "INFINITY", "nan", "-NaN", "infinit", "0x10", "1.5f", "5d",
    "", "   ", "abc", "\u00a012\u2003", "\u0661\u0662", "\u0665.\u0665", "12 34", "+-1", "١e٢", [1, 2], {"a": 1},
    "\u20075\u202f",
)


def _normalize_values() -> list[Any]:
    values: list[Any] = [
        None, "", "   ", " 5 ", "5", "5.0", "x", "\u00a0x\u2003", "\x85y\x1c", "\u200bz", "Ünï", "😀 ", True, False,
        0, 5, -12, 2**63 - 1, 2**63, 2**70, -(2**70),
        0.0, -0.0, 5.0, -7.0, 0.1, 0.1 + 0.2, 1 / 3, 2.5, -2.5, 1e15, 1e16, 1.5e16, 1e17, 1e22, 1e23,
        9.999999999999999e22, 1e-4, 1e-5, 1.5e-7, 123456.789, float(2**53 - 1), float(2**53), float(2**53 + 2),
        -float(2**60), 1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 4.35e-321, 0.5, 100.25,
        float("nan"), float("inf"), float("-inf"),
    ]
    rng = random.Random(20240611)
    for _ in range(400):
        kind = rng.random()
        if kind < 0.5:
            v = rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-25, 25)
        elif kind < 0.8:
            v = rng.randint(-10**6, 10**6) / 10 ** rng.randint(1, 8)
        else:  # any finite bit pattern
            v = float(np.frombuffer(rng.getrandbits(64).to_bytes(8, "little"), dtype=np.float64)[0])
            if not math.isfinite(v):
                v = 1.0 / 3.0
        values.append(v)
    return values


def _time_gap_vectors(spec: FeatureSpec) -> list[dict[str, Any]]:
    enc = FeatureEncoder(spec)
    now = 1_700_000_000.0
    gaps = [0.0, 0.5, *spec.time_gap_boundaries, *(b + 0.25 for b in spec.time_gap_boundaries),
            *(b - 0.25 for b in spec.time_gap_boundaries), 1e9, -5.0]
    ts = np.array([now - g for g in gaps], dtype=np.float64)
    ids = enc.encode_time_gaps(now, ts)
    return [{"now": now, "ts": float(t), "bucket": int(i)} for t, i in zip(ts, ids)]


def _sampler_vectors(bundle_history: HistorySpec) -> list[dict[str, Any]]:
    k, m = bundle_history.short_len, bundle_history.long_len
    settings = [
        (k, m, bundle_history.seed, n) for n in (0, 1, k, k + m, k + m + 1, 3 * (k + m) + 7, 1000)
    ] + [
        (k, m, 7, 200), (k, m, _U64, 200), (3, 2, 123456789, 12), (0, 5, 1, 20), (5, 0, 1, 20),
        (1, 1, 2**63, 3), (0, 1, 0, 1), (2, 6, 2**63 + 12345, 9), (4, 16, 42, 5000),
    ]
    out = []
    for short_len, long_len, seed, n in settings:
        pos = HistorySampler(HistorySpec(short_len, long_len, seed)).positions(n)
        out.append({"short_len": short_len, "long_len": long_len, "seed": seed, "n_past": n,
                    "positions": [int(p) for p in pos]})
    return out


# --------------------------------------------------------------------------------------
# Synthetic specs and bundles.


def _hashed_spec() -> FeatureSpec:
    return FeatureSpec(
        user_fields=(
            CategoricalField("uid", hash_buckets=97),
            NumericField("score", boundaries=(-1.5, 0.0, 2.5, 1e6)),
            MultiField("langs", max_len=3, hash_buckets=13, separator="|"),
            CategoricalField("country", vocab=("de", "fr", "日本", "5", "0")),
        ),
        item_fields=(
            CategoricalField("sku", hash_buckets=1009),
            MultiField("tags", max_len=4, vocab=("red", "green", "blue", "XL", "ünï"), separator=","),
            NumericField("price", boundaries=(0.99, 9.99, 99.99)),
            CategoricalField("brand", vocab=("acme", "globex")),
        ),
        item_id_field="sku",
        user_id_field="uid",
        history=HistorySpec(short_len=3, long_len=2, seed=2**63 + 12345),
        history_item_fields=("tags", "sku"),
        event_vocab=("click", "buy", "5"),
        time_gap_boundaries=(1.0, 30.0, 3600.0, 86400.0),
        default_event="buy",
    )


def _minimal_spec() -> FeatureSpec:
    return FeatureSpec(
        user_fields=(),
        item_fields=(CategoricalField("item_id", vocab=tuple(str(i) for i in range(1, 40))),),
        history=HistorySpec(short_len=0, long_len=4, seed=99),
    )


def _synthetic_bundle(base: Bundle, spec: FeatureSpec, id_dtype: str, max_candidates: int) -> Bundle:
    target, model_file = ("litert", "model.tflite") if id_dtype == "int32" else ("executorch", "model.pte")
    manifest = {
        "format_version": 1,
        "target": target,
        "quantization": "none",
        "model_file": model_file,
        "artifacts": {model_file: "0" * 64},
        "signature": ModelSignature.from_spec(spec).to_manifest(id_dtype, max_candidates),
        "feature_spec": spec.to_dict(),
        "parity": {"max_abs_diff": 0.0, "auc_reference": 0.5, "auc_exported": 0.5},
        "source": {},
    }
    # Round trip through JSON, as a device reads it.
    manifest = json.loads(json.dumps(manifest))
    return Bundle(path=base.path / "synthetic", manifest=manifest, spec=FeatureSpec.from_dict(manifest["feature_spec"]))


# --------------------------------------------------------------------------------------
# Raw inputs, built from the spec's fields.

_MISSING = object()  # leave the key out of the dict


def _spread(seq: tuple[str, ...], n: int) -> list[str]:
    if not seq:
        return []
    if len(seq) <= n:
        return list(seq)
    return [seq[round(i * (len(seq) - 1) / (n - 1))] for i in range(n)]


def _as_number(token: str) -> Any:
    """An int (or an integral float) spelling of a numeric token, else the token."""
    try:
        i = int(token)
    except ValueError:
        return token
    return i if str(i) == token else token


def _value_pool(f: Field) -> list[Any]:
    """Values of one attribute, odd ones included; the encoder must accept every one."""
    if isinstance(f, NumericField):
        b = f.boundaries or (0.0,)
        mid = (b[0] + b[-1]) / 2
        pool: list[Any] = [b[0], b[-1], b[0] - 1.0, b[-1] + 1000.0, mid, f" {b[-1]!r} ", str(b[0]), True, None,
                           _MISSING, float("nan"), float("inf"), float("-inf"), "abc", "", "1_0", "\u0661\u0662",
                           [1.0]]
        if float(b[0]).is_integer():
            pool.append(int(b[0]))
        if len(b) > 1:
            pool += [b[1], (b[0] + b[1]) / 2]
        return pool
    if isinstance(f, MultiField):
        sep = f.separator
        toks = list(f.vocab) if f.vocab is not None else ["alpha", "beta", "γάμμα", "7"]
        return [
            sep.join(toks[:2]), sep.join(toks * 2), [toks[0], None, 5, 5.0, f" {toks[-1]} "], "", sep * 3,
            toks[-1], None, _MISSING, float("nan"), f"{sep}{sep}{toks[0]}{sep} {sep}{toks[1 % len(toks)]}",
            ["", "   ", toks[0]], 7, (toks[0] + "\t" + toks[-1]), sep.join(["unknown", toks[0], "😀"]), [],
        ]
    toks = _spread(f.vocab, 6) if f.vocab is not None else ["alpha", "β", "7", "x y"]
    pool = [*toks, f" {toks[0]} ", "no-such-token", "", "  ", None, _MISSING, "Ünïcødé ☃ 😀", 5.0]
    pool += [_as_number(t) for t in toks if _as_number(t) != t][:2]
    pool += [float(_as_number(t)) for t in toks if _as_number(t) != t][:1]
    return pool


def _rows(fields: tuple[Field, ...], n: int, offset: int, skip: str | None = None) -> list[dict[str, Any]]:
    pools = {f.name: _value_pool(f) for f in fields if f.name != skip}
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for j, (name, pool) in enumerate(pools.items()):
            v = pool[(i * (2 * j + 1) + offset + j) % len(pool)]
            if v is not _MISSING:
                row[name] = v
        rows.append(row)
    return rows


def _catalogue_ids(spec: FeatureSpec) -> list[str]:
    f = spec.item_field(spec.item_id_field)
    known = _spread(f.vocab, 12) if getattr(f, "vocab", None) is not None else [f"sku-{i}" for i in range(1, 13)]
    return [*known, "new-item-1", "ünïcødé-☃", "42424242", "0"]


def _catalogue(spec: FeatureSpec) -> dict[str, dict[str, Any]]:
    ids = _catalogue_ids(spec)
    rows = _rows(spec.item_fields, len(ids), offset=3, skip=spec.item_id_field)
    return {i: r for i, r in zip(ids, rows)}


def _users(spec: FeatureSpec) -> list[dict[str, Any] | None]:
    users: list[dict[str, Any] | None] = list(_rows(spec.user_fields, 5, offset=1))
    users += [None, {}, {"shoe_size": [1, 2], "": None}]
    return users


def _raw_id(token: str, j: int) -> Any:
    """One of the spellings of an item id an app may send."""
    n = _as_number(token)
    forms: list[Any] = [token, token, f" {token} "]
    if n != token:
        forms += [n, float(n)]
    return forms[j % len(forms)]


def _events(spec: FeatureSpec, ids: list[str], n: int, now: float, salt: int) -> list[dict[str, Any]]:
    # Missing and None: no kind, read as the spec's default kind.
    kinds: list[Any] = [*spec.event_vocab, _MISSING, None, "", " 5 ", 5, 5.0, "unknown-kind"]
    ghosts = ["ghost-1", "ghost-2"]  # not in the cache: id only, attributes OOV
    idf = spec.item_id_field
    out: list[dict[str, Any]] = []
    span = 400 * 86400.0
    for j in range(n):
        pick = (j * 7 + salt) % (len(ids) + len(ghosts))
        token = ids[pick] if pick < len(ids) else ghosts[pick - len(ids)]
        ts: Any = now - span + span * (j // 2 * 2) / max(n, 1)  # pairs share a timestamp
        if j % 13 == 5:
            ts = int(ts)
        elif j % 17 == 3:
            ts = f" {ts!r} "
        e: dict[str, Any] = {idf: _raw_id(token, j + salt), "ts": ts}
        kind = kinds[(j + salt) % len(kinds)]
        if kind is not _MISSING:
            e["event"] = kind
        out.append(e)
    if n:  # events at or after ``now`` are not history
        out.append({idf: ids[0], "event": "late", "ts": now})
        out.append({idf: ids[1 % len(ids)], "ts": now + 5.0})
        out.reverse()  # any order: the encoder sorts by time, stably
    return out


def _candidates(spec: FeatureSpec, ids: list[str], many: bool) -> list[Any]:
    cands: list[Any] = [_raw_id(t, j) for j, t in enumerate(ids)]
    cands += [ids[0], _raw_id(ids[2], 3), "brand-new", "ünï ☃", "ghost-1", f"  {ids[-1]}"]
    if many:
        cands += [f"extra-{i}" for i in range(11)]
    return cands


def _requests(spec: FeatureSpec) -> list[dict[str, Any]]:
    L = spec.history.length
    ids = _catalogue_ids(spec)
    users = _users(spec)
    lengths = sorted({0, 1, max(spec.history.short_len - 1, 0), L, L + 1, 3 * L + 7, 10 * L + 3})
    nows: list[float | int] = [1_700_000_000.0, 1_700_000_000.5, 1_650_000_000]
    reqs = []
    for r, n in enumerate(lengths):
        for s, seed in enumerate(_SEEDS if n > L else (None,)):
            now = nows[(r + s) % len(nows)]
            reqs.append({
                "name": f"history-{n}" + ("" if seed is None else f"-seed-{seed}"),
                "user_id": f"user-{r}",
                "user_features": users[(r + s) % len(users)],
                "candidates": _candidates(spec, ids, many=(r % 2 == 1)),
                "events": _events(spec, ids, n, float(now), salt=r + s),
                "now": now,
                "seed": seed,
            })
    return reqs


# --------------------------------------------------------------------------------------
# Running the Ranker with a recorder in place of the model.


class _Recorder(Backend):
    """Records the exact arrays the Ranker hands the model; scores with FAKE_SCORE."""

    name = "golden-recorder"

    def __init__(self, manifest: Mapping[str, Any], id_input: str):
        super().__init__(Path("no-model"), manifest, threads=1, model_bytes=b"")  # runs no model
        self.id_input = id_input
        self.calls: list[dict[str, Any]] = []

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append({n: {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
                           for n, a in inputs.items()})
        ids = inputs[self.id_input].astype(np.int64)
        score = ((ids * 37) % 11).astype(np.float32)
        return {"score": score, "click": np.zeros_like(score)}


class _RawLog:
    """A behaviour log that hands the encoder the request's raw events, as given: odd
    timestamps and events at or after ``now`` included, which a store would have
    cleaned or filtered, so the port's encoder is checked on them too."""

    def __init__(self, events: list[dict[str, Any]]):
        self._events = events

    def events(self, user_id: Any, before: float | None = None) -> list[dict[str, Any]]:
        return [dict(e) for e in self._events]


def _ranker(bundle: Bundle, seed: int | None) -> tuple[Ranker, _Recorder]:
    if seed is not None:
        h = bundle.spec.history
        spec = bundle.spec.with_history(HistorySpec(h.short_len, h.long_len, seed))
        bundle = Bundle(path=bundle.path, manifest=bundle.manifest, spec=spec)
    else:  # a fresh spec: no lookup memo shared with another case
        bundle = Bundle(path=bundle.path, manifest=bundle.manifest, spec=FeatureSpec.from_dict(bundle.spec.to_dict()))
    rec = _Recorder(bundle.manifest, bundle.signature.input_for(Role.CANDIDATE, bundle.spec.item_id_field).name)
    return Ranker(bundle, rec), rec


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=True))


def _case(name: str, bundle: Bundle, inline_manifest: bool) -> dict[str, Any]:
    spec = bundle.spec
    catalogue = _catalogue(spec)
    cache = MemoryItems(_json_safe(catalogue))  # ItemCache's answers, JSON values
    requests = []
    for req in _requests(spec):
        req = _json_safe(req)  # exactly what a port reads back
        ranker, rec = _ranker(bundle, req["seed"])
        ranked = ranker.rerank(req["user_id"], req["candidates"], cache=cache, log=_RawLog(req["events"]),
                               user_features=req["user_features"], now=req["now"])
        if ranked.meta["fallback"]:
            raise RuntimeError(f"golden case {name}/{req['name']}: the Ranker fell back ({ranked.meta['error']})")
        unique = list(dict.fromkeys(normalize_token(c) for c in req["candidates"]))
        req["expected"] = {
            "unique_candidates": unique,
            "n_history": ranked.meta["n_history"],
            "chunks": rec.calls,
            "ranked": [normalize_token(item) for item, _ in ranked],
            "scores": [score for _, score in ranked],
        }
        requests.append(req)
    return {
        "name": name,
        "manifest": bundle.manifest if inline_manifest else None,
        "catalogue": _json_safe(catalogue),
        "requests": requests,
    }
