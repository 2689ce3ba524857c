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
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batches import NegativeSampler, hide_tokens, iterate, student_requests
from .config import TrainConfig
from .distill import DistillLoss, EmbeddingPerturbation, TeacherSignals
from .evaluation import evaluate, student_scorer
from .loop import Context, DistEnv, FitResult, FitSpec, Log, Track, ctr_plus_ndcg, fit, set_seed
from .models.student import StudentRanker
from .quantize import convert_qat_graph, fake_quantize_embeddings, plain_embeddings, prepare_qat_graph, snap_embeddings


class StudentObjective(nn.Module):
    """Student + distillation losses in one forward, so DDP syncs every part.

    With ``distill.method`` "lrc": for ``lrc_stage1_epochs`` epochs (stage 1, see
    :meth:`set_epoch`) only the contrastive part trains, then the labels and the other
    parts (stage 2); and with ``lrc_perturb`` > 0 each step also takes the loss with the
    embedding outputs moved along its gradient (:class:`EmbeddingPerturbation`), and
    trains on the mean of the two.
    """

    def __init__(self, student: nn.Module, distill: DistillLoss | None, train_cfg: TrainConfig):
        super().__init__()
        self.student = student
        self.distill = distill
        self.train_cfg = train_cfg
        dc = distill.cfg if distill is not None else None
        lrc = distill is not None and "lrc" in distill.parts
        self.stage1_epochs = dc.lrc_stage1_epochs if lrc else 0
        self.perturb = dc.lrc_perturb if lrc and isinstance(student, StudentRanker) else 0.0
        self.stage = 2

    def set_epoch(self, epoch: int) -> None:
        """Stage 1 (contrastive only) for the first ``lrc_stage1_epochs`` epochs, then stage 2."""
        self.stage = 1 if epoch < self.stage1_epochs else 2
        if self.distill is not None and self.stage1_epochs:
            self.distill.active = {"lrc"} if self.stage == 1 else set(self.distill.parts) - {"lrc"}

    def forward(self, batch: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor] | None, hard_weight: float):
        if self.perturb > 0 and self.training and torch.is_grad_enabled() and teacher is not None:
            with EmbeddingPerturbation(self.student, self.perturb) as tap:
                loss, logs = self._loss(batch, teacher, hard_weight)
                tap.perturb(loss)
                moved, _ = self._loss(batch, teacher, hard_weight)
            logs["perturbed"] = moved.detach()
            return 0.5 * (loss + moved), logs
        return self._loss(batch, teacher, hard_weight)

    def _loss(self, batch: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor] | None, hard_weight: float):
        if self.stage == 1:
            hard_weight = 0.0
        out = student_outputs(self.student, batch)
        logits = out["interaction"]
        if "cand_teacher_top" in batch:  # the teacher's top items are not ground-truth negatives
            logits = logits.masked_fill(batch["cand_teacher_top"], float("-inf"))
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        inter = F.cross_entropy(logits, target)
        lab = batch["has_label"]
        if lab.any():
            click = F.binary_cross_entropy_with_logits(out["click_logit"][:, 0][lab], batch["label"][lab])
        else:
            click = out["click_logit"].sum() * 0.0
        loss = hard_weight * (self.train_cfg.hard_interaction_weight * inter + self.train_cfg.hard_click_weight * click)
        logs = {"inter": inter.detach(), "click": click.detach()}
        if self.distill is not None and teacher is not None:
            kd, kd_logs = self.distill(out, teacher, batch)
            loss = loss + kd
            logs.update(kd_logs)
        return loss, logs


class QATObjective(nn.Module):
    """int8 fine-tuning toward the fp32 student it starts from (``train.qat_target="fp32"``).

    The quantized graph matches the fp32 student's softmax over the same candidates (KL)
    and its click probabilities (BCE), so fine-tuning repairs the quantization error
    instead of training on past the fp32 student's early-stopped optimum.
    """

    def __init__(self, student: nn.Module, reference: StudentRanker):
        super().__init__()
        self.student = student
        self.reference = reference.eval().requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor] | None, hard_weight: float):
        out = student_outputs(self.student, batch)
        with torch.no_grad():
            ref = self.reference(batch)
        rank = F.kl_div(F.log_softmax(out["interaction"], -1), F.log_softmax(ref["interaction"], -1),
                        reduction="batchmean", log_target=True)
        click = F.binary_cross_entropy_with_logits(out["click_logit"][:, 0], torch.sigmoid(ref["click_logit"][:, 0]))
        return rank + click, {"rank_kl": rank.detach(), "click": click.detach()}


