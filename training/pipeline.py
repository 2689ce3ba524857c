"""The server job: teacher, plain student, distilled student, int8 student -> RUN_DIR.

RUN_DIR holds:

* ``config.json`` — the full :class:`~kdaliens.training.config.RunConfig`;
* ``spec.json`` / ``teacher_spec.json`` — the student's and teacher's feature specs;
* ``teacher.pt``, ``student_plain.pt``, ``student_kd.pt``, ``student_kd_int8.pt`` —
  checkpoints (config + spec + weights; ``torch.load(weights_only=True)``);
* ``metrics.json`` — per model a ``ctr`` block (auc, gauc, logloss on the CTR test
  split), a ``ranking`` block (hr@10, ndcg@10, leave-one-out against 100 unobserved
  items), a ``ranking_full`` block (hr@10, ndcg@10 against every item the user never
  touched; ``users`` scored), ``params``, ``size_bytes``, and training facts (epochs,
  best epochs, seconds, median ``epoch_seconds``);
* ``history.json`` — per model, one row per epoch: loss, validation metrics,
  ``epoch_seconds`` (training only) and ``eval_seconds``.

``metrics.json`` is rewritten after each model, so a crash keeps what finished; a rerun
with the same config reuses finished checkpoints (``force=True`` retrains).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdaliens.sdk.fileio import atomic_write

from .checkpoint import load_model, save_checkpoint
from .config import RunConfig
from .data import load_prepared
from .distill import TeacherSignals
from .loop import Context, DistEnv, init_distributed, resolve_device
from .student_loop import StudentTrainer, evaluate_student, probe_student_epoch
from .teacher_loop import evaluate_teacher, train_teacher

MODELS = ("teacher", "student_plain", "student_kd", "student_kd_int8")
# Cost of a distilled-student epoch and of an int8 (QAT) epoch relative to a plain one,
# measured on MovieLens-100K with the default config on 2 CPU cores (the KD epoch also
# scores the uniform negatives with the teacher; QAT runs the fake-quantized graph).
KD_EPOCH_COST, QAT_EPOCH_COST = 2.3, 2.8
CALIBRATION_EPOCH_COST = 2.0  # an int8 pass without weight updates (train.qat_lr 0): 19.8 s vs a 10 s student epoch
# Share of an opt-in time budget (--max-minutes) each model may use before it stops.
# The two fp32 students get the same share, so the distillation comparison is fair.
BUDGET = {"teacher": 0.62, "student_plain": 0.12, "student_kd": 0.12, "student_kd_int8": 0.14}


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=float))


def param_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def size_bytes(model: nn.Module, int8: bool, recipe=None) -> int:
    """Bytes of the weights as shipped: fp32, or, for the int8 student, embedding tables
    as ``recipe`` (a QuantConfig) stores them and linear weights int8 with one fp32
    scale per output channel (biases and other parameters stay fp32)."""
    from .quantize import table_bytes

    tables = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Embedding)}
    total = 0
    for _name, p in model.named_parameters():
        if int8 and id(p) in tables and recipe is not None:
            bits, scale_dtype = recipe.table(p.shape[0])
            total += table_bytes(p.shape[0], p.shape[1], bits, scale_dtype)
        elif int8 and p.dim() == 2:
            total += p.numel() + 4 * p.shape[0]
        else:
            total += 4 * p.numel()
    return int(total)


def config_hash(cfg: RunConfig, data: str) -> str:
    return hashlib.sha256((cfg.to_json() + "|" + str(data)).encode()).hexdigest()[:16]


def format_table(metrics: dict[str, dict]) -> str:
    head = (f"{'model':<17}{'AUC':>8}{'GAUC':>8}{'logloss':>9}{'HR@10':>8}{'NDCG@10':>9}{'full HR':>9}"
            f"{'full NDCG':>10}{'params':>10}{'size KB':>9}{'ep s':>7}")
    lines = [head, "-" * len(head)]
    for name in MODELS:
        m = metrics.get(name)
        if not m:
            continue
        c, r, f = m["ctr"], m["ranking"], m.get("ranking_full", {})
        lines.append(f"{name:<17}{c['auc']:>8.4f}{c['gauc']:>8.4f}{c['logloss']:>9.4f}{r['hr@10']:>8.4f}"
                     f"{r['ndcg@10']:>9.4f}{f.get('hr@10', float('nan')):>9.4f}{f.get('ndcg@10', float('nan')):>10.4f}"
                     f"{m['params']:>10,}{m['size_bytes'] / 1024:>9.1f}{m.get('epoch_seconds') or 0:>7.1f}")
    return "\n".join(lines)


class _Run:
    """One ``kdaliens-train`` run: what it has finished, and how to record a model."""

    def __init__(self, data: str, out: Path, cfg: RunConfig, env: DistEnv, force: bool, log: Callable[[str], None]):
        self.out, self.cfg, self.env, self.log = out, cfg, env, log
        self.t_start = time.perf_counter()
        device = resolve_device(cfg.train.device, env)
        prep = load_prepared(data, cfg.data, cfg.split, verbose=env.main, log=log)
        self.ctx = Context(prep, cfg, device)
        self.chash = config_hash(cfg, data)
        self.metrics: dict[str, dict] = {}
        self.history: dict[str, list] = {}
        if env.main:
            old = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() and not force else {}
            self.metrics = {k: v for k, v in old.items() if isinstance(v, dict) and v.get("config_hash") == self.chash}
            write_json(out / "config.json", cfg.to_dict())
            write_json(out / "run.json", {"data": str(data), "implicit": bool(prep.implicit), "seed": cfg.train.seed,
                                          "world_size": env.world, "device": str(device),
                                          "threads": torch.get_num_threads(),
                                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            (out / "spec.json").write_text(self.ctx.s_spec.to_json(indent=1))
            (out / "teacher_spec.json").write_text(self.ctx.t_spec.to_json(indent=1))
        # Every rank must agree on which stages to skip.
        reuse = {n: (out / f"{n}.pt").exists() and n in self.metrics and not force for n in MODELS}
        if env.world > 1:
            import torch.distributed as dist

            obj = [reuse]
            dist.broadcast_object_list(obj, src=0)
            reuse = obj[0]
        self.reuse = reuse

    def _int8_cost(self) -> float:
        """An int8 epoch in student epochs: fine-tuning through fake quantization, or forward passes only."""
        return QAT_EPOCH_COST if self.cfg.train.qat_lr > 0 else CALIBRATION_EPOCH_COST

    def log_estimate(self, teacher_epoch: float, student_epoch: float) -> None:
        """The whole run's worst case, once the teacher's first batches are timed."""
        cfg, train = self.cfg, self.cfg.train
        # An EMKD ensemble trains its members together: its estimate is the whole ensemble's.
        members = 1 if "emkd" in cfg.distill.methods else cfg.teacher.ensemble
        n = members + (0 if self.ctx.prep.implicit else cfg.teacher.click_members)
        parts = {"teacher": n * teacher_epoch * train.epochs, "student_plain": student_epoch * train.epochs,
                 "student_kd": KD_EPOCH_COST * student_epoch * train.epochs,
                 "student_kd_int8": self._int8_cost() * student_epoch * train.qat_epochs}
        todo = {k: v for k, v in parts.items() if not self.reuse[k]}
        self.log(f"[run] per epoch: teacher ~{teacher_epoch:.0f}s, student ~{student_epoch:.0f}s, distilled student "
                 f"~{KD_EPOCH_COST * student_epoch:.0f}s, int8 {'QAT' if train.qat_lr > 0 else 'calibration'} "
                 f"~{self._int8_cost() * student_epoch:.0f}s; the whole "
                 f"run at most ~{sum(todo.values()) / 60:.0f} min plus evaluation ({train.epochs} epochs each, "
                 f"{train.qat_epochs} for QAT); early stopping usually ends each model well before")

    def deadline(self, name: str) -> float | None:
        """The opt-in budget's end for ``name`` (None: train to early stopping)."""
        if self.cfg.train.max_minutes is None:
            return None
        budget_s, now = self.cfg.train.max_minutes * 60.0, time.perf_counter()
        if name in ("student_plain", "student_kd"):
            return now + BUDGET[name] * budget_s
        end = self.t_start + (BUDGET["teacher"] if name == "teacher" else 1.0) * budget_s
        return max(end, now + 0.05 * budget_s)

    def record(self, name: str, model: nn.Module, res, evaluate, int8: bool, ckpt_kind: str, state: dict,
               spec) -> None:
        if not self.env.main:
            return
        t0 = time.perf_counter()
        with torch.no_grad():
            m = evaluate(model)
        rows = res.history if res else []
        ep = [r["epoch_seconds"] for r in rows]
        m.update({"params": param_count(model), "size_bytes": size_bytes(model, int8), "config_hash": self.chash,
                  "epochs": res.epochs if res else None, "best_epoch": res.best_epoch if res else None,
                  "best_epochs": res.best_epochs if res else None,
                  "train_seconds": round(res.seconds, 1) if res else None,
                  "epoch_seconds": round(sorted(ep)[len(ep) // 2], 2) if ep else None,
                  "test_eval_seconds": round(time.perf_counter() - t0, 1)})
        self.metrics[name] = m
        self.history[name] = rows
        save_checkpoint(self.out / f"{name}.pt", ckpt_kind, self.cfg, spec, state,
                        extra={"metrics": {"ctr": m["ctr"], "ranking": m["ranking"]}})
        write_json(self.out / "metrics.json", self.metrics)
        hist_path = self.out / "history.json"
        old_h = json.loads(hist_path.read_text()) if hist_path.exists() else {}
        old_h.update(self.history)
        write_json(hist_path, old_h)
        f = m["ranking_full"]
        self.log(f"[{name}] test: auc {m['ctr']['auc']:.4f}  gauc {m['ctr']['gauc']:.4f}  "
                 f"hr@10 {m['ranking']['hr@10']:.4f}  ndcg@10 {m['ranking']['ndcg@10']:.4f}  "
                 f"full-catalogue hr@10 {f['hr@10']:.4f}  ndcg@10 {f['ndcg@10']:.4f} ({f['users']} users)")

    def load(self, name: str) -> nn.Module:
        model, _, _, _ = load_model(self.out / f"{name}.pt")
        self.log(f"[{name}] reusing {self.out / (name + '.pt')} (same config); --force retrains")
        return model.to(self.ctx.device) if name != "student_kd_int8" else model


def run(data: str, out: str | Path, config: RunConfig | None = None, epochs: int | None = None,
        seed: int | None = None, force: bool = False, log: Callable[[str], None] = print,
        env: DistEnv | None = None) -> dict[str, dict]:
    """Train all four models on ``data`` and write RUN_DIR. Returns the metrics dict.

    Example:
        >>> from kdaliens.training.config import tiny_config
        >>> m = run("movielens-100k", "runs/tiny", tiny_config())   # doctest: +SKIP
        >>> m["student_kd"]["ranking_full"]["ndcg@10"]               # doctest: +SKIP
    """
    cfg = _configure(config or RunConfig(), epochs, seed)
    env = env or init_distributed()
    if not env.main:
        log = lambda msg: None  # noqa: E731  (only rank 0 talks)
    out = Path(out)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
    R = _Run(data, out, cfg, env, force, log)
    log(f"[run] device {R.ctx.device}, {torch.get_num_threads()} threads, seed {cfg.train.seed}; "
        + (f"time budget {cfg.train.max_minutes} min (--max-minutes): models stop when their share runs out"
           if cfg.train.max_minutes is not None else "epoch-based: every model trains to early stopping"))
    _train_models(R, env, log)
    if env.main:
        log(format_table(R.metrics))
        log(f"total {time.perf_counter() - R.t_start:.0f}s; wrote {out}")
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return R.metrics


def _configure(cfg: RunConfig, epochs: int | None, seed: int | None) -> RunConfig:
    """Apply ``--epochs``/``--seed`` and the process-wide torch settings the config asks for."""
    if epochs is not None:
        cfg.train.epochs = int(epochs)
    if seed is not None:
        cfg.train.seed = int(seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return cfg


def _train_models(R: _Run, env: DistEnv, log: Callable[[str], None]) -> None:
    """Teacher, plain student, distilled student, int8 student, each reused when its inputs are."""
    ctx, cfg, out = R.ctx, R.cfg, R.out
    student_eval = lambda m: evaluate_student(m, ctx, "test", full=True)  # noqa: E731
    student_epoch = probe_student_epoch(ctx) if env.main else 0.0
    # 1. Teacher.
    if R.reuse["teacher"]:
        teacher = R.load("teacher")
    else:
        res = train_teacher(ctx, env, log, R.deadline("teacher"),
                            on_estimate=lambda t: R.log_estimate(t, student_epoch))
        teacher = res.model
        R.record("teacher", teacher, res, lambda m: evaluate_teacher(m, ctx, "test", full=True), False, "teacher",
                 teacher.state_dict(), ctx.t_spec)
    # 2. Plain student (no teacher): the baseline distillation must beat.
    if not R.reuse["student_plain"]:
        res = StudentTrainer(ctx, env, log).train("student_plain", R.deadline("student_plain"))
        R.record("student_plain", res.model, res, student_eval, False, "student", res.model.state_dict(), ctx.s_spec)
    # 3. Distilled student.
    signals = None
    if R.reuse["student_kd"]:
        student_kd = R.load("student_kd")
    else:
        log("[student_kd] computing the teacher's signals for the training events")
        signals = TeacherSignals(teacher, ctx)
        res = StudentTrainer(ctx, env, log, signals).train("student_kd", R.deadline("student_kd"),
                                                            on_grid=cfg.quant.train_on_grid)
        student_kd = res.model
        R.record("student_kd", student_kd, res, student_eval, False, "student", student_kd.state_dict(), ctx.s_spec)
    # 4. int8 student: QAT from the distilled one, measured on the converted model.
    if not R.reuse["student_kd_int8"]:
        if signals is None:
            signals = TeacherSignals(teacher, ctx)
        res = StudentTrainer(ctx, env, log, signals).quantize(student_kd, R.deadline("student_kd_int8"))
        cpu_eval = lambda m: evaluate_student(m, ctx.on_cpu(), "test", full=True)  # noqa: E731
        R.record("student_kd_int8", res.model, res, cpu_eval, True, "student_qat", res.qat_state, ctx.s_spec)
        if env.main:
            R.metrics["student_kd_int8"]["params"] = R.metrics["student_kd"]["params"]
            R.metrics["student_kd_int8"]["size_bytes"] = size_bytes(student_kd, int8=True, recipe=cfg.quant)
            write_json(out / "metrics.json", R.metrics)
