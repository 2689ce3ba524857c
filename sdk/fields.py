"""Feature fields and their id encoding: categorical, numeric (bucketized), multi-valued.

Id conventions, the same for every field: ``0`` is padding, ``1`` is out-of-vocabulary or
missing, ``2..cardinality-1`` are real values. Categorical tokens are normalized by
:func:`normalize_token` and looked up in a vocabulary or hashed with :func:`stable_hash`
(32-bit FNV-1a, which a Java or Kotlin port reproduces bit for bit); numeric values get
``2 + bisect_right(boundaries, value)``. :mod:`kdaliens.sdk.features` has the whole story.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .errors import InputError, describe

PAD_ID = 0
OOV_ID = 1
N_RESERVED = 2
SPEC_FORMAT_VERSION = 1
MAX_MULTI_LEN = 1 << 16  # ids per row of a multi field (a bundle's manifest allows 1,024)


def _reason(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {str(e)[:200]}"
    except Exception:  # str() of a KeyError reprs its key, which may itself fail
        return type(e).__name__


@contextmanager
def spec_errors(what: str) -> Iterator[None]:
    """Turn the errors that values of the wrong type raise while a spec is built into InputError."""
    try:
        yield
    except InputError:
        raise
    except (TypeError, ValueError, OverflowError, AttributeError, IndexError, KeyError, RecursionError) as e:
        raise InputError(f"{what}: {_reason(e)}") from None

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def utf8(text: str, what: str = "text") -> bytes:
    """``text`` encoded as UTF-8; InputError for a lone surrogate, which UTF-8 (and SQLite) cannot hold."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} {describe(text)} is not valid Unicode: a lone surrogate at index {e.start}") from None


def stable_hash(token: str) -> int:
    """32-bit FNV-1a hash of the token's UTF-8 bytes, as an unsigned int.

    Portable: in Java, ``h = 0x811C9DC5; for (byte b : s.getBytes(UTF_8)) { h ^= (b & 0xff);
    h *= 0x01000193; }`` then ``Integer.toUnsignedLong(h)``.

    Raises:
        InputError: ``token`` is not a str, or holds a lone surrogate (not valid Unicode).
    """
    if not isinstance(token, str):
        raise InputError(f"stable_hash takes a str, got {type(token).__name__}: {describe(token)}")
    h = _FNV_OFFSET
    for b in utf8(token, "token"):
        h ^= b
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def normalize_token(value: Any) -> str | None:
    """Turn a raw categorical value into its canonical string, or None when missing.

    ints and integral floats print without a decimal point, so ``7``, ``7.0`` and ``"7"``
    agree; strings are stripped; None, NaN and empty strings are missing.

    Raises:
        InputError: a value of another type (a list, a dict, an object), a string with a
            lone surrogate (not valid Unicode: UTF-8 cannot encode it), or an int with more
            digits than Python prints (``sys.get_int_max_str_digits()``, 4,300 by default).
    """
    if type(value) is str:  # the common case first: this runs for every id on the rerank path
        s = value.strip()
        if not s.isascii():  # isascii is O(1); only other text can hold a surrogate
            utf8(s)
        return s or None
    if value is None:
        return None
    if isinstance(value, str):
        s = str(value).strip()
        utf8(s)
        return s or None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        try:
            return str(int(value))
        except ValueError:  # over the int->str digit limit
            raise InputError(f"cannot use {describe(value)} as a token: it has more than "
                             f"{sys.get_int_max_str_digits()} digits") from None
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            return None
        if f.is_integer() and abs(f) < 2**53:
            return str(int(f))
        return repr(f)
    if isinstance(value, bytes):
        return normalize_token(value.decode("utf-8", errors="replace"))
    raise InputError(f"cannot use a value of type {type(value).__name__} as a category: {describe(value)}")


def to_float(value: Any) -> float:
    """Parse a numeric value; NaN when missing or unparseable (encoded as OOV).

    An int past float range gives an infinity of its sign, as the string ``"1e400"`` does.
    """
    t = type(value)
    if t is float:
        return value
    if t is not int:
        if value is None or isinstance(value, (bool, np.bool_)):
            return math.nan
        if not isinstance(value, (int, float, np.integer, np.floating)):
            return _parse_float(value)
    try:
        return float(value)
    except OverflowError:  # an int past float range: an infinity of its sign (Java's BigInteger.doubleValue)
        return math.inf if value > 0 else -math.inf


