"""The bundle manifest's schema: every key's type, range and length, checked before use.

A manifest comes from a file a device downloaded, so nothing in it is trusted: a wrong
type, an absurd length (``short_len = 1e10`` would allocate 74 GiB at rerank) or a
nesting bomb must end in one :class:`~kdaliens.sdk.errors.BundleError` naming the key,
never in an exception from deep inside the SDK. :func:`read_manifest` reads the file
with caps on size and depth; :func:`schema_problems` lists what is wrong with the parsed
object (the empty list: nothing).

Bounds (generous for real bundles, small enough that a hostile one cannot exhaust a
phone): :data:`MAX_MANIFEST_BYTES`, :data:`MAX_DEPTH`, and the ``MAX_*`` limits below.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_MANIFEST_BYTES = 64 << 20  # a 1M-item vocabulary is about 10 MB of JSON
MAX_DEPTH = 32  # real manifests nest 6 deep
MAX_ARTIFACTS = 64
MAX_FIELDS = 256
MAX_VOCAB = 10_000_000
MAX_TOKEN_CHARS = 4096
MAX_BOUNDARIES = 100_000
MAX_MULTI_LEN = 1024
MAX_HISTORY = 10_000  # short_len + long_len
MAX_CANDIDATES = 1_000_000
MAX_NAME_CHARS = 256
MAX_EVENT_KINDS = 100_000

ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def nesting_depth(data: bytes) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text, strings skipped (linear, no recursion)."""
    bare = np.frombuffer(_STRINGS.sub(b"", data), dtype=np.uint8)
    step = np.zeros(len(bare), dtype=np.int32)
    step[(bare == ord("[")) | (bare == ord("{"))] = 1
    step[(bare == ord("]")) | (bare == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def parse_manifest(data: bytes) -> tuple[Any, str | None]:
    """``(object, None)``, or ``(None, problem)`` for text that is too big, too deep or not JSON."""
    if len(data) > MAX_MANIFEST_BYTES:
        return None, f"{len(data):,} bytes, over the {MAX_MANIFEST_BYTES:,}-byte limit"
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        return None, f"nested {depth} deep, over the limit of {MAX_DEPTH}"
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant), None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return None, f"unreadable manifest: not valid JSON ({str(e)[:200]})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# ------------------------------------------------------------------------- checkers
class _Checker:
    """Collects problems; each check returns whether its value is usable further down."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, what: str) -> bool:
        if len(self.problems) < 50:
            self.problems.append(f"{where}: {what}")
        return False

    def obj(self, v: Any, where: str) -> bool:
        return isinstance(v, dict) or self.fail(where, f"must be an object, got {_kind(v)}")

    def str_(self, v: Any, where: str, max_chars: int = MAX_NAME_CHARS, choices: tuple[str, ...] | None = None,
             pattern: re.Pattern | None = None) -> bool:
        if not isinstance(v, str):
            return self.fail(where, f"must be a string, got {_kind(v)}")
        if len(v) > max_chars:
            return self.fail(where, f"is {len(v):,} characters, over {max_chars:,}")
        if choices is not None and v not in choices:
            return self.fail(where, f"{v!r} is not one of {list(choices)}")
        if pattern is not None and not pattern.fullmatch(v):
            return self.fail(where, f"{v!r} is not of the form {pattern.pattern}")
        return True

    def int_(self, v: Any, where: str, lo: int, hi: int) -> bool:
        if not isinstance(v, int) or isinstance(v, bool):
            return self.fail(where, f"must be an integer, got {_kind(v)}")
        return lo <= v <= hi or self.fail(where, f"{v} is outside [{lo}, {hi}]")

    def num(self, v: Any, where: str) -> bool:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(_as_float(v))
        return ok or self.fail(where, f"must be a finite number, got {_kind(v)}")

    def strs(self, v: Any, where: str, max_len: int, max_chars: int = MAX_TOKEN_CHARS) -> bool:
        """A list of strings (checked in bulk: a vocabulary may hold millions)."""
        if not self.list_(v, where, max_len):
            return False
        if all(type(x) is str for x in v) and max(map(len, v), default=0) <= max_chars:
            return True
        return self.list_(v, where, max_len, lambda x, w: self.str_(x, w, max_chars))

    def list_(self, v: Any, where: str, max_len: int, each: Callable[[Any, str], bool] | None = None,
              min_len: int = 0) -> bool:
        if not isinstance(v, list):
            return self.fail(where, f"must be a list, got {_kind(v)}")
        if not min_len <= len(v) <= max_len:
            return self.fail(where, f"has {len(v):,} entries, expected {min_len} to {max_len:,}")
        ok = True
        if each is not None:
            for i, x in enumerate(v):
                if not each(x, f"{where}[{i}]"):
                    ok = False
                    if len(self.problems) >= 50:
                        break
        return ok


def _as_float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond float range
        return math.inf


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {v}"
    if isinstance(v, (int, float)):
        return "a number" if isinstance(v, int) and abs(v) > 10**30 else f"number {v!r}"[:60]
    if isinstance(v, str):
        return f"string {v[:40]!r}"
    return {"list": "a list", "dict": "an object"}.get(type(v).__name__, type(v).__name__)


# --------------------------------------------------------------------------- schema
def schema_problems(m: Any, targets: tuple[str, ...], quantizations: tuple[str, ...], roles: tuple[str, ...],
                    format_version: int) -> list[str]:
    """Every problem with a parsed manifest's keys (types, ranges, lengths); [] when none."""
    c = _Checker()
    if not c.obj(m, "manifest"):
        return c.problems
    required = ("format_version", "target", "quantization", "model_file", "artifacts", "signature", "feature_spec",
                "parity", "source")
    missing = [k for k in required if k not in m]
    if missing:
        return [f"missing key {k!r}" for k in missing]
    if c.int_(m["format_version"], "format_version", 0, 1 << 31) and m["format_version"] != format_version:
        c.problems.append(f"format_version {m['format_version']} is not supported (this SDK reads {format_version})")
    c.str_(m["target"], "target", choices=targets)
    c.str_(m["quantization"], "quantization", choices=quantizations)
    if "bundle_version" in m:
        c.int_(m["bundle_version"], "bundle_version", 0, (1 << 63) - 1)
    if c.obj(m["artifacts"], "artifacts"):
        arts = m["artifacts"]
        if not 1 <= len(arts) <= MAX_ARTIFACTS:
            c.fail("artifacts", f"lists {len(arts)} files, expected 1 to {MAX_ARTIFACTS}")
        for name, h in list(arts.items())[:MAX_ARTIFACTS]:
            if name == "manifest.json" or not ARTIFACT_NAME.fullmatch(name):
                c.fail(f"artifacts[{name[:60]!r}]", "must be a plain file name (letters, digits, . _ -), "
                       "not starting with a dot")
            c.str_(h, f"artifacts[{name[:60]!r}]", 64, pattern=SHA256_HEX)
        if c.str_(m["model_file"], "model_file") and m["model_file"] not in arts:
            c.fail("model_file", f"{m['model_file']!r} is not among the artifacts")
        if "canary" in m and c.str_(m["canary"], "canary") and m["canary"] not in arts:
            c.fail("canary", f"{m['canary']!r} is not among the artifacts")
    else:
        c.str_(m["model_file"], "model_file")
    _signature(c, m["signature"], roles)
    _feature_spec(c, m["feature_spec"])
    if c.obj(m["parity"], "parity"):
        for k in ("max_abs_diff", "auc_reference", "auc_exported"):
            if k not in m["parity"]:
                c.fail("parity", f"lacks {k!r}")
            elif m["parity"][k] is not None:
                c.num(m["parity"][k], f"parity.{k}")
    c.obj(m["source"], "source")
    return c.problems


def _signature(c: _Checker, sig: Any, roles: tuple[str, ...]) -> None:
    if not c.obj(sig, "signature"):
        return
    for k in ("inputs", "outputs", "max_candidates"):
        if k not in sig:
            c.fail("signature", f"lacks {k!r}")
    dim = lambda v, w: (c.str_(v, w, 64) if isinstance(v, str) else c.int_(v, w, 0, MAX_CANDIDATES))  # noqa: E731

    def tensor(v: Any, w: str) -> bool:
        if not c.obj(v, w):
            return False
        ok = c.str_(v.get("name"), f"{w}.name")
        ok = c.str_(v.get("dtype"), f"{w}.dtype", choices=("int64", "int32", "float32")) and ok
        return c.list_(v.get("shape"), f"{w}.shape", 8, dim) and ok

    def inp(v: Any, w: str) -> bool:
        return tensor(v, w) and c.str_(v.get("role"), f"{w}.role", choices=roles)

    if "inputs" in sig:
        c.list_(sig["inputs"], "signature.inputs", 4 * MAX_FIELDS, inp, min_len=1)
    if "outputs" in sig and c.list_(sig["outputs"], "signature.outputs", 2, tensor, min_len=2):
        if [o.get("name") for o in sig["outputs"]] != ["score", "click"]:
            c.fail("signature.outputs", "must be score, click")
    if "max_candidates" in sig:
        c.int_(sig["max_candidates"], "signature.max_candidates", 1, MAX_CANDIDATES)
    if "method" in sig:
        c.str_(sig["method"], "signature.method")
    if "candidate_buckets" in sig:
        c.list_(sig["candidate_buckets"], "signature.candidate_buckets", 64,
                lambda v, w: c.int_(v, w, 1, MAX_CANDIDATES), min_len=1)
    for k in ("signature_keys", "tensor_names"):
        if k in sig:
            c.obj(sig[k], f"signature.{k}")


def _feature_spec(c: _Checker, fs: Any) -> None:
    if not c.obj(fs, "feature_spec"):
        return
    w = "feature_spec"
    if "format_version" in fs:
        c.int_(fs["format_version"], f"{w}.format_version", 0, 1 << 31)
    for k in ("item_id_field", "user_id_field"):
        if k in fs:
            c.str_(fs[k], f"{w}.{k}")
    for k in ("user_fields", "item_fields"):
        if k not in fs:
            c.fail(w, f"lacks {k!r}")
        else:
            c.list_(fs[k], f"{w}.{k}", MAX_FIELDS, lambda v, where: _field(c, v, where))
    if "history" in fs and c.obj(fs["history"], f"{w}.history"):
        h = fs["history"]
        ok = all([c.int_(h.get(k, d), f"{w}.history.{k}", 0, MAX_HISTORY) for k, d in (("short_len", 20),
                                                                                      ("long_len", 10))])
        if ok and not 1 <= h.get("short_len", 20) + h.get("long_len", 10) <= MAX_HISTORY:
            c.fail(f"{w}.history", f"short_len + long_len must be 1 to {MAX_HISTORY:,}")
        c.int_(h.get("seed", 0), f"{w}.history.seed", 0, (1 << 64) - 1)
    if fs.get("history_item_fields") is not None:
        c.strs(fs["history_item_fields"], f"{w}.history_item_fields", MAX_FIELDS, MAX_NAME_CHARS)
    if "event_vocab" in fs:
        c.strs(fs["event_vocab"], f"{w}.event_vocab", MAX_EVENT_KINDS)
    if fs.get("default_event") is not None:  # the kind an event logged without one reads as
        c.str_(fs["default_event"], f"{w}.default_event")
    if "time_gap_boundaries" in fs:
        c.list_(fs["time_gap_boundaries"], f"{w}.time_gap_boundaries", MAX_BOUNDARIES, c.num)


def _field(c: _Checker, f: Any, where: str) -> bool:
    if not c.obj(f, where):
        return False
    ok = c.str_(f.get("name"), f"{where}.name")
    if not c.str_(f.get("kind"), f"{where}.kind", choices=("categorical", "numeric", "multi")):
        return False
    kind = f["kind"]
    if kind == "numeric":
        return c.list_(f.get("boundaries"), f"{where}.boundaries", MAX_BOUNDARIES, c.num) and ok
    if kind == "multi":
        ok = c.int_(f.get("max_len"), f"{where}.max_len", 1, MAX_MULTI_LEN) and ok
        if "separator" in f:
            ok = c.str_(f["separator"], f"{where}.separator", 16) and ok
    vocab, buckets = f.get("vocab"), f.get("hash_buckets")
    if (vocab is None) == (buckets is None):
        return c.fail(where, "give exactly one of vocab or hash_buckets")
    if vocab is not None:
        return c.strs(vocab, f"{where}.vocab", MAX_VOCAB) and ok
    return c.int_(buckets, f"{where}.hash_buckets", 1, 1 << 31) and ok
