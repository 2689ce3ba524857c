"""Training the device student: plain, distilled, and int8 (QAT).

Each step takes ``batch_size`` training events; a student scores the event's item and
``negatives`` items the user did not touch in the training period, from the history
the SDK's sampler gives it (a new long-term sample every epoch). Its losses: a softmax
over those candidates (interaction), BCE of the click head on the event's label, and,
when distilled, the :class:`~kdaliens.training.distill.DistillLoss` terms on the
teacher's signals for the same events and candidates.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batches import NegativeSampler, iterate, student_requests
from .distill import DistillLoss, TeacherSignals
from .evaluation import evaluate, student_scorer
from .loop import Context, DistEnv, FitResult, FitSpec, Log, Track, ctr_plus_ndcg, fit, set_seed
from .models.student import StudentRanker
from .quantize import convert_qat_graph, prepare_qat_graph, snap_embeddings


class StudentObjective(nn.Module):
    """Student + distillation losses in one forward, so DDP syncs every part."""

    def __init__(self, student: nn.Module, distill: DistillLoss | None, tw):
        super().__init__()
        self.student = student
        self.distill = distill
        self.tw = tw

    def forward(self, batch: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor] | None, hard_weight: float):
        out = student_outputs(self.student, batch)
        logits = out["interaction"]
        if "cand_teacher_top" in batch:  # the teacher's top items are not ground-truth negatives
            logits = logits.masked_fill(batch["cand_teacher_top"], float("-inf"))
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        inter = F.cross_entropy(logits, target)
        lab = batch["has_label"]
        if lab.any():
            click = F.binary_cross_entropy_with_logits(out["click"][:, 0][lab], batch["label"][lab])
        else:
            click = out["click"].sum() * 0.0
        loss = hard_weight * (self.tw.interaction_weight * inter + self.tw.click_weight * click)
        logs = {"inter": inter.detach(), "click": click.detach()}
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


def student_batch(ctx: Context, rows: np.ndarray, negs: NegativeSampler | None, k: int, seed: int | None,
                  signals: TeacherSignals | None = None) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """Requests for training rows ``rows``: the event's item first, then (when distilling)
    the teacher's top unobserved items of the user, then ``k`` uniform negatives.
    Returns (batch, events, candidate rows)."""
    prep = ctx.prep
    tr = prep.ctr["train"]
    r = ctx.train_rows[rows]
    users = tr["user"][r]
    parts = [tr["item"][r][:, None]]
    n_top = signals.H if signals is not None else 0
    if n_top:
        parts.append(signals.hard(users))
    if negs is not None and k > 0:
        parts.append(negs.sample(users, k))
    cands = np.concatenate(parts, axis=1)
    req = student_requests(prep, ctx.s_enc, users, tr["start"][r], tr["n_past"][r], tr["ts"][r], cands, seed=seed)
    lab = tr["label"][r]
    has = np.isfinite(lab) & (not prep.implicit)
    req["label"] = np.where(has, lab, 0.0).astype(np.float32)
    req["has_label"] = has
    if n_top:
        top = np.zeros(cands.shape, dtype=bool)
        top[:, 1:1 + n_top] = True
        req["cand_teacher_top"] = top
    return ctx.tensors(req), ctx.train_event[rows], cands


def evaluate_student(model: nn.Module, ctx: Context, split: str, full: bool = False) -> dict[str, dict]:
    return evaluate(student_scorer(model, ctx), ctx, split, full=full)


def train_student(ctx: Context, env: DistEnv, log: Log, signals: TeacherSignals | None = None,
                  name: str = "student", deadline: float | None = None) -> FitResult:
    cfg = ctx.cfg
    set_seed(cfg.train.seed + 1)
    model = StudentRanker(ctx.s_spec, cfg.student).to(ctx.device)
    if signals is not None and cfg.distill.init_items:
        init_items_from_teacher(model, signals.teacher, ctx)
    distill = (DistillLoss(cfg.distill, cfg.student.dim, cfg.teacher.dim).to(ctx.device)
               if signals is not None else None)
    objective = StudentObjective(model, distill, cfg.train)
    res = _fit_student(name, objective, ctx, env, log, signals, cfg.train.epochs, cfg.train.lr, deadline)
    res.model = model
    return res


def probe_student_epoch(ctx: Context, batches: int = 3) -> float:
    """Seconds a plain-student epoch will take here: a few real steps of a throwaway model.

    Touches no random state the training uses (its own generators, a fresh model).
    """
    tw = ctx.cfg.train
    with torch.random.fork_rng(devices=[]):
        model = StudentRanker(ctx.s_spec, ctx.cfg.student).to(ctx.device)
        objective = StudentObjective(model, None, tw)
        negs = NegativeSampler(ctx.prep, 12345, ctx.train_end)
        rng = np.random.default_rng(12345)
        times = []
        for i in range(batches + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            rows = rng.choice(len(ctx.train_rows), size=min(tw.batch_size, len(ctx.train_rows)), replace=False)
            b, _, _ = student_batch(ctx, rows, negs, tw.negatives, seed=0)
            loss, _ = objective(b, None, 1.0)
            loss.backward()
            if i:
                times.append(time.perf_counter() - t0)
    return float(np.median(times)) * math.ceil(len(ctx.train_rows) / tw.batch_size)


@torch.no_grad()
def init_items_from_teacher(student: StudentRanker, teacher, ctx: Context) -> None:
    """Set the student's item-id rows to the top principal components of the teacher's
    item vectors, scaled to the table's initial spread (out-of-vocabulary rows keep theirs)."""
    _, vec = teacher.rank[0].item_vectors(ctx.catalogue, "cat_")  # (I, Dt)
    x = vec.float() - vec.float().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = x @ v[: student.cfg.dim].T  # (I, d)
    table = student.items.tables[student.item_names.index(ctx.s_spec.item_id_field)].weight
    proj = proj / proj.std().clamp(min=1e-6) * table[2:].std()
    ids = torch.from_numpy(ctx.prep.item_arrays[ctx.s_spec.item_id_field]).to(table.device)
    known = ids > 1  # 0 is padding, 1 out of vocabulary
    table[ids[known]] = proj[known].to(table.dtype)


