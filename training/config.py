"""Typed configs for training, kept apart from the modules. Each round-trips to JSON.

A run's full config (:class:`RunConfig`) goes into every checkpoint and into
``RUN_DIR/config.json``; ``kdaliens-train --config FILE`` reads a JSON file with any
subset of its keys, for example ``{"teacher": {"dim": 32}, "train": {"epochs": 5}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

from kdaliens.sdk.errors import InputError

T = TypeVar("T")


def _from_dict(cls: type[T], d: Mapping[str, Any], where: str) -> T:
    if not isinstance(d, Mapping):
        raise InputError(f"config {where}: expected an object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - set(known)
    if unknown:
        raise InputError(f"config {where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    kw = {}
    for k, v in d.items():
        default = getattr(cls(), k) if k in known else None  # type: ignore[call-arg]
        if is_dataclass(default) and isinstance(v, Mapping):
            kw[k] = _from_dict(type(default), v, f"{where}.{k}")
        elif isinstance(default, tuple) and isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    return cls(**kw)  # type: ignore[call-arg]


@dataclass
class TeacherConfig:
    """KD-ALIENS teacher.

    Args:
        dim: embedding and model width.
        history_len: events of history the sequence encoder sees (a window).
        seq_encoder: registered sequence encoder ("transformer").
        seq_layers / seq_heads: transformer depth and heads over the history.
        interaction: registered interaction block ("alien").
        alien_layers / alien_heads: self-attention across field embeddings.
        mlp: hidden sizes of the click head.
        dropout: dropout in the encoder and heads.
    """

    dim: int = 64
    history_len: int = 200
    seq_encoder: str = "transformer"
    seq_layers: int = 2
    seq_heads: int = 2
    interaction: str = "alien"
    alien_layers: int = 2
    alien_heads: int = 2
    mlp: tuple[int, ...] = (128, 64)
    dropout: float = 0.2


@dataclass
class StudentConfig:
    """KD-ALIENS student, built for the device.

    Args:
        dim: embedding width (small: the tables dominate the file size).
        short_len: the last k events always in the history.
        long_len: m events sampled from the older history.
        mlp: hidden sizes of the head.
    """

    dim: int = 16
    short_len: int = 20
    long_len: int = 10
    mlp: tuple[int, ...] = (64, 32)
    dropout: float = 0.1


@dataclass
class DistillConfig:
    """Weights of the composable distillation losses (0 turns one off).

    Args:
        temperature: softening of teacher and student logits for logit KD.
        logit_weight: KL between teacher and student interaction scores over the
            candidate set (the positive and the sampled negatives).
        click_weight: BCE of the student's click logit on the teacher's soft click label.
        feature_weight: MSE between the adapted student user-interest vector and the
            teacher's (after target attention), both L2-normalized.
        hard_weight: weight of the ground-truth losses next to the distillation ones.
    """

    temperature: float = 2.0
    logit_weight: float = 0.5
    click_weight: float = 0.5
    feature_weight: float = 0.1
    hard_weight: float = 1.0


@dataclass
class QuantConfig:
    """How the int8 student stores its embedding tables (QAT trains on this grid and
    every exporter reads it, so what ships is what was measured).

    Linear layers are always int8 (per-channel weights, int8 activations). Tables are
    weight-only, symmetric, one scale per row.

    Args:
        table_bits: bits per weight of ordinary tables (8).
        large_table_rows: tables with at least this many rows count as large (in the
            default student only the item-id table, 1,619 x 16 on ML-100K).
        large_table_bits: bits per weight of large tables: 4 or 8. 4 halves the biggest
            part of the file; on ML-100K it cost 0.0002 validation AUC before QAT.
        large_table_scale_dtype: "float16" or "float32" for the per-row scales of large
            tables (with 16-wide rows an fp32 scale is half the size of a 4-bit row).
    """

    table_bits: int = 8
    large_table_rows: int = 256
    large_table_bits: int = 4
    large_table_scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.table_bits not in (4, 8) or self.large_table_bits not in (4, 8):
            raise InputError(f"quant: table bits must be 4 or 8, got {self.table_bits}/{self.large_table_bits}")
        if self.large_table_scale_dtype not in ("float16", "float32"):
            raise InputError(f"quant.large_table_scale_dtype must be 'float16' or 'float32', "
                             f"got {self.large_table_scale_dtype!r}")

    @classmethod
    def legacy(cls) -> QuantConfig:
        """What runs written before this config existed used: every table int8, fp32 scales."""
        return cls(table_bits=8, large_table_bits=8, large_table_scale_dtype="float32")

    def table(self, rows: int) -> tuple[int, str]:
        """(bits, scale dtype) of a table with ``rows`` rows."""
        if rows >= self.large_table_rows:
            return self.large_table_bits, self.large_table_scale_dtype
        return self.table_bits, "float32"


@dataclass
class TrainConfig:
    """Optimization. Each model trains up to ``epochs`` with early stopping on validation.

    Args:
        epochs: maximum epochs per model (teacher, plain student, distilled student).
        qat_epochs: fine-tuning epochs with int8 fake quantization.
        patience: epochs without validation improvement before stopping (students).
        teacher_patience: the same for the teacher. 6 was tried on ML-100K: validation
            HR@10 flattened at 0.70 and the validation score barely moved, so 3.
        lr / weight_decay: AdamW.
        batch_size: student samples per step; teacher_batch: history windows per step.
        negatives: sampled unobserved items per positive for the interaction objective.
        teacher_negatives: the same for the teacher's target-aware interaction term, per
            history position (its two-tower term uses a softmax over the whole catalogue).
        interaction_weight / click_weight: the two objectives (ESMM-style: interaction
            with sampled unobserved negatives, and click given interaction).
        seed: everything random.
        threads: torch intra-op threads (0 = torch's default).
        max_minutes: wall-time budget of the training loops (the teacher gets 62%,
            each fp32 student 12%, the int8 fine-tune the rest); evaluation comes on top.
    """

    epochs: int = 30
    qat_epochs: int = 3
    patience: int = 3
    teacher_patience: int = 3
    lr: float = 3e-3
    teacher_lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    teacher_batch: int = 16
    negatives: int = 32
    teacher_negatives: int = 8
    interaction_weight: float = 1.0
    click_weight: float = 1.0
    seed: int = 0
    threads: int = 0
    max_minutes: float = 13.0


@dataclass
class RunConfig:
    """Everything a run needs. ``data`` is a DataConfig dict, ``split`` a SplitConfig dict.

    A checkpoint whose config has no ``quant`` block predates :class:`QuantConfig`;
    :func:`kdaliens.training.checkpoint.load_model` gives it :meth:`QuantConfig.legacy`.
    """

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    data: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        return _from_dict(cls, d, "run")


def tiny_config(**train_overrides: Any) -> RunConfig:
    """A config small enough for tests and smoke runs (seconds on a laptop)."""
    cfg = RunConfig(
        teacher=TeacherConfig(dim=16, history_len=20, seq_layers=1, seq_heads=2, alien_layers=1, alien_heads=2,
                              mlp=(16,), dropout=0.0),
        student=StudentConfig(dim=8, short_len=4, long_len=2, mlp=(16,), dropout=0.0),
        train=TrainConfig(epochs=1, qat_epochs=1, patience=1, batch_size=256, teacher_batch=32, negatives=4,
                          threads=1),
    )
    for k, v in train_overrides.items():
        setattr(cfg.train, k, v)
    return cfg
