"""The server job: teacher, plain student, distilled student, int8 student -> RUN_DIR.

RUN_DIR holds:

* ``config.json`` — the full :class:`~kdaliens.training.config.RunConfig`;
* ``spec.json`` / ``teacher_spec.json`` — the student's and teacher's feature specs;
* ``teacher.pt``, ``student_plain.pt``, ``student_kd.pt``, ``student_kd_int8.pt`` —
  checkpoints (config + spec + weights; ``torch.load(weights_only=True)``);
* ``metrics.json`` — per model a ``ctr`` block (auc, gauc, logloss on the CTR test
  split), a ``ranking`` block (hr@10, ndcg@10, leave-one-out against 100 unobserved
  items), ``params``, ``size_bytes``, and training facts (epochs, seconds);
* ``history.json`` — per-epoch losses and validation metrics.

``metrics.json`` is rewritten after each model, so a crash keeps what finished; a rerun
with the same config reuses finished checkpoints (``force=True`` retrains).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_model, save_checkpoint
from .config import RunConfig
from .data import SplitConfig, load_prepared
from .loop import (
    Context,
    DistEnv,
    evaluate_student,
    evaluate_teacher,
    init_distributed,
    qat_student,
    teacher_signals,
    train_student,
    train_teacher,
)

MODELS = ("teacher", "student_plain", "student_kd", "student_kd_int8")
# Share of the time budget each model may use before early stopping cuts it.
# The two fp32 students get the same share, so the distillation comparison is fair.
BUDGET = {"teacher": 0.62, "student_plain": 0.12, "student_kd": 0.12, "student_kd_int8": 0.14}


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=float)
    os.replace(tmp, path)


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


def _config_hash(cfg: RunConfig, data: str) -> str:
    return hashlib.sha256((cfg.to_json() + "|" + str(data)).encode()).hexdigest()[:16]


def format_table(metrics: dict[str, dict]) -> str:
    head = f"{'model':<17}{'AUC':>8}{'GAUC':>8}{'logloss':>9}{'HR@10':>8}{'NDCG@10':>9}{'params':>10}{'size KB':>9}{'time s':>8}"
    lines = [head, "-" * len(head)]
    for name in MODELS:
        m = metrics.get(name)
        if not m:
            continue
        c, r = m["ctr"], m["ranking"]
        lines.append(f"{name:<17}{c['auc']:>8.4f}{c['gauc']:>8.4f}{c['logloss']:>9.4f}{r['hr@10']:>8.4f}"
                     f"{r['ndcg@10']:>9.4f}{m['params']:>10,}{m['size_bytes'] / 1024:>9.1f}{m.get('train_seconds', 0):>8.0f}")
    return "\n".join(lines)


def run(data: str, out: str | Path, config: RunConfig | None = None, epochs: int | None = None,
        seed: int | None = None, force: bool = False, log: Callable[[str], None] = print,
        env: DistEnv | None = None) -> dict[str, dict]:
    """Train all four models on ``data`` and write RUN_DIR. Returns the metrics dict.

    Example:
        >>> from kdaliens.training.config import tiny_config
        >>> m = run("movielens-100k", "runs/tiny", tiny_config())   # doctest: +SKIP
        >>> m["student_kd"]["ctr"]["auc"]                            # doctest: +SKIP
    """
    cfg = config or RunConfig()
    if epochs is not None:
        cfg.train.epochs = int(epochs)
    if seed is not None:
        cfg.train.seed = int(seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    env = env or init_distributed()
    if not env.main:
        log = lambda msg: None  # noqa: E731  (only rank 0 talks)
    out = Path(out)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    budget_s = cfg.train.max_minutes * 60.0
    prep = load_prepared(data, cfg.data, SplitConfig(**cfg.split), verbose=env.main)
    ctx = Context(prep, cfg)
    chash = _config_hash(cfg, data)
    metrics_path = out / "metrics.json"
    metrics: dict[str, dict] = {}
    history: dict[str, list] = {}
    if env.main:
        old = json.loads(metrics_path.read_text()) if metrics_path.exists() and not force else {}
        metrics = {k: v for k, v in old.items() if isinstance(v, dict) and v.get("config_hash") == chash}
        write_json(out / "config.json", cfg.to_dict())
        write_json(out / "run.json", {"data": str(data), "implicit": bool(prep.implicit), "seed": cfg.train.seed,
                                      "world_size": env.world,
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        (out / "spec.json").write_text(ctx.s_spec.to_json(indent=1))
        (out / "teacher_spec.json").write_text(ctx.t_spec.to_json(indent=1))
    # Every rank must agree on which stages to skip.
    reuse = {name: (out / f"{name}.pt").exists() and name in metrics and not force for name in MODELS}
    if env.world > 1:
        import torch.distributed as dist

        obj = [reuse]
        dist.broadcast_object_list(obj, src=0)
        reuse = obj[0]

    def deadline(name: str) -> float:
        # The two fp32 students get the same wall time each, so the distillation
        # comparison is fair; the teacher and the int8 fine-tune take what is left.
        now = time.perf_counter()
        if name in ("student_plain", "student_kd"):
            return now + BUDGET[name] * budget_s
        end = t_start + (BUDGET["teacher"] if name == "teacher" else 1.0) * budget_s
        return max(end, now + 0.05 * budget_s)

    def record(name: str, model: nn.Module, res, evaluate, int8: bool, ckpt_kind: str, state: dict,
               spec) -> None:
        if not env.main:
            return
        t0 = time.perf_counter()
        with torch.no_grad():
            m = evaluate(model)
        m.update({"params": param_count(model), "size_bytes": size_bytes(model, int8), "config_hash": chash,
                  "epochs": res.epochs if res else None, "best_epoch": res.best_epoch if res else None,
                  "train_seconds": round(res.seconds, 1) if res else None,
                  "eval_seconds": round(time.perf_counter() - t0, 1)})
        metrics[name] = m
        history[name] = res.history if res else []
        save_checkpoint(out / f"{name}.pt", ckpt_kind, cfg, spec, state,
                        extra={"metrics": {"ctr": m["ctr"], "ranking": m["ranking"]}})
        write_json(metrics_path, metrics)
        hist_path = out / "history.json"
        old_h = json.loads(hist_path.read_text()) if hist_path.exists() else {}
        old_h.update(history)
        write_json(hist_path, old_h)
        log(f"[{name}] test: auc {m['ctr']['auc']:.4f}  gauc {m['ctr']['gauc']:.4f}  "
            f"hr@10 {m['ranking']['hr@10']:.4f}  ndcg@10 {m['ranking']['ndcg@10']:.4f}")

    def load(name: str) -> nn.Module:
        model, _, _, _ = load_model(out / f"{name}.pt")
        log(f"[{name}] reusing {out / (name + '.pt')} (same config); --force retrains")
        return model

    # 1. Teacher.
    if reuse["teacher"]:
        teacher = load("teacher")
    else:
        res = train_teacher(ctx, env, deadline("teacher"), log)
        teacher = res.model
        record("teacher", teacher, res, lambda m: evaluate_teacher(m, ctx, "test"), False, "teacher",
               teacher.state_dict(), ctx.t_spec)
    # 2. Plain student (no teacher): the baseline distillation must beat.
    if not reuse["student_plain"]:
        res = train_student(ctx, env, deadline("student_plain"), log, None, name="student_plain")
        record("student_plain", res.model, res, lambda m: evaluate_student(m, ctx, "test"), False, "student",
               res.model.state_dict(), ctx.s_spec)
    # 3. Distilled student.
    signals = None
    if reuse["student_kd"]:
        student_kd = load("student_kd")
    else:
        log("[student_kd] computing teacher soft labels and features for the training events")
        signals = teacher_signals(teacher, ctx)
        res = train_student(ctx, env, deadline("student_kd"), log, signals, name="student_kd")
        student_kd = res.model
        record("student_kd", student_kd, res, lambda m: evaluate_student(m, ctx, "test"), False, "student",
               student_kd.state_dict(), ctx.s_spec)
    # 4. int8 student: QAT from the distilled one, measured on the converted model.
    if not reuse["student_kd_int8"]:
        if signals is None:
            signals = teacher_signals(teacher, ctx)
        res = qat_student(student_kd, ctx, env, deadline("student_kd_int8"), log, signals)
        record("student_kd_int8", res.model, res, lambda m: evaluate_student(m, ctx, "test"), True, "student_qat",
               res.qat_state, ctx.s_spec)
        if env.main:
            metrics["student_kd_int8"]["params"] = metrics["student_kd"]["params"]
            metrics["student_kd_int8"]["size_bytes"] = size_bytes(student_kd, int8=True, recipe=cfg.quant)
            write_json(metrics_path, metrics)
    if env.main:
        log(format_table(metrics))
        log(f"total {time.perf_counter() - t_start:.0f}s; wrote {out}")
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return metrics
