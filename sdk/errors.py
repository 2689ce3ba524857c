"""Typed errors raised by the kdaliens SDK.

Every error the SDK raises on purpose is a :class:`KdaliensError`, so a host app can
catch one type and keep running. Bad input at the public API (arguments, and values read
back from the device stores) is an :class:`InputError`, a bad bundle a
:class:`BundleError`, a storage fault a :class:`~kdaliens.sdk.stores.StoreError`; no
other exception is meant to escape.
"""

from __future__ import annotations

import reprlib


class KdaliensError(Exception):
    """Base class of every error the SDK raises on purpose."""


class BundleError(KdaliensError):
    """A bundle is missing, tampered with, truncated, or of an unsupported version."""


class BackendUnavailable(KdaliensError):
    """The runtime a backend needs is not installed; the message names the extra."""


class InputError(KdaliensError, ValueError):
    """Input from the caller (ids, features, events, specs, times) cannot be used, or a
    value read back from a store is not what the store writes (another program wrote it)."""


class _Repr(reprlib.Repr):
    """reprlib's short reprs, with big ints described by their size: ``repr`` of an int
    over Python's int->str digit limit (4,300 digits by default) raises ValueError."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        n = x.bit_length()
        return f"an int of {n} bits" if n > 128 else int.__repr__(x)


_REPR = _Repr()


def describe(value: object) -> str:
    """A short repr of ``value`` for an error message, safe for any value.

    Long strings and containers are cut short, deep nesting is elided, ints of more than
    128 bits read ``"an int of N bits"``, and a ``repr`` that raises gives the type name.
    """
    try:
        return _REPR.repr(value)
    except Exception:
        return f"a {type(value).__name__}"


def as_list(value: object, what: str) -> list:
    """``value`` (any iterable but a string, bytes or a mapping) as a list; else an
    :class:`InputError` saying ``what`` it must be (e.g. "candidates must be a list of item ids")."""
    from collections.abc import Mapping

    if value is None or isinstance(value, (str, bytes, Mapping)):
        raise InputError(f"{what}, got {type(value).__name__}")
    try:
        return list(value)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"{what}, got {type(value).__name__} (not iterable)") from None
