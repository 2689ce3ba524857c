"""kdaliens.sdk: the on-device runtime. Imports numpy and the standard library only.

A backend's runtime (executorch, onnxruntime, ai_edge_litert, tflite_runtime) is
imported inside that backend, when it is chosen.
"""

from .bundle import Bundle
from .bundle_store import BundleStore
from .errors import BackendUnavailable, BundleError, InputError, KdaliensError
from .features import (
    CategoricalField,
    FeatureEncoder,
    FeatureSpec,
    MultiField,
    NumericField,
    normalize_token,
    stable_hash,
)
from .history import HistorySampler, HistorySpec
from .ranker import RankedList, Ranker
from .stores import BehaviorLog, ItemCache, StoreError

__all__ = [
    "BackendUnavailable",
    "BehaviorLog",
    "Bundle",
    "BundleError",
    "BundleStore",
    "CategoricalField",
    "FeatureEncoder",
    "FeatureSpec",
    "HistorySampler",
    "HistorySpec",
    "InputError",
    "ItemCache",
    "KdaliensError",
    "MultiField",
    "NumericField",
    "RankedList",
    "Ranker",
    "StoreError",
    "normalize_token",
    "stable_hash",
]
