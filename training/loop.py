"""The epoch loop every model trains with, and the per-run context the loops share.

A model trains with AdamW, epoch by epoch, and stops early on the validation split
(the test split is only read for the final metrics). How far it gets never depends on
the machine's speed, unless a wall-time budget was asked for explicitly
(``train.max_minutes``). Early stopping tracks one or more validation scores, each
keeping its own best weights: the students track AUC + NDCG@10, the teacher tracks
NDCG@10 (its ranking snapshot) and AUC (its click snapshot) separately.

With ``torchrun`` each process takes every world-th batch and DistributedDataParallel
averages gradients; rank 0 evaluates and decides when to stop.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import FeatureEncoder

from .batches import catalogue_arrays, prev_gaps, student_spec, teacher_spec, to_torch
from .config import RunConfig
from .data import Prepared

Log = Callable[[str], None]


# ------------------------------------------------------------------------------ env
@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistEnv(rank=dist.get_rank(), world=dist.get_world_size())


def resolve_device(name: str, env: DistEnv | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an InputError."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device (is this the CPU build of torch?)")
    return torch.device("cuda", (env.rank if env else 0) % torch.cuda.device_count())


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _broadcast_flag(env: DistEnv, flag: bool) -> bool:
    if env.world <= 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _wrap(model: nn.Module, env: DistEnv) -> nn.Module:
    if env.world <= 1:
        return model
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


# ------------------------------------------------------------------------------ context
class Context:
    """Per-run data views shared by the loops."""

    def __init__(self, prep: Prepared, cfg: RunConfig, device: torch.device | str | None = None):
        self.prep = prep
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.t_spec = teacher_spec(prep, cfg.teacher.history_len)
        self.s_spec = student_spec(prep, cfg.student.short_len, cfg.student.long_len)
        self.t_enc = FeatureEncoder(self.t_spec)
        self.s_enc = FeatureEncoder(self.s_spec)
        self.gaps = prev_gaps(prep, self.t_enc)
        # Events a student trains on: real training interactions (not sampled negatives).
        tr = prep.ctr["train"]
        real = prep.ev_item[tr["start"] + tr["n_past"]] == tr["item"]
        if prep.implicit:
            real &= tr["label"] > 0.5
        self.train_rows = np.flatnonzero(real)
        self.train_event = (tr["start"] + tr["n_past"])[self.train_rows]
        # End (exclusive) of each user's training events in the store.
        self.train_end = prep.user_offsets[:-1].copy()
        ev = tr["start"] + tr["n_past"]
        np.maximum.at(self.train_end, tr["user"][real], ev[real] + 1)
        self.catalogue = to_torch(catalogue_arrays(prep), self.device)  # cat_<field> (I, ...)

    def on_cpu(self) -> Context:
        """The same context with its tensors on the CPU (for QAT, which runs there)."""
        c = copy.copy(self)
        c.device = torch.device("cpu")
        c.catalogue = {k: v.cpu() for k, v in self.catalogue.items()}
        return c

    def tensors(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return to_torch(arrays, self.device)

    def items_at(self, rows: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        """Item fields of catalogue ``rows`` (any shape) under ``prefix``, on the device."""
        return {prefix + k[4:]: v[rows] for k, v in self.catalogue.items()}


# ------------------------------------------------------------------------------ the loop
@dataclass
class Track:
    """A validation score early stopping follows; its best weights are kept."""

    name: str
    score: Callable[[dict[str, dict[str, float]]], float]
    best: float = -math.inf
    best_epoch: int = -1
    state: dict[str, torch.Tensor] | None = None


def ctr_plus_ndcg(m: Mapping[str, Mapping[str, float]]) -> float:
    auc = m["ctr"]["auc"]
    return (0.0 if math.isnan(auc) else auc) + m["ranking"]["ndcg@10"]


@dataclass
class FitResult:
    model: nn.Module
    epochs: int
    best_epoch: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    best_epochs: dict[str, int] = field(default_factory=dict)
    qat_state: dict[str, torch.Tensor] | None = None


@dataclass
class FitSpec:
    """What :func:`fit` trains and how (everything but the model and the steps)."""

    name: str
    epochs: int
    patience: int
    lr: float
    weight_decay: float
    n_batches: int
    evaluate: Callable[[nn.Module], dict]
    tracks: list[Track]
    deadline: float | None = None
    train_mode: Callable[[nn.Module], None] | None = None
    eval_mode: Callable[[nn.Module], None] | None = None
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    on_estimate: Callable[[float], None] | None = None  # gets the first batches' seconds-per-epoch estimate
    warmup_epochs: int = 0  # first epochs validated and logged, but neither kept nor counted by early stopping


class _EMA:
    """Polyak averaging of the float parameters; ``swap`` exchanges them with the model's.

    Update ``k`` uses ``min(decay, (k - 1) / k)``: a plain mean of the weights seen so far
    until ``1 / (1 - decay)`` updates (200 at 0.995), the exponential average after. So
    the average never holds the random initialization: with a fixed 0.995, a run of long
    windows (few steps per epoch: 82 at L = 1,000) validated an average that was still
    60% initialization after its first epoch.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.steps = 0
        self.params = [p for p in model.parameters() if p.dtype.is_floating_point]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (self.steps - 1.0) / self.steps)
        torch._foreach_mul_(self.shadow, decay)
        torch._foreach_add_(self.shadow, [p.detach() for p in self.params], alpha=1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        for p, s in zip(self.params, self.shadow):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def _first_batches_note(name: str, done: int, total: int, seconds: float, epochs: int) -> str:
    per_epoch = seconds / done * total
    return (f"[{name}] ~{per_epoch:.0f}s per epoch (from the first {done} of {total} batches); "
            f"at most {epochs} epochs = {per_epoch * epochs / 60:.1f} min, early stopping usually ends sooner")


def fit(model: nn.Module, spec: FitSpec, steps: Callable[[nn.Module, int], Iterable[tuple[torch.Tensor, dict]]],
        env: DistEnv, log: Log) -> FitResult:
    """Train ``model`` epoch by epoch; ``steps(wrapped, epoch)`` yields (loss, logs) per batch.

    After each epoch rank 0 evaluates on validation and updates every track; training
    stops when no track has improved for ``patience`` epochs (or at the opt-in
    deadline). Each history row has ``epoch_seconds`` (training only) and
    ``eval_seconds``.
    """
    train_mode = spec.train_mode or (lambda m: m.train())
    eval_mode = spec.eval_mode or (lambda m: m.eval())
    wrapped = _wrap(model, env)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    ema = _EMA(model, spec.ema_decay) if spec.ema_decay > 0 else None
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    epoch = 0
    for epoch in range(spec.epochs):
        train_mode(model)
        losses: list[torch.Tensor] = []
        bar = tqdm(total=spec.n_batches, desc=f"{spec.name} epoch {epoch + 1}/{spec.epochs}", leave=False,
                   disable=not env.main or not sys.stderr.isatty(), unit="batch")
        t0 = time.perf_counter()
        for i, (loss, logs) in enumerate(_grad_steps(steps(wrapped, epoch), spec.lr > 0)):
            if spec.lr > 0:  # lr 0: forward passes only (what calibrating observers needs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
            if ema is not None:
                ema.update()
            losses.append(loss.detach())
            if i % 10 == 0:  # reading values back syncs a GPU: only now and then
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", **{k: f"{float(v):.3f}" for k, v in logs.items()})
            bar.update(1)
            if epoch == 0 and i + 1 == min(20, max(1, spec.n_batches // 5)) and env.main:
                bar.clear()
                elapsed = time.perf_counter() - t0
                log(_first_batches_note(spec.name, i + 1, spec.n_batches, elapsed, spec.epochs))
                if spec.on_estimate is not None:
                    spec.on_estimate(elapsed / (i + 1) * spec.n_batches)
        bar.close()
        epoch_s = time.perf_counter() - t0
        stop = False
        if env.main:
            if ema is not None:
                ema.swap()  # validate (and snapshot) the averaged weights
            rec, stop = _validate(model, spec, eval_mode, epoch, losses, epoch_s, log)
            history.append(rec)
            if ema is not None:
                ema.swap()
        if _broadcast_flag(env, stop):
            break
    best = spec.tracks[0]
    if env.main and best.state is not None:
        model.load_state_dict(best.state)
    if env.world > 1:
        # Every rank continues from rank 0's best weights.
        for p in model.state_dict().values():
            dist.broadcast(p, src=0)
    eval_mode(model)
    return FitResult(model=model, epochs=epoch + 1, best_epoch=best.best_epoch + 1,
                     seconds=time.perf_counter() - t_start, history=history,
                     best_states={t.name: t.state for t in spec.tracks if t.state is not None},
                     best_epochs={t.name: t.best_epoch + 1 for t in spec.tracks})


def _grad_steps(steps: Iterable[tuple[torch.Tensor, dict]], grad: bool) -> Iterator[tuple[torch.Tensor, dict]]:
    """``steps``, each batch's forward pass run with autograd on or off."""
    it = iter(steps)
    while True:
        with torch.set_grad_enabled(grad):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def _validate(model: nn.Module, spec: FitSpec, eval_mode, epoch: int, losses: list[torch.Tensor],
              epoch_s: float, log: Log) -> tuple[dict[str, Any], bool]:
    """Evaluate on validation, update the tracks; returns the history row and whether to stop."""
    t0 = time.perf_counter()
    eval_mode(model)
    with torch.no_grad():
        val = spec.evaluate(model)
    eval_s = time.perf_counter() - t0
    loss = float(torch.stack(losses).mean()) if losses else float("nan")
    improved = []
    warmup = epoch < spec.warmup_epochs
    for t in spec.tracks:
        s = t.score(val)
        if warmup:
            t.best_epoch = epoch  # patience counts from the first epoch after the warm-up
        elif s > t.best + 1e-4:
            t.best, t.best_epoch = s, epoch
            t.state = copy.deepcopy(model.state_dict())
            improved.append(t.name)
    rec = {"epoch": epoch + 1, "loss": loss, "val": val, "epoch_seconds": round(epoch_s, 2),
           "eval_seconds": round(eval_s, 2), "improved": improved}
    log(f"[{spec.name}] epoch {epoch + 1}: loss {loss:.4f}  val auc {val['ctr']['auc']:.4f}  "
        f"hr@10 {val['ranking']['hr@10']:.4f}  ndcg@10 {val['ranking']['ndcg@10']:.4f}  "
        f"({epoch_s:.1f}s train, {eval_s:.1f}s eval)"
        f"{'  (warm-up stage)' if warmup else '' if improved else '  no improvement'}")
    stalled = all(epoch - t.best_epoch >= spec.patience for t in spec.tracks)
    late = spec.deadline is not None and time.perf_counter() > spec.deadline
    if late:
        log(f"[{spec.name}] time budget (--max-minutes) reached; stopping")
    return rec, stalled or late
