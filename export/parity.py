"""The parity gate: the exported model, in its real runtime, against the reference model.

Both score every request of the held-out CTR test split (one user, one candidate, the
history as of that moment, encoded by the SDK's encoder). The gate records
``max_abs_diff`` of the scores and the click AUC of each side, and refuses the bundle
when the exported AUC falls more than ``tolerance`` below the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdaliens.sdk.errors import KdaliensError
from kdaliens.sdk.features import FeatureEncoder
from kdaliens.training import metrics as M
from kdaliens.training.batches import student_requests
from kdaliens.training.data import load_prepared

from .exportable import Exportable


class ParityError(KdaliensError):
    """The exported model does not keep the reference's quality."""


@dataclass
class Requests:
    """Per-request inputs (each a dict of (1, ...) arrays), with labels and users."""

    inputs: list[dict[str, np.ndarray]]
    labels: np.ndarray
    users: np.ndarray
    split: str


def load_requests(run_dir: Path, exp: Exportable, split: str = "test", limit: int | None = None) -> Requests:
    """The CTR split of the run's dataset as device requests (SDK-encoded)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    data = info.get("data", "movielens-100k")
    prep = load_prepared(data, exp.config.data, exp.config.split)
    enc = FeatureEncoder(exp.spec)
    d = prep.ctr[split]
    rows = np.arange(len(d["label"]))
    if limit is not None and limit < len(rows):
        rows = np.random.default_rng(0).choice(rows, size=limit, replace=False)
        rows.sort()
    batch = student_requests(prep, enc, d["user"][rows], d["start"][rows], d["n_past"][rows], d["ts"][rows],
                             d["item"][rows][:, None])
    batch["hist_mask"] = batch["hist_mask"].astype(np.float32)
    inputs = [{n: batch[n][b:b + 1] for n in exp.input_names} for b in range(len(rows))]
    return Requests(inputs=inputs, labels=d["label"][rows], users=d["user"][rows], split=split)


def score_all(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], requests: Requests
              ) -> tuple[np.ndarray, np.ndarray]:
    """(score, click) of every request, one call each."""
    score = np.empty(len(requests.inputs), dtype=np.float64)
    click = np.empty(len(requests.inputs), dtype=np.float64)
    for i, r in enumerate(requests.inputs):
        out = run(r)
        score[i] = float(np.asarray(out["score"]).reshape(-1)[0])
        click[i] = float(np.asarray(out["click"]).reshape(-1)[0])
    return score, click


def torch_runner(module: torch.nn.Module, names: list[str]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            s, c = module(*[torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names])
        return {"score": s.numpy(), "click": c.numpy()}
    return run


def check_parity(reference: Callable, exported: Callable, requests: Requests, tolerance: float = 0.002,
                 implicit: bool = False, reference_name: str = "pytorch") -> dict[str, Any]:
    """Score the split with both; raise ParityError when the exported AUC drops too far.

    The AUC is the click head's on labelled data and the interaction score's on
    implicit data (where the CTR split's negatives are sampled unobserved items).
    """
    ref_s, ref_c = score_all(reference, requests)
    exp_s, exp_c = score_all(exported, requests)
    key_ref, key_exp = (ref_s, exp_s) if implicit else (ref_c, exp_c)
    auc_ref = M.auc(requests.labels, key_ref)
    auc_exp = M.auc(requests.labels, key_exp)
    result = {
        "split": f"ctr/{requests.split}", "requests": len(requests.inputs), "reference": reference_name,
        "max_abs_diff": float(np.max(np.abs(ref_s - exp_s))),
        "max_abs_diff_click": float(np.max(np.abs(ref_c - exp_c))),
        "auc_reference": float(auc_ref), "auc_exported": float(auc_exp), "tolerance": float(tolerance),
        "passed": bool(auc_exp >= auc_ref - tolerance),
    }
    if not result["passed"]:
        raise ParityError(f"parity gate: exported AUC {auc_exp:.4f} is {auc_ref - auc_exp:.4f} below the reference "
                          f"{auc_ref:.4f} (tolerance {tolerance}); max |score diff| {result['max_abs_diff']:.4g}. "
                          f"No bundle was written. --tolerance {auc_ref - auc_exp + 0.0005:.4f} would let it "
                          "through, shipping a model that ranks that much worse than the one you trained; "
                          "--quantize none keeps the fp32 student instead.")
    return result
