"""Training loops: teacher, plain student, distilled student, int8 (QAT) student.

Each model trains with AdamW and early stopping on the validation split (score: CTR AUC
+ ranking NDCG@10, both on validation; the test split is only read for the final
metrics). With ``torchrun`` each process takes every world-th batch and
DistributedDataParallel averages gradients; rank 0 evaluates and decides when to stop.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdaliens.sdk.features import FeatureEncoder

from . import metrics as M
from .batches import (
    NegativeSampler,
    catalogue_arrays,
    iterate,
    prev_gaps,
    student_requests,
    student_spec,
    teacher_requests,
    teacher_spec,
    teacher_windows,
    to_torch,
)
from .config import RunConfig
from .data import Prepared
from .distill import DistillLoss
from .models.student import StudentRanker
from .models.teacher import TeacherRanker
from .quantize import convert_qat_graph, prepare_qat_graph, snap_embeddings


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


@dataclass
class FitResult:
    model: nn.Module
    epochs: int
    best_epoch: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _val_score(m: dict[str, dict[str, float]]) -> float:
    auc = m["ctr"]["auc"]
    return (0.0 if math.isnan(auc) else auc) + m["ranking"]["ndcg@10"]


def _fit(name: str, model: nn.Module, epochs: int, patience: int,
         lr: float, wd: float, step_fn: Callable[[nn.Module, int], Any], n_batches: Callable[[], int],
         evaluate: Callable[[nn.Module], dict], env: DistEnv, deadline: float, log: Callable[[str], None],
         train_mode: Callable[[nn.Module], None] | None = None,
         eval_mode: Callable[[nn.Module], None] | None = None) -> FitResult:
    """Generic loop: ``step_fn(wrapped, epoch)`` yields losses per batch; early stopping on val."""
    train_mode = train_mode or (lambda m: m.train())
    eval_mode = eval_mode or (lambda m: m.eval())
    wrapped = _wrap(model, env)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    best, best_state, best_epoch, bad = -float("inf"), None, -1, 0
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(epochs):
        train_mode(model)
        losses = []
        bar = tqdm(total=n_batches(), desc=f"{name} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not env.main, unit="batch")
        for loss, logs in step_fn(wrapped, epoch):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", **{k: f"{v:.3f}" for k, v in logs.items()})
            bar.update(1)
        bar.close()
        stop = False
        if env.main:
            eval_mode(model)
            with torch.no_grad():
                val = evaluate(model)
            score = _val_score(val)
            rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "val": val, "val_score": score, "seconds": round(time.perf_counter() - t0, 1)}
            history.append(rec)
            log(f"[{name}] epoch {epoch + 1}: loss {rec['loss']:.4f}  val auc {val['ctr']['auc']:.4f}  "
                f"hr@10 {val['ranking']['hr@10']:.4f}  ndcg@10 {val['ranking']['ndcg@10']:.4f}  "
                f"({rec['seconds']:.0f}s)")
            if score > best + 1e-4:
                best, best_epoch, bad = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            stop = bad >= patience or time.perf_counter() > deadline
            if time.perf_counter() > deadline:
                log(f"[{name}] time budget reached; stopping")
        if _broadcast_flag(env, stop):
            break
    if env.main and best_state is not None:
        model.load_state_dict(best_state)
    if env.world > 1:
        # Every rank continues from rank 0's best weights.
        for p in model.state_dict().values():
            dist.broadcast(p, src=0)
    eval_mode(model)
    return FitResult(model=model, epochs=epoch + 1, best_epoch=best_epoch + 1,
                     seconds=time.perf_counter() - t0, history=history)


# ------------------------------------------------------------------------------ shared
class Context:
    """Per-run data views shared by the loops."""

    def __init__(self, prep: Prepared, cfg: RunConfig):
        self.prep = prep
        self.cfg = cfg
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
        self.catalogue = to_torch(catalogue_arrays(prep))


# ------------------------------------------------------------------------------ teacher
def _teacher_catalogue_logits(model: TeacherRanker, states: torch.Tensor, cat: dict[str, torch.Tensor]
                              ) -> torch.Tensor:
    _, vec = model.item_vectors(cat, "cat_")  # (I, D)
    bias = model.item_logit_bias(cat, "cat_")  # (I,)
    return states @ vec.T + bias  # (..., I)


class _TeacherTrainModule(nn.Module):
    """Wraps the teacher so DDP sees one forward computing every training loss."""

    def __init__(self, teacher: TeacherRanker):
        super().__init__()
        self.teacher = teacher

    def forward(self, batch: dict[str, torch.Tensor], cat: dict[str, torch.Tensor]):
        out = self.teacher.forward_windows(batch)
        m = batch["win_mask"]
        # Two-tower part: softmax over the whole catalogue at every position (SASRec).
        logits = _teacher_catalogue_logits(self.teacher, out["states"][m], cat)  # (P, I)
        inter = F.cross_entropy(logits, batch["tgt_item"][m])
        # Full logit (with the target-aware part): softmax over target + sampled negatives.
        if "sampled" in out:
            sampled = out["sampled"][m]  # (P, 1 + K)
            inter = inter + F.cross_entropy(sampled, torch.zeros(len(sampled), dtype=torch.long))
        lab_mask = batch["tgt_has_label"]
        if lab_mask.any():
            click = F.binary_cross_entropy_with_logits(out["click"][lab_mask], batch["tgt_label"][lab_mask])
        else:
            click = out["click"].sum() * 0.0
        return inter, click


def teacher_window_pass(model: TeacherRanker, ctx: Context, split_end: np.ndarray, batch: int = 64
                        ) -> dict[str, np.ndarray]:
    """Causal pass over windows up to ``split_end``.

    Per target event: ``state`` (the state before it), ``click`` and ``att``; per input
    event: ``own`` (its own causal state, the history the teacher attends over).
    """
    prep = ctx.prep
    win = teacher_windows(prep, ctx.t_enc, ctx.cfg.teacher.history_len, split_end)
    E, D = len(prep.ev_item), ctx.cfg.teacher.dim
    state = np.zeros((E, D), dtype=np.float32)
    own = np.zeros((E, D), dtype=np.float32)
    att = np.zeros((E, D), dtype=np.float32)
    click = np.zeros(E, dtype=np.float32)
    has = np.zeros(E, dtype=bool)
    model.eval()
    with torch.no_grad():
        for rows in win.batches(batch, rng=None):
            arrays, tgt = win.batch(rows)
            out = model.forward_windows(to_torch(arrays))
            ok = tgt >= 0
            state[tgt[ok]] = out["query"].numpy()[ok]
            own[tgt[ok] - 1] = out["states"].numpy()[ok]  # input event = target - 1
            att[tgt[ok]] = out["att"].numpy()[ok]
            click[tgt[ok]] = out["click"].numpy()[ok]
            has[tgt[ok]] = True
    return {"state": state, "own": own, "att": att, "click": click, "has": has}


def evaluate_teacher(model: TeacherRanker, ctx: Context, split: str, batch: int = 64) -> dict[str, dict]:
    """CTR metrics from the causal window pass; ranking from last-L histories."""
    prep = ctx.prep
    d = prep.ctr[split]
    # Windows up to the end of this split for every user.
    end = prep.user_offsets[:-1].copy()
    np.maximum.at(end, d["user"], d["start"] + d["n_past"] + 1)
    real = prep.ev_item[d["start"] + d["n_past"]] == d["item"]
    sig = teacher_window_pass(model, ctx, np.maximum(end, ctx.train_end), batch)
    logits = np.zeros(len(d["label"]), dtype=np.float64)
    ev = d["start"] + d["n_past"]
    logits[real] = sig["click"][ev[real]]
    if (~real).any() or (~sig["has"][ev]).any():
        # Sampled negatives (implicit data) and first events: score them as requests.
        need = np.flatnonzero(~real | ~sig["has"][ev])
        logits[need] = _teacher_score(model, ctx, d, need, d["item"][need][:, None], batch, head="click")[:, 0]
    if prep.implicit:
        # Implicit data: the "click" is the interaction itself.
        logits = _teacher_score(model, ctx, d, np.arange(len(d["label"])), d["item"][:, None], batch,
                                head="interaction")[:, 0]
    ctr = M.ctr_block(d["user"], d["label"], logits)
    r = prep.rank[split if split in prep.rank else "test"]
    scores = _teacher_score(model, ctx, r, np.arange(len(r["user"])), r["items"], batch, head="interaction")
    return {"ctr": ctr, "ranking": M.ranking_block(scores)}


def _teacher_score(model: TeacherRanker, ctx: Context, d: dict[str, np.ndarray], rows: np.ndarray,
                   cands: np.ndarray, batch: int, head: str) -> np.ndarray:
    out = np.zeros(cands.shape, dtype=np.float64)
    model.eval()
    with torch.no_grad():
        for b in iterate(len(rows), batch, shuffle=False):
            rr = rows[b]
            req = teacher_requests(ctx.prep, ctx.t_enc, d["user"][rr], d["start"][rr], d["n_past"][rr], d["ts"][rr],
                                   cands[b], gaps=ctx.gaps)
            out[b] = model(to_torch(req), with_click=head == "click")[head].double().numpy()
    return out


def train_teacher(ctx: Context, env: DistEnv, deadline: float, log: Callable[[str], None]) -> FitResult:
    cfg = ctx.cfg
    set_seed(cfg.train.seed)
    model = TeacherRanker(ctx.t_spec, cfg.teacher)
    win = teacher_windows(ctx.prep, ctx.t_enc, cfg.teacher.history_len, ctx.train_end)
    trainer = _TeacherTrainModule(model)
    rng = np.random.default_rng(cfg.train.seed)
    tw = cfg.train

    negs = NegativeSampler(ctx.prep, cfg.train.seed + 7 + env.rank)
    window_users = ctx.prep.ev_user[np.maximum(win.target_event.max(1), 0)]

    def steps(wrapped: nn.Module, epoch: int):
        for rows in win.batches(tw.teacher_batch, rng, rank=env.rank, world=env.world):
            arrays, _ = win.batch(rows)
            if tw.teacher_negatives > 0:
                B, L = arrays["win_mask"].shape
                neg_rows = negs.sample(np.repeat(window_users[rows], L), tw.teacher_negatives)
                for name, v in ctx.prep.item_arrays.items():
                    arrays["neg_" + name] = v[neg_rows].reshape((B, L, tw.teacher_negatives) + v.shape[1:])
            b = to_torch(arrays)
            inter, click = wrapped(b, ctx.catalogue)
            yield tw.interaction_weight * inter + tw.click_weight * click, {"inter": float(inter), "click": float(click)}

    n = len(win.batches(tw.teacher_batch, None, env.rank, env.world))
    res = _fit("teacher", trainer, tw.epochs, tw.teacher_patience, tw.teacher_lr, tw.weight_decay, steps, lambda: n,
               lambda m: evaluate_teacher(m.teacher, ctx, "val"), env, deadline, log)
    res.model = model
    return res


# ------------------------------------------------------------------------------ student
@dataclass
class TeacherSignals:
    """What the student learns from: teacher outputs for the training events.

    ``state``/``att``/``click`` are per target event (from the causal window pass);
    ``own`` is each event's own causal state, so the teacher's target-aware interaction
    logit for any candidate can be computed from stored states without re-running the
    sequence encoder.
    """

    state: np.ndarray  # (E, D) query state before each event (sequence state + query gap)
    own: np.ndarray  # (E, D) each event's own state
    att: np.ndarray  # (E, D) user interest after target attention on that event's item
    click: np.ndarray  # (E,) click logit of that event's item
    has: np.ndarray  # (E,) bool
    item_vec: np.ndarray  # (I, D)
    item_bias: np.ndarray  # (I,)
    starts: np.ndarray  # (E,) first event of each event's user
    history_len: int
    teacher: TeacherRanker | None = None

    def interaction(self, events: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Teacher interaction logits (B, N) of candidate rows for target events."""
        if self.teacher is None:  # two-tower part only
            return np.einsum("bd,bnd->bn", self.state[events], self.item_vec[cands]) + self.item_bias[cands]
        L = self.history_len
        idx = events[:, None] - L + np.arange(L)[None, :]  # (B, L), newest last
        valid = idx >= self.starts[events][:, None]
        states = torch.from_numpy(np.where(valid[..., None], self.own[np.maximum(idx, 0)], 0.0).astype(np.float32))
        allowed = torch.from_numpy(valid).unsqueeze(1).expand(-1, cands.shape[1], -1)
        state_q = torch.from_numpy(self.state[events]).unsqueeze(1).expand(-1, cands.shape[1], -1)
        with torch.no_grad():
            logits, _ = self.teacher.interaction_logits(torch.from_numpy(self.item_vec[cands]),
                                                        torch.from_numpy(self.item_bias[cands]), states, state_q,
                                                        allowed)
        return logits.numpy()

    def for_batch(self, events: np.ndarray, cands: np.ndarray) -> dict[str, torch.Tensor]:
        return {"interaction": torch.from_numpy(self.interaction(events, cands).astype(np.float32)),
                "click": torch.from_numpy(self.click[events]),
                "att": torch.from_numpy(self.att[events]),
                "kd_mask": torch.from_numpy(self.has[events])}