def _parse_float(value: Any) -> float:
    """to_float of what is not a number: strings and bytes parsed, anything else NaN."""
    if isinstance(value, (str, bytes)):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def as_seconds(value: Any, what: str, allow_inf: bool = False) -> float:
    """A time in seconds as a float: ``value`` must be a real number (not a bool) within
    float range, and finite unless ``allow_inf`` (NaN never). InputError otherwise."""
    if type(value) is float and -math.inf < value < math.inf:  # the common case first
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{what} must be a number of seconds since the epoch, got {type(value).__name__}: "
                         f"{describe(value)}")
    try:
        f = float(value)
    except (OverflowError, ValueError):  # an int (or Fraction) past float range
        f = math.nan
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise InputError(f"{what} must be finite, got {describe(value)}")
    return f


class _Lookup:
    """Token -> id for a vocabulary or a hash, shared by categorical and multi fields."""

    def __init__(self, name: str, vocab: tuple[str, ...] | None, hash_buckets: int | None):
        if (vocab is None) == (hash_buckets is None):
            raise InputError(f"field {name!r}: give exactly one of vocab or hash_buckets")
        if hash_buckets is not None and hash_buckets < 1:
            raise InputError(f"field {name!r}: hash_buckets must be >= 1, got {hash_buckets}")
        self.vocab = vocab
        self.hash_buckets = hash_buckets
        self.index: dict[str, int] | None = None
        if vocab is not None:
            self.index = {tok: i + N_RESERVED for i, tok in enumerate(vocab)}
            if len(self.index) != len(vocab):
                raise InputError(f"field {name!r}: vocabulary has duplicate tokens")
        self._memo: dict[Any, int] = {}

    @property
    def cardinality(self) -> int:
        n = len(self.vocab) if self.vocab is not None else self.hash_buckets
        return int(n) + N_RESERVED

    def token_id(self, token: str | None) -> int:
        if token is None:
            return OOV_ID
        if self.index is not None:
            return self.index.get(token, OOV_ID)
        return N_RESERVED + stable_hash(token) % int(self.hash_buckets)

    def encode(self, value: Any) -> int:
        # Memoize on hashable raw values: apps send the same ids over and over. Booleans
        # get their own keys: True == 1 as a dict key, but they normalize differently.
        key = (bool, value) if isinstance(value, (bool, np.bool_)) else value
        try:
            return self._memo[key]
        except (KeyError, TypeError):
            pass
        i = self.token_id(normalize_token(value))
        try:
            if len(self._memo) < 1_000_000:
                self._memo[key] = i
        except TypeError:
            pass
        return i


@dataclass(frozen=True)
class CategoricalField:
    """One categorical value per row: an id, a gender, an occupation.

    Args:
        name: the attribute's column name in the data (and key in raw dicts).
        vocab: known tokens; token ``vocab[i]`` encodes to ``i + 2``.
        hash_buckets: instead of a vocabulary, hash tokens into this many buckets.
    """

    name: str
    vocab: tuple[str, ...] | None = None
    hash_buckets: int | None = None
    kind: str = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        with spec_errors(f"field {describe(self.name)}"):
            if self.vocab is not None:
                object.__setattr__(self, "vocab", tuple(self.vocab))
            object.__setattr__(self, "_lookup", _Lookup(self.name, self.vocab, self.hash_buckets))

    @property
    def cardinality(self) -> int:
        return self._lookup.cardinality  # type: ignore[attr-defined]

    @property
    def width(self) -> int:
        return 1

    def encode_one(self, value: Any) -> int:
        return self._lookup.encode(value)  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.vocab is not None:
            d["vocab"] = list(self.vocab)
        else:
            d["hash_buckets"] = self.hash_buckets
        return d


