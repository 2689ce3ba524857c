"""Export targets: one module each, found by name.

Every module of this package that defines a module-level ``TARGET`` (an object with
the :class:`~kdaliens.export.targets.base.Target` interface) is registered under
``TARGET.name``. The modules import their runtime's export tooling only inside
``lower``, so finding the targets is cheap. Adding a target (Core ML, QNN) is one new
file here, plus its name in :class:`kdaliens.sdk.names.TargetName`.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import ExportConfig, LoweredModel, Registry, Target

__all__ = ["ExportConfig", "LoweredModel", "Target", "get_target", "registry"]

_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The registry, filled on first use from this package's modules."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        for mod in pkgutil.iter_modules(__path__):
            if mod.name == "base":
                continue
            target = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "TARGET", None)
            if target is not None:
                reg.register(target)
        _REGISTRY = reg
    return _REGISTRY


def get_target(name: str) -> Target:
    """The target registered as ``name`` (``tflite`` is read as ``litert``)."""
    return registry().get(name)
