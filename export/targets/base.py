"""What every export target shares: its options, its result, its interface.

A target turns an :class:`~kdaliens.export.exportable.Exportable` into model file(s) in
a staging folder and says what it wrote (:class:`LoweredModel`). It does not check the
result or time it: :func:`kdaliens.export.api.export_bundle` runs the same checks on
every target, through the SDK backend that will run the bundle on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.names import BackendName, Quantization, TargetName

from ..exportable import Exportable


@dataclass(frozen=True)
class ExportConfig:
    """The options of one export (``kdaliens-export``'s flags).

    Args:
        target: ``executorch``, ``onnx`` or ``litert`` (``tflite`` is read as ``litert``).
        quantize: ``int8`` or ``none``.
        max_candidates: the most candidates one model call takes; the SDK chunks longer
            lists (LiteRT: the largest bucket).
        tolerance: the largest AUC drop of the exported model against the reference
            before the bundle is refused (kdaliens-export takes 0 to 1; a negative value
            here demands a gain, which refuses every bundle: the tests use it).
        parity_limit: score only this many held-out requests in the parity gate (None: all).
        buckets: LiteRT only: candidate counts with a signature each (None: the default).
        onnx_method: ONNX int8 only: ``dynamic`` or ``qdq`` (None: the default).
        debug: also write debugging artifacts (ExecuTorch: ``model.etrecord``, which names
            operators in ``kdaliens-profile``'s breakdown) to ``<out>.debug/``, beside the
            bundle; they are never part of the bundle a device installs.
        model: the student to export: ``student_kd`` (distilled), ``student_plain`` or
            ``auto`` (the better of the two on validation).
    """

    target: TargetName | str
    quantize: Quantization | str = Quantization.INT8
    max_candidates: int = 512
    tolerance: float = 0.002
    parity_limit: int | None = None
    buckets: tuple[int, ...] | None = None
    onnx_method: str | None = None
    debug: bool = False
    model: str = "student_kd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", TargetName.parse(self.target, "target"))
        object.__setattr__(self, "quantize", Quantization.parse(self.quantize, "quantize"))
        if isinstance(self.max_candidates, bool) or not isinstance(self.max_candidates, int) or self.max_candidates < 2:
            raise InputError(f"max_candidates must be an int >= 2, got {self.max_candidates!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) \
                or not math.isfinite(self.tolerance):
            raise InputError(f"tolerance must be a finite number of AUC points, got {self.tolerance!r}")
        if self.model not in ("student_kd", "student_plain", "auto"):
            raise InputError(f"model must be student_kd, student_plain or auto, got {self.model!r}")
        if self.parity_limit is not None and (not isinstance(self.parity_limit, int) or self.parity_limit < 1):
            raise InputError(f"parity_limit must be None or an int >= 1, got {self.parity_limit!r}")
        if self.buckets is not None:
            object.__setattr__(self, "buckets", tuple(self.buckets))


@dataclass
class LoweredModel:
    """What a target wrote into the staging folder.

    Attributes:
        model_file: the file the SDK backend loads.
        files: every file written (the manifest's artifacts).
        signature: the manifest's ``signature`` block
            (:meth:`~kdaliens.sdk.signature.ModelSignature.to_manifest`).
        quantization: how the weights were stored (for the manifest).
        delegation: ExecuTorch only: what the XNNPACK delegate did not take.
        reference: the torch module the parity gate compares against (None: the
            fp32 eager student); ExecuTorch int8 gives its PT2E graph.
        reference_name: how the parity record names that reference.
        check_candidates: candidate counts the self-check must exercise (LiteRT: one
            request per bucket, so that every signature runs).
        debug_files: debugging artifacts written under ``out_dir / DEBUG_STAGING``
            (with ``ExportConfig.debug``); not artifacts of the bundle.
    """

    model_file: str
    files: list[str]
    signature: dict[str, Any]
    quantization: dict[str, Any]
    delegation: dict[str, Any] | None = None
    reference: nn.Module | None = None
    reference_name: str = "pytorch fp32"
    check_candidates: tuple[int, ...] = ()
    debug_files: list[str] = field(default_factory=list)


class Target(Protocol):
    """An export target. A new one is one file in this package with a module-level ``TARGET``."""

    name: ClassVar[TargetName]
    backend: ClassVar[BackendName]
    id_dtype: ClassVar[str]

    def lower(self, exp: Exportable, config: ExportConfig, calibration: list[dict[str, np.ndarray]],
              out_dir: Path, log: Callable[[str], None]) -> LoweredModel:
        """Write the model file(s) for ``exp`` into ``out_dir``.

        ``calibration`` holds real held-out requests (input name -> (1, ...) array) for
        targets whose int8 needs activation ranges.
        """
        ...


def as_tuples(requests: list[dict[str, np.ndarray]], names: list[str]) -> list[tuple[torch.Tensor, ...]]:
    """Requests as tensor tuples in input order (what a positional torch graph takes)."""
    return [tuple(torch.from_numpy(r[n]) for n in names) for r in requests]


@dataclass
class Registry:
    """Target name -> target, filled from this package's modules."""

    targets: dict[TargetName, Target] = field(default_factory=dict)

    def register(self, target: Target) -> Target:
        self.targets[TargetName.parse(target.name)] = target
        return target

    def get(self, name: str | TargetName) -> Target:
        key = TargetName.parse(name, "target")
        if key not in self.targets:
            raise InputError(f"no exporter for target {key.value!r} here; known: {sorted(self.targets)}")
        return self.targets[key]
