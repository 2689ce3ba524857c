"""Data: loaders for interaction logs and preprocessing into model-ready arrays."""

from .loaders import DataConfig, DataFormatError, Dataset, load_dataset
from .preprocess import Prepared, SplitConfig, build_feature_spec, load_prepared, prepare

__all__ = [
    "DataConfig",
    "DataFormatError",
    "Dataset",
    "Prepared",
    "SplitConfig",
    "build_feature_spec",
    "load_dataset",
    "load_prepared",
    "prepare",
]