def teacher_signals(model: TeacherRanker, ctx: Context) -> TeacherSignals:
    sig = teacher_window_pass(model, ctx, ctx.train_end)
    model.eval()
    with torch.no_grad():
        _, vec = model.item_vectors(ctx.catalogue, "cat_")
        bias = model.item_logit_bias(ctx.catalogue, "cat_")
    starts = ctx.prep.user_offsets[ctx.prep.ev_user]
    return TeacherSignals(state=sig["state"], own=sig["own"], att=sig["att"], click=sig["click"], has=sig["has"],
                          item_vec=vec.numpy().astype(np.float32), item_bias=bias.numpy().astype(np.float32),
                          starts=starts, history_len=ctx.cfg.teacher.history_len, teacher=model)


class _StudentTrainModule(nn.Module):
    """Student + distillation losses in one forward, so DDP syncs every part."""

    def __init__(self, student: nn.Module, distill: DistillLoss | None, tw):
        super().__init__()
        self.student = student
        self.distill = distill
        self.tw = tw

    def forward(self, batch: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor] | None, hard_weight: float):
        out = student_outputs(self.student, batch)
        target = torch.zeros(out["interaction"].shape[0], dtype=torch.long)
        inter = F.cross_entropy(out["interaction"], target)
        lab = batch["has_label"]
        if lab.any():
            click = F.binary_cross_entropy_with_logits(out["click"][:, 0][lab], batch["label"][lab])
        else:
            click = out["click"].sum() * 0.0
        loss = hard_weight * (self.tw.interaction_weight * inter + self.tw.click_weight * click)
        logs = {"inter": float(inter), "click": float(click)}
        if self.distill is not None and teacher is not None:
            kd, kd_logs = self.distill(out, teacher, batch)
            loss = loss + kd
            logs.update(kd_logs)
        return loss, logs