def student_outputs(student: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run an eager StudentRanker or an exported/QAT graph of it on a batch dict."""
    if isinstance(student, StudentRanker):
        return student(batch)
    names = student.input_names  # type: ignore[attr-defined]
    inter, click, att = student(*[batch[n] for n in names])
    return {"interaction": inter, "click_logit": click, "att": att}


def student_batch(ctx: Context, rows: np.ndarray, negs: NegativeSampler | None, k: int, seed: int | None,
                  signals: TeacherSignals | None = None, hide: np.random.Generator | None = None
                  ) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """Requests for training rows ``rows``: the event's item first, then (when distilling)
    the teacher's top unobserved items of the user, then ``k`` uniform negatives. With
    ``hide``, ``train.unknown_share`` of the event kinds and item ids are hidden
    (:func:`~kdaliens.training.batches.hide_tokens`). Returns (batch, events, candidate rows)."""
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
    if hide is not None:
        hide_tokens(req, ctx.s_spec, ctx.cfg.train.unknown_share, hide)
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


def probe_student_epoch(ctx: Context, batches: int = 3) -> float:
    """Seconds a plain-student epoch will take here: a few real steps of a throwaway model.

    Touches no random state the training uses (its own generators, a fresh model).
    """
    train_cfg = ctx.cfg.train
    with torch.random.fork_rng(devices=[]):
        model = StudentRanker(ctx.s_spec, ctx.cfg.student).to(ctx.device)
        objective = StudentObjective(model, None, train_cfg)
        negs = NegativeSampler(ctx.prep, 12345, ctx.train_end)
        rng = np.random.default_rng(12345)
        times = []
        for i in range(batches + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            rows = rng.choice(len(ctx.train_rows), size=min(train_cfg.batch_size, len(ctx.train_rows)), replace=False)
            b, _, _ = student_batch(ctx, rows, negs, train_cfg.negatives, seed=0)
            loss, _ = objective(b, None, 1.0)
            loss.backward()
            if i:
                times.append(time.perf_counter() - t0)
    return float(np.median(times)) * math.ceil(len(ctx.train_rows) / train_cfg.batch_size)


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


class StudentTrainer:
    """Trains the device students of one run: plain or distilled (:meth:`train`) and int8 (:meth:`quantize`).

    With ``signals`` (the teacher's, :class:`~kdaliens.training.distill.TeacherSignals`)
    every batch also holds the teacher's top items and its scores, and the losses
    include distillation; without, it trains the plain student.

    Example:
        >>> trainer = StudentTrainer(ctx, env, print, signals)          # doctest: +SKIP
        >>> kd = trainer.train("student_kd").model                       # doctest: +SKIP
        >>> int8 = trainer.quantize(kd).model                            # doctest: +SKIP
    """

    def __init__(self, ctx: Context, env: DistEnv, log: Log, signals: TeacherSignals | None = None):
        self.ctx, self.env, self.log, self.signals = ctx, env, log, signals

    def train(self, name: str, deadline: float | None = None, on_grid: bool = False) -> FitResult:
        """A fresh student trained to early stopping (``train.epochs`` at most).

        With ``on_grid`` (``quant.train_on_grid``) its tables are read through per-row fake
        quantization on the ``cfg.quant`` grid from the first step, and the returned model
        holds them snapped to that grid (what it was evaluated with).
        """
        cfg, signals = self.ctx.cfg, self.signals
        set_seed(cfg.train.seed + 1)
        model = StudentRanker(self.ctx.s_spec, cfg.student).to(self.ctx.device)
        if signals is not None and cfg.distill.init_items:
            init_items_from_teacher(model, signals.teacher, self.ctx)
        if on_grid:
            tables = fake_quantize_embeddings(model, cfg.quant)
            self.log(f"[{name}] {len(tables)} embedding tables train on the int8 step's grid from the first step "
                     f"(quant.train_on_grid): " + ", ".join(f"{n} {b}-bit" for n, b, _, _ in tables))
        distill = (DistillLoss(cfg.distill, cfg.student.dim, cfg.teacher.dim).to(self.ctx.device)
                   if signals is not None else None)
        objective = StudentObjective(model, distill, cfg.train)
        spec = self._spec(self.ctx, name, cfg.train.epochs + objective.stage1_epochs, cfg.train.lr, deadline)
        spec.warmup_epochs = objective.stage1_epochs
        if distill is not None:
            self.log(f"[{name}] distillation {cfg.distill.method!r}: "
                     + ", ".join(f"{n} x{distill.weights[n]:g}" for n in distill.parts)
                     + (f"; {objective.stage1_epochs} contrastive-only epochs first" if objective.stage1_epochs else "")
                     + (f"; gradient perturbation {objective.perturb:g}" if objective.perturb else ""))
        res = self._fit(objective, self.ctx, self.signals, spec)
        if on_grid:
            plain_embeddings(model)
            snap_embeddings(model, cfg.quant, freeze=False)
        res.model = model
        return res

    def quantize(self, student: StudentRanker, deadline: float | None = None) -> FitResult:
        """Put ``student`` on the int8 grid (PT2E fake quantization on the runtime-neutral Int8Grid), then convert.

        Linear layers get per-channel symmetric int8 weights and int8 activations
        (:class:`~kdaliens.training.quantize.Int8Grid`); embedding tables train through per-row fake quantization
        (int8, or 4-bit for large tables; ``cfg.quant``), the grid the exporters store. ``train.qat_epochs``
        passes over the training batches calibrate the activation grid; with ``train.qat_lr`` > 0 they also
        fine-tune the weights (on ``train.qat_target``). The returned model is the converted (quantized) graph, so its
        metrics are the int8 model's own. QAT runs on the CPU (the PT2E graph is captured there); the result
        is a CPU model.
        """
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        cfg, signals = self.ctx.cfg, self.signals
        cpu_ctx = self.ctx if self.ctx.device.type == "cpu" else self.ctx.on_cpu()
        if signals is not None and signals.device.type != "cpu":
            signals = signals.to(torch.device("cpu"))
        fp32 = student
        student = copy.deepcopy(student).cpu().eval()
        tables = snap_embeddings(student, cfg.quant, freeze=False)  # start on the grid; they keep training
        prepared, _names = prepare_qat_graph(student, cfg.quant)
        # Seeded after the graph is prepared: a quantizer's pattern matching may draw random
        # numbers (ExecuTorch's XNNPACK annotators trace example patterns on torch.randn), and
        # the int8 student must not depend on which quantizer drew how many.
        set_seed(cfg.train.seed + 4)
        if cfg.train.qat_target == "fp32":
            objective: nn.Module = QATObjective(prepared, copy.deepcopy(fp32).cpu())
        else:
            distill = (DistillLoss(cfg.distill, cfg.student.dim, cfg.teacher.dim, intermediate=False)
                       if signals is not None else None)
            objective = StudentObjective(prepared, distill, cfg.train)
        kinds = sorted({f"{b}-bit/{'fp16' if d == 'float16' else 'fp32'} scales" for _, b, d in tables})
        how = (f"fine-tuning at lr {cfg.train.qat_lr:g} on the {cfg.train.qat_target} targets" if cfg.train.qat_lr > 0
               else "calibrating the activation grid; the weights stay as distilled (train.qat_lr 0)")
        self.log(f"[student_kd_int8] int8 on the PT2E graph ({len(tables)} embedding tables fake-quantized per row: "
                 f"{', '.join(kinds)}); {how}")
        spec = self._spec(cpu_ctx, "student_kd_int8", cfg.train.qat_epochs, cfg.train.qat_lr, deadline,
                          train_mode=lambda m: move_exported_model_to_train(m.student),
                          eval_mode=lambda m: move_exported_model_to_eval(m.student))
        res = self._fit(objective, cpu_ctx, signals, spec)
        # convert_pt2e rewrites the graph in place: keep the QAT weights for the checkpoint.
        res.qat_state = {k: v.detach().clone() for k, v in prepared.state_dict().items()}  # type: ignore[attr-defined]
        res.model = convert_qat_graph(prepared)
        return res

    def _spec(self, ctx: Context, name: str, epochs: int, lr: float, deadline: float | None,
              train_mode: Callable[[nn.Module], None] | None = None,
              eval_mode: Callable[[nn.Module], None] | None = None) -> FitSpec:
        """Early stopping on validation AUC + NDCG@10, over ``ctx``'s training events."""
        t = ctx.cfg.train
        return FitSpec(name=name, epochs=epochs, patience=t.patience, lr=lr, weight_decay=t.weight_decay,
                       n_batches=math.ceil(len(ctx.train_rows) / t.batch_size / self.env.world),
                       evaluate=lambda m: evaluate_student(m.student, ctx, "val"),
                       tracks=[Track("main", ctr_plus_ndcg)], deadline=deadline, train_mode=train_mode,
                       eval_mode=eval_mode)

    def _fit(self, objective: nn.Module, ctx: Context, signals: TeacherSignals | None, spec: FitSpec) -> FitResult:
        """:func:`fit` over the training events in ``ctx``, with ``signals`` when distilling."""
        train_cfg, env = ctx.cfg.train, self.env
        rng = np.random.default_rng(train_cfg.seed + 2)
        negs = NegativeSampler(ctx.prep, train_cfg.seed + 3 + env.rank, ctx.train_end)
        hide = np.random.default_rng([train_cfg.seed, 5, env.rank])  # hidden kinds and ids (unknown_share)
        hard_w = ctx.cfg.distill.hard_weight if signals is not None else 1.0

        def steps(wrapped: nn.Module, epoch: int):
            if isinstance(objective, StudentObjective):
                objective.set_epoch(epoch)
            for rows in iterate(len(ctx.train_rows), train_cfg.batch_size, shuffle=True, rng=rng, rank=env.rank,
                                world=env.world):
                # A new long-term sample of each history every epoch (the sampler's seed).
                b, events, cands = student_batch(ctx, rows, negs, train_cfg.negatives, seed=1000 + epoch,
                                                 signals=signals, hide=hide)
                t = signals.for_batch(events, cands) if signals is not None else None
                yield wrapped(b, t, hard_w)

        return fit(objective, spec, steps, env, self.log)
