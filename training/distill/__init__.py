"""Distillation: the teacher's signals for training events, and composable losses."""

from .intermediate import LAYERS, AngularContrastiveDistiller, EmbeddingPerturbation, KnowledgeDetectorDistiller
from .losses import (
    DISTILLERS,
    ClickDistiller,
    Distiller,
    DistillLoss,
    FeatureDistiller,
    LogitDistiller,
    register_distiller,
)
from .signals import TeacherSignals

__all__ = ["DISTILLERS", "LAYERS", "AngularContrastiveDistiller", "ClickDistiller", "DistillLoss", "Distiller",
           "EmbeddingPerturbation", "FeatureDistiller", "KnowledgeDetectorDistiller", "LogitDistiller", "TeacherSignals",
           "register_distiller"]
