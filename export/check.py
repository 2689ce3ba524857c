"""The self-check every target gets: the exported model, in its SDK backend, against torch.

Before the parity gate scores real held-out data (:mod:`kdaliens.export.parity`), the
exported file is run on valid random requests of several candidate counts and compared
with the fp32 eager student. An fp32 export must reproduce torch up to float rounding
(more means a lowering bug, and the export stops); an int8 export records how far its
scores and rankings moved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from kdaliens.sdk.errors import InputError

from .exportable import Exportable

# fp32 lowering must reproduce torch up to float rounding; more means a lowering bug.
FP32_TOLERANCE = 1e-3


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score vectors (ties broken by position; 1.0 below two items)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2:
        return 1.0
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 1.0


def feeds(exp: Exportable, request: dict[str, Any], id_dtype: str = "int64") -> dict[str, np.ndarray]:
    """One request as contiguous arrays in the signature's dtypes (ids ``id_dtype``, mask float32)."""
    missing = [n for n in exp.input_names if n not in request]
    if missing:
        raise InputError(f"request lacks inputs {missing}")
    return {i.name: np.ascontiguousarray(np.asarray(request[i.name]), dtype=i.dtype(id_dtype))
            for i in exp.signature.inputs}


def random_requests(exp: Exportable, n: int = 16, n_cand: int | Sequence[int] = (2, 200), seed: int = 0
                    ) -> list[dict[str, np.ndarray]]:
    """Valid random requests (ids within each field's cardinality, a half-full history).

    Args:
        exp: the model to feed.
        n: how many requests.
        n_cand: a fixed candidate count, or a ``(low, high)`` range to draw counts from.
        seed: makes the requests reproducible.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(n_cand) if isinstance(n_cand, int) else int(rng.integers(n_cand[0], n_cand[1] + 1))
        tensors = exp.example_inputs(k, seed=seed * 100_003 + i)
        out.append(feeds(exp, {name: t.numpy() for name, t in zip(exp.input_names, tensors)}))
    return out


def torch_scores(exp: Exportable, request: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The fp32 eager student's ``(score, click)``, each (1, N), for one request."""
    with torch.no_grad():
        score, click = exp.module(*(torch.from_numpy(np.ascontiguousarray(request[n])) for n in exp.input_names))
    return score.numpy(), click.numpy()


def score_agreement(exp: Exportable, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                    requests: Iterable[dict[str, np.ndarray]], k: int = 10) -> dict[str, float]:
    """Exported vs fp32 torch scores on the same requests.

    Returns:
        ``max_abs_score_diff`` and ``max_abs_click_diff`` (over all candidates),
        ``min_spearman`` and ``mean_spearman`` (rank correlation per request),
        ``top<k>_agreement`` (mean overlap of the top ``k``), ``ref_score_std`` (mean spread
        of the reference scores, to read the diff against) and ``requests``.
    """
    max_diff = click_diff = 0.0
    rhos, overlaps, stds = [], [], []
    for req in requests:
        ref, ref_click = (x.ravel() for x in torch_scores(exp, req))
        out = run(req)
        got, got_click = np.asarray(out["score"]).ravel(), np.asarray(out["click"]).ravel()
        if got.shape != ref.shape:
            raise RuntimeError(f"the exported model returned {got.size} scores for {ref.size} candidates")
        stds.append(float(ref.std()))
        max_diff = max(max_diff, float(np.abs(got - ref).max()))
        click_diff = max(click_diff, float(np.abs(got_click - ref_click).max()))
        rhos.append(spearman(got, ref))
        kk = min(k, ref.size)
        overlaps.append(len(set(np.argsort(-ref)[:kk]) & set(np.argsort(-got)[:kk])) / kk)
    return {"max_abs_score_diff": max_diff, "max_abs_click_diff": click_diff, "min_spearman": float(min(rhos)),
            "mean_spearman": float(np.mean(rhos)), f"top{k}_agreement": float(np.mean(overlaps)),
            "ref_score_std": float(np.mean(stds)), "requests": len(rhos)}


def self_check(exp: Exportable, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], quantized: bool,
               candidates: Sequence[int] = (), max_candidates: int = 100) -> dict[str, Any]:
    """Run the exported model on 16 random requests of 100 candidates (at most
    ``max_candidates``), plus one request of each count in ``candidates``, against the fp32
    eager student.

    Raises:
        RuntimeError: an fp32 export whose scores differ from torch by more than
            :data:`FP32_TOLERANCE` (a lowering bug).
    """
    requests = random_requests(exp, n=16, n_cand=min(100, int(max_candidates)), seed=1)
    requests += [random_requests(exp, n=1, n_cand=int(c), seed=101 + i)[0] for i, c in enumerate(candidates)]
    result = score_agreement(exp, run, requests)
    result["reference"] = "torch fp32 eager student, valid random requests"
    if not quantized and result["max_abs_score_diff"] > FP32_TOLERANCE:
        raise RuntimeError(f"fp32 export: scores differ from torch by {result['max_abs_score_diff']:.2e} "
                           f"(> {FP32_TOLERANCE}); the lowering is wrong")
    return result
