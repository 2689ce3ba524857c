"""Runtime backends. Each imports its runtime only when it is chosen.

A backend loads one model file of a bundle and runs it on numpy arrays named as in the
bundle manifest's input signature; it returns ``{"score": (1, N), "click": (1, N)}``.
"""

from __future__ import annotations

from .base import BACKENDS, Backend, backend_for_target, get_backend

__all__ = ["BACKENDS", "Backend", "backend_for_target", "get_backend"]