@dataclass(frozen=True)
class NumericField:
    """A number, bucketized by sorted ``boundaries``: id ``2 + bisect_right``."""

    name: str
    boundaries: tuple[float, ...] = ()
    kind: str = field(default="numeric", init=False)

    def __post_init__(self) -> None:
        with spec_errors(f"field {describe(self.name)}: boundaries"):
            b = tuple(float(x) for x in self.boundaries)
        if any(not math.isfinite(x) for x in b) or any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            raise InputError(f"field {describe(self.name)}: boundaries must be finite and strictly increasing")
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "_np_bounds", np.asarray(b, dtype=np.float64))

    @property
    def cardinality(self) -> int:
        return len(self.boundaries) + 1 + N_RESERVED

    @property
    def width(self) -> int:
        return 1

    def encode_array(self, values: np.ndarray) -> np.ndarray:
        """Bucketize a float array (NaN -> OOV). Returns int64 of the same shape."""
        v = np.asarray(values, dtype=np.float64)
        # asarray: a 0-d input gives a 0-d array (arithmetic on one gives a scalar, which takes no assignment)
        out = np.asarray(np.searchsorted(self._np_bounds, v, side="right") + N_RESERVED,  # type: ignore[attr-defined]
                         dtype=np.int64)
        out[~np.isfinite(v)] = OOV_ID
        return out

    def encode_one(self, value: Any) -> int:
        f = to_float(value)
        if not math.isfinite(f):
            return OOV_ID
        return int(np.searchsorted(self._np_bounds, f, side="right")) + N_RESERVED  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "boundaries": list(self.boundaries)}


@dataclass(frozen=True)
class MultiField:
    """Several tokens per row (genres, tags): ``max_len`` ids, padded with 0.

    A string value is split on ``separator``; a list or tuple is used as is. Tokens past
    ``max_len`` are dropped, in order.
    """

    name: str
    max_len: int
    vocab: tuple[str, ...] | None = None
    hash_buckets: int | None = None
    separator: str = " "
    kind: str = field(default="multi", init=False)

    def __post_init__(self) -> None:
        with spec_errors(f"field {describe(self.name)}"):
            if not 1 <= self.max_len <= MAX_MULTI_LEN:
                raise InputError(f"field {describe(self.name)}: max_len must be in [1, {MAX_MULTI_LEN}], "
                                 f"got {describe(self.max_len)}")
            object.__setattr__(self, "max_len", int(self.max_len))
            if not isinstance(self.separator, str) or not self.separator:
                raise InputError(f"field {describe(self.name)}: separator must be a non-empty string, "
                                 f"got {describe(self.separator)}")
            if self.vocab is not None:
                object.__setattr__(self, "vocab", tuple(self.vocab))
            object.__setattr__(self, "_lookup", _Lookup(self.name, self.vocab, self.hash_buckets))

    @property
    def cardinality(self) -> int:
        return self._lookup.cardinality  # type: ignore[attr-defined]

    @property
    def width(self) -> int:
        return self.max_len

    def split(self, value: Any) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, str):
            return [t for t in value.split(self.separator) if t.strip()]
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, np.ndarray):
            return list(value) if value.ndim else [value.item()]
        if isinstance(value, float) and math.isnan(value):
            return []
        return [value]

    def encode_one(self, value: Any) -> np.ndarray:
        out = np.zeros(self.max_len, dtype=np.int64)
        lookup: _Lookup = self._lookup  # type: ignore[attr-defined]
        for j, tok in enumerate(self.split(value)[: self.max_len]):
            out[j] = lookup.encode(tok)
        return out

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "max_len": self.max_len,
                             "separator": self.separator}
        if self.vocab is not None:
            d["vocab"] = list(self.vocab)
        else:
            d["hash_buckets"] = self.hash_buckets
        return d


Field = Union[CategoricalField, NumericField, MultiField]


def field_from_dict(d: Mapping[str, Any]) -> Field:
    """Rebuild a field from :meth:`to_dict` output; raises InputError on a bad dict."""
    if not isinstance(d, Mapping):
        raise InputError(f"a field spec must be a JSON object, got {type(d).__name__}")
    try:
        kind = d["kind"]
        if kind == "categorical":
            return CategoricalField(d["name"], vocab=d.get("vocab"), hash_buckets=d.get("hash_buckets"))
        if kind == "numeric":
            return NumericField(d["name"], boundaries=tuple(d["boundaries"]))
        if kind == "multi":
            return MultiField(d["name"], max_len=int(d["max_len"]), vocab=d.get("vocab"),
                              hash_buckets=d.get("hash_buckets"), separator=d.get("separator", " "))
    except (KeyError, TypeError, ValueError, OverflowError) as e:  # InputError (a ValueError) included
        raise InputError(f"bad field spec {describe(d)}: {_reason(e) if not isinstance(e, InputError) else e}") from None
    raise InputError(f"unknown field kind {describe(kind)} in {describe(d)}")
