"""Latency of the eager PyTorch models on real requests, for comparison with bundles.

The bundles are timed on the device with :func:`kdaliens.sdk.profile.profile_bundle`;
the teacher never leaves the server, so it is timed here, in eager PyTorch, on the same
kind of request: one user (their real history from the ranking test split) and N
candidates. Timings are the model call only (inputs already encoded); each function
returns medians and tails over ``repeats`` calls after a warm-up, all in this process,
so that ratios between models compare like with like.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdaliens.sdk.features import FeatureEncoder
from kdaliens.training.batches import prev_gaps, student_requests, teacher_requests, to_torch
from kdaliens.training.checkpoint import load_model
from kdaliens.training.data import Prepared, load_prepared

from .exportable import Exportable

N_REQUESTS = 32  # distinct real requests, cycled through


def run_prepared(run_dir: str | Path, config) -> Prepared:
    """The run's dataset, prepared with the run's own settings (from the cache)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    return load_prepared(info.get("data", "movielens-100k"), config.data, config.split, verbose=False)


def _request_rows(prep: Prepared, n_cand: int, n_req: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r = prep.rank["test"]
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(r["user"]), size=min(n_req, len(r["user"])), replace=False)
    # Random catalogue items: N may exceed the 101 of the ranking protocol.
    cands = rng.integers(0, prep.n_items, size=(len(rows), n_cand))
    return rows, cands


def student_requests_for(prep: Prepared, exp: Exportable, n_cand: int, n_req: int = N_REQUESTS,
                         seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Device-form student inputs (one request each, as the bundles take them)."""
    r = prep.rank["test"]
    rows, cands = _request_rows(prep, n_cand, n_req, seed)
    batch = student_requests(prep, FeatureEncoder(exp.spec), r["user"][rows], r["start"][rows], r["n_past"][rows],
                             r["ts"][rows], cands)
    batch["hist_mask"] = batch["hist_mask"].astype(np.float32)
    return [{n: batch[n][b:b + 1] for n in exp.input_names} for b in range(len(rows))]


def teacher_requests_for(prep: Prepared, teacher_spec, n_cand: int, n_req: int = N_REQUESTS,
                         seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Teacher inputs: the last-L history of real users and N candidates each."""
    r = prep.rank["test"]
    rows, cands = _request_rows(prep, n_cand, n_req, seed)
    enc = FeatureEncoder(teacher_spec)
    batch = teacher_requests(prep, enc, r["user"][rows], r["start"][rows], r["n_past"][rows], r["ts"][rows], cands,
                             gaps=prev_gaps(prep, enc))
    return [to_torch({k: v[b:b + 1] for k, v in batch.items()}) for b in range(len(rows))]


def time_runs(fn: Callable[[Any], Any], request: Any, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU nanoseconds of ``runs`` calls of ``fn(request)``.

    A runtime on one intra-op thread computes on the calling thread, so the CPU time
    leaves out the time the thread waited for a core (a busy, shared machine).
    """
    wall, cpu = np.empty(runs), np.empty(runs)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(runs):
        t0, c0 = clock(), cpu_clock()
        fn(request)
        cpu[i] = cpu_clock() - c0
        wall[i] = clock() - t0
    return wall, cpu


def time_calls(fn: Callable[[Any], Any], reqs: Sequence[Any], repeats: int, warmup: int = 50) -> dict[str, float]:
    """p50/p90/p99/mean in microseconds of ``fn(req)``, cycling through ``reqs``."""
    for i in range(warmup):
        fn(reqs[i % len(reqs)])
    ts = np.empty(repeats)
    for i in range(repeats):
        r = reqs[i % len(reqs)]
        t0 = time.perf_counter_ns()
        fn(r)
        ts[i] = time.perf_counter_ns() - t0
    ts /= 1e3
    return {"p50_us": float(np.percentile(ts, 50)), "p90_us": float(np.percentile(ts, 90)),
            "p99_us": float(np.percentile(ts, 99)), "mean_us": float(ts.mean())}


def eager_student_fn(exp: Exportable) -> Callable[[dict[str, np.ndarray]], Any]:
    """The fp32 eager device student as a callable on device-form inputs."""
    names = exp.input_names

    def call(r: dict[str, np.ndarray]):
        with torch.no_grad():
            return exp.module(*[torch.from_numpy(r[n]) for n in names])

    return call


def time_teacher(run_dir: str | Path, candidates: Sequence[int], repeats: int = 200, warmup: int = 20,
                 prep: Prepared | None = None, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Eager teacher latency (both heads, as served) per candidate count, one row each."""
    model, cfg, spec, _ = load_model(Path(run_dir) / "teacher.pt")
    model.eval()
    prep = prep or run_prepared(run_dir, cfg)
    rows = []
    for n in candidates:
        reqs = teacher_requests_for(prep, spec, n)

        def call(r):
            with torch.no_grad():
                return model(r, with_click=True)

        rows.append({"candidates": int(n), **time_calls(call, reqs, repeats, warmup)})
        if progress:
            progress(1)
    return rows
