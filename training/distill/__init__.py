"""Distillation losses (composable, weighted from a DistillConfig)."""

from .losses import (
           DISTILLERS,
           ClickDistiller,
           Distiller,
           DistillLoss,
           FeatureDistiller,
           LogitDistiller,
           register_distiller,
)

__all__ = ["DISTILLERS", "ClickDistiller", "DistillLoss", "Distiller", "FeatureDistiller", "LogitDistiller",
           "register_distiller"]
