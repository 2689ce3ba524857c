"""Typed errors raised by the kdaliens SDK.

Every error the SDK raises on purpose is a :class:`KdaliensError`, so a host app can
catch one type and keep running.
"""

from __future__ import annotations


class KdaliensError(Exception):
    """Base class of every error the SDK raises on purpose."""


class BundleError(KdaliensError):
    """A bundle is missing, tampered with, truncated, or of an unsupported version."""


class BackendUnavailable(KdaliensError):
    """The runtime a backend needs is not installed; the message names the extra."""


class InputError(KdaliensError, ValueError):
    """Input from the caller (ids, features, events, specs) cannot be used."""
