"""The parity canary: one request and the scores the exported model gave it at export.

``kdaliens-export`` runs the model it just lowered, in the runtime a device uses, on one
valid request of 16 candidates and writes the inputs and the scores to ``canary.json``
(an artifact like the model: hashed in the manifest, covered by its signature).
:meth:`kdaliens.sdk.BundleStore.install` runs the same request through the device's
runtime before it switches to a new bundle: a model that loads but computes something
else on this device (a runtime or kernel mismatch, a damaged model the hash did not
catch because it was exported that way) is refused while the old bundle stays in service.

Tolerance: scores may move by ``atol`` (recorded in the file: 5% of the scores' spread,
at least 1e-3), since a device's CPU kernels round differently from the export machine's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import BundleError, KdaliensError

CANARY_FILE = "canary.json"
_KIND = "kdaliens-canary"
_DTYPES = ("int64", "int32", "float32")
_MAX_VALUES = 1 << 20


def build_canary(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> bytes:
    """The ``canary.json`` bytes for one request and the model's outputs on it."""
    score = np.asarray(outputs["score"], dtype=np.float64).ravel()
    atol = max(1e-3, 0.05 * float(score.std()))
    doc = {
        "kind": _KIND,
        "inputs": {n: {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}
                   for n, a in inputs.items()},
        "score": score.tolist(),
        "atol": atol,
    }
    return (json.dumps(doc) + "\n").encode()


def parse_canary(data: bytes, where: str) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """``(inputs, expected scores, atol)`` of a ``canary.json``. Raises :class:`BundleError`."""
    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("kind") != _KIND:
            raise ValueError("not a canary file")
        inputs = {}
        for name, t in doc["inputs"].items():
            if t["dtype"] not in _DTYPES or not all(type(d) is int and 0 <= d <= _MAX_VALUES for d in t["shape"]):
                raise ValueError(f"bad tensor {name!r}")
            if len(t["data"]) > _MAX_VALUES:
                raise ValueError(f"tensor {name!r} too large")
            inputs[name] = np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])
        score = np.asarray(doc["score"], dtype=np.float64).ravel()
        atol = float(doc["atol"])
        if not (score.size and np.isfinite(score).all() and math.isfinite(atol) and atol > 0):
            raise ValueError("bad scores or tolerance")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        raise BundleError(f"{where}: malformed {CANARY_FILE} ({str(e)[:120]})") from None
    return inputs, score, atol


def run_canary(data: bytes, run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]], where: str
               ) -> dict[str, Any]:
    """Score the canary request with ``run`` (a backend's ``run``) and compare with the export's scores.

    Returns:
        ``{"max_abs_diff": float, "atol": float, "candidates": int}``.

    Raises:
        BundleError: the runtime failed on it, returned the wrong shape or a non-finite
            score, or scores further than ``atol`` from the export's.
    """
    inputs, expected, atol = parse_canary(data, where)
    try:
        got = np.asarray(run(inputs)["score"], dtype=np.float64).ravel()
    except KdaliensError as e:
        raise BundleError(f"{where}: the parity canary failed to run on this device ({e})") from None
    except Exception as e:  # the runtime's own errors: the model cannot run here
        raise BundleError(f"{where}: the parity canary failed to run on this device "
                          f"({type(e).__name__}: {str(e)[:200]})") from None
    if got.shape != expected.shape or not np.isfinite(got).all():
        raise BundleError(f"{where}: the parity canary returned {got.size} scores (expected {expected.size}), "
                          f"finite: {bool(np.isfinite(got).all())}")
    diff = float(np.abs(got - expected).max())
    if diff > atol:
        raise BundleError(f"{where}: the parity canary's scores differ from the export's by {diff:.3g} "
                          f"(> {atol:.3g}): the model does not compute on this device what it computed at export")
    return {"max_abs_diff": diff, "atol": atol, "candidates": int(expected.size)}