def student_outputs(student: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run an eager StudentRanker or an exported/QAT graph of it on a batch dict."""
    if isinstance(student, StudentRanker):
        return student(batch)
    names = student.input_names  # type: ignore[attr-defined]
    inter, click, att = student(*[batch[n] for n in names])
    return {"interaction": inter, "click": click, "att": att}


def _student_batch(ctx: Context, rows: np.ndarray, negs: NegativeSampler | None, k: int, seed: int | None):
    prep = ctx.prep
    tr = prep.ctr["train"]
    r = ctx.train_rows[rows]
    users = tr["user"][r]
    pos = tr["item"][r]
    cands = pos[:, None] if negs is None else np.concatenate([pos[:, None], negs.sample(users, k)], axis=1)
    req = student_requests(prep, ctx.s_enc, users, tr["start"][r], tr["n_past"][r], tr["ts"][r], cands, seed=seed)
    lab = tr["label"][r]
    has = np.isfinite(lab) & (not prep.implicit)
    req["label"] = np.where(has, lab, 0.0).astype(np.float32)
    req["has_label"] = has
    return to_torch(req), ctx.train_event[rows], cands


def evaluate_student(model: nn.Module, ctx: Context, split: str, batch: int = 1024) -> dict[str, dict]:
    prep = ctx.prep
    d = prep.ctr[split]
    head = "interaction" if prep.implicit else "click"
    logits = _student_score(model, ctx, d, d["item"][:, None], batch, head)[:, 0]
    r = prep.rank[split if split in prep.rank else "test"]
    scores = _student_score(model, ctx, r, r["items"], max(1, batch // 16), "interaction")
    return {"ctr": M.ctr_block(d["user"], d["label"], logits), "ranking": M.ranking_block(scores)}


def _student_score(model: nn.Module, ctx: Context, d: dict[str, np.ndarray], cands: np.ndarray, batch: int,
                   head: str) -> np.ndarray:
    out = np.zeros(cands.shape, dtype=np.float64)
    with torch.no_grad():
        for b in iterate(len(cands), batch, shuffle=False):
            req = student_requests(ctx.prep, ctx.s_enc, d["user"][b], d["start"][b], d["n_past"][b], d["ts"][b],
                                   cands[b])
            out[b] = student_outputs(model, to_torch(req))[head].double().numpy()
    return out


def train_student(ctx: Context, env: DistEnv, deadline: float, log: Callable[[str], None],
                  signals: TeacherSignals | None = None, name: str = "student") -> FitResult:
    cfg = ctx.cfg
    set_seed(cfg.train.seed + 1)
    model = StudentRanker(ctx.s_spec, cfg.student)
    distill = DistillLoss(cfg.distill, cfg.student.dim, cfg.teacher.dim) if signals is not None else None
    trainer = _StudentTrainModule(model, distill, cfg.train)
    return _fit_student(name, trainer, ctx, env, deadline, log, signals, cfg.train.epochs, cfg.train.lr,
                        result_model=model)


def _fit_student(name, trainer, ctx, env, deadline, log, signals, epochs, lr, result_model,
                 train_mode=None, eval_mode=None) -> FitResult:
    cfg = ctx.cfg
    tw = cfg.train
    rng = np.random.default_rng(cfg.train.seed + 2)
    negs = NegativeSampler(ctx.prep, cfg.train.seed + 3 + env.rank)
    hard_w = cfg.distill.hard_weight if signals is not None else 1.0

    def steps(wrapped: nn.Module, epoch: int):
        for rows in iterate(len(ctx.train_rows), tw.batch_size, shuffle=True, rng=rng, rank=env.rank,
                            world=env.world):
            # A new long-term sample of each history every epoch (the sampler's seed).
            b, events, cands = _student_batch(ctx, rows, negs, tw.negatives, seed=1000 + epoch)
            t = signals.for_batch(events, cands) if signals is not None else None
            yield wrapped(b, t, hard_w)

    n = math.ceil(len(ctx.train_rows) / tw.batch_size / env.world)
    res = _fit(name, trainer, epochs, tw.patience, lr, tw.weight_decay, steps, lambda: n,
               lambda m: evaluate_student(m.student, ctx, "val"), env, deadline, log, train_mode, eval_mode)
    res.model = result_model
    return res


# ------------------------------------------------------------------------------ QAT
def qat_student(student: StudentRanker, ctx: Context, env: DistEnv, deadline: float, log: Callable[[str], None],
                signals: TeacherSignals | None) -> FitResult:
    """Fine-tune with int8 fake quantization (PT2E QAT, XNNPACK config), then convert.

    Linear layers get per-channel symmetric int8 weights and int8 activations (the
    XNNPACK quantizer); embedding tables train through per-row fake quantization (int8,
    or 4-bit for large tables; ``cfg.quant``), the grid the exporters store. The
    returned model is the converted (quantized) graph, so its metrics are the int8 model's own.
    """
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    cfg = ctx.cfg
    set_seed(cfg.train.seed + 4)
    student = copy.deepcopy(student).eval()
    tables = snap_embeddings(student, cfg.quant, freeze=False)  # start on the grid; they keep training
    prepared, names = prepare_qat_graph(student, cfg.quant)
    distill = DistillLoss(cfg.distill, cfg.student.dim, cfg.teacher.dim) if signals is not None else None
    trainer = _StudentTrainModule(prepared, distill, cfg.train)
    kinds = sorted({f"{b}-bit/{'fp16' if d == 'float16' else 'fp32'} scales" for _, b, d in tables})
    log(f"[student_kd_int8] QAT on the PT2E graph ({len(tables)} embedding tables fake-quantized per row: "
        f"{', '.join(kinds)})")
    res = _fit_student("student_kd_int8", trainer, ctx, env, deadline, log, signals, cfg.train.qat_epochs,
                       cfg.train.lr / 10, result_model=prepared,
                       train_mode=lambda m: move_exported_model_to_train(m.student),
                       eval_mode=lambda m: move_exported_model_to_eval(m.student))
    # convert_pt2e rewrites the graph in place: keep the QAT weights for the checkpoint.
    res.qat_state = {k: v.detach().clone() for k, v in prepared.state_dict().items()}  # type: ignore[attr-defined]
    res.model = convert_qat_graph(prepared)
    return res
