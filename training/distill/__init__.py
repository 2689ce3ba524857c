"""Distillation: the teacher's signals for training events, and composable losses."""

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

__all__ = ["DISTILLERS", "ClickDistiller", "DistillLoss", "Distiller", "FeatureDistiller", "LogitDistiller",
           "TeacherSignals", "register_distiller"]
