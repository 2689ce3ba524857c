"""The names that cross the seams: export targets, runtime backends, quantization.

Each is a ``str`` enum, so ``TargetName.LITERT == "litert"`` and a manifest or a command
line can carry the plain string. Older names stay valid as aliases: target ``tflite`` is
``litert``, backend ``onnx`` is ``onnxruntime``, backend ``tflite`` is ``litert``.

Example:
    >>> TargetName.parse("tflite")
    'litert'
    >>> BackendName.for_target("onnx") is BackendName.ONNXRUNTIME
    True
"""

from __future__ import annotations

from enum import Enum

from .errors import InputError


class _Named(str, Enum):
    """A str enum whose :meth:`parse` accepts the value or one of the aliases."""

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {}

    @classmethod
    def parse(cls, value: object, what: str | None = None):
        if isinstance(value, cls):
            return value
        key = value.strip().lower() if isinstance(value, str) else value
        key = cls._aliases().get(key, key)
        for member in cls:
            if member.value == key:
                return member
        raise InputError(f"{what or cls.__name__} must be one of {cls.choices()}, got {value!r}")

    @classmethod
    def choices(cls, aliases: bool = False) -> list[str]:
        names = [m.value for m in cls]
        return names + sorted(cls._aliases()) if aliases else names

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:  # messages show the name a user types
        return repr(self.value)


class TargetName(_Named):
    """Where an exported bundle runs (the manifest's ``target``)."""

    EXECUTORCH = "executorch"
    ONNX = "onnx"
    LITERT = "litert"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {"tflite": "litert"}


class BackendName(_Named):
    """The SDK runtime that runs a bundle (``Ranker.load(..., backend=...)``)."""

    EXECUTORCH = "executorch"
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {"onnx": "onnxruntime", "tflite": "litert"}

    @classmethod
    def for_target(cls, target: str | TargetName) -> BackendName:
        """The backend that runs a bundle of ``target``."""
        return {TargetName.EXECUTORCH: cls.EXECUTORCH, TargetName.ONNX: cls.ONNXRUNTIME,
                TargetName.LITERT: cls.LITERT}[TargetName.parse(target, "target")]


class Quantization(_Named):
    """How the bundle's weights are stored."""

    INT8 = "int8"
    NONE = "none"