def _fit_student(name: str, objective: StudentObjective, ctx: Context, env: DistEnv, log: Log,
                 signals: TeacherSignals | None, epochs: int, lr: float, deadline: float | None,
                 train_mode=None, eval_mode=None) -> FitResult:
    tw = ctx.cfg.train
    rng = np.random.default_rng(tw.seed + 2)
    negs = NegativeSampler(ctx.prep, tw.seed + 3 + env.rank, ctx.train_end)
    hard_w = ctx.cfg.distill.hard_weight if signals is not None else 1.0

    def steps(wrapped: nn.Module, epoch: int):
        for rows in iterate(len(ctx.train_rows), tw.batch_size, shuffle=True, rng=rng, rank=env.rank,
                            world=env.world):
            # A new long-term sample of each history every epoch (the sampler's seed).
            b, events, cands = student_batch(ctx, rows, negs, tw.negatives, seed=1000 + epoch, signals=signals)
            t = signals.for_batch(events, cands) if signals is not None else None
            yield wrapped(b, t, hard_w)

    n = math.ceil(len(ctx.train_rows) / tw.batch_size / env.world)
    spec = FitSpec(name=name, epochs=epochs, patience=tw.patience, lr=lr, weight_decay=tw.weight_decay, n_batches=n,
                   evaluate=lambda m: evaluate_student(m.student, ctx, "val"), tracks=[Track("main", ctr_plus_ndcg)],
                   deadline=deadline, train_mode=train_mode, eval_mode=eval_mode)
    return fit(objective, spec, steps, env, log)


def qat_student(student: StudentRanker, ctx: Context, env: DistEnv, log: Log, signals: TeacherSignals | None,
                deadline: float | None = None) -> FitResult:
    """Fine-tune with int8 fake quantization (PT2E QAT on the runtime-neutral Int8Grid), then convert.

    Linear layers get per-channel symmetric int8 weights and int8 activations
    (:class:`~kdaliens.training.quantize.Int8Grid`); embedding tables train through per-row fake quantization (int8,
    or 4-bit for large tables; ``cfg.quant``), the grid the exporters store. The
    returned model is the converted (quantized) graph, so its metrics are the int8 model's own.
    QAT runs on the CPU (the PT2E graph is captured there); the result is a CPU model.
    """
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    cfg = ctx.cfg
    cpu_ctx = ctx if ctx.device.type == "cpu" else ctx.on_cpu()
    if signals is not None and signals.device.type != "cpu":
        signals = signals.to(torch.device("cpu"))
    student = copy.deepcopy(student).cpu().eval()
    tables = snap_embeddings(student, cfg.quant, freeze=False)  # start on the grid; they keep training
    prepared, _names = prepare_qat_graph(student, cfg.quant)
    # Seeded after the graph is prepared: a quantizer's pattern matching may draw random
    # numbers (ExecuTorch's XNNPACK annotators trace example patterns on torch.randn), and
    # the int8 student must not depend on which quantizer drew how many.
    set_seed(cfg.train.seed + 4)
    distill = DistillLoss(cfg.distill, cfg.student.dim, cfg.teacher.dim) if signals is not None else None
    objective = StudentObjective(prepared, distill, cfg.train)
    kinds = sorted({f"{b}-bit/{'fp16' if d == 'float16' else 'fp32'} scales" for _, b, d in tables})
    log(f"[student_kd_int8] QAT on the PT2E graph ({len(tables)} embedding tables fake-quantized per row: "
        f"{', '.join(kinds)})")
    res = _fit_student("student_kd_int8", objective, cpu_ctx, env, log, signals, cfg.train.qat_epochs,
                       cfg.train.lr / 10, deadline,
                       train_mode=lambda m: move_exported_model_to_train(m.student),
                       eval_mode=lambda m: move_exported_model_to_eval(m.student))
    # convert_pt2e rewrites the graph in place: keep the QAT weights for the checkpoint.
    res.qat_state = {k: v.detach().clone() for k, v in prepared.state_dict().items()}  # type: ignore[attr-defined]
    res.model = convert_qat_graph(prepared)
    return res
