"""The quickstart's plots: accuracy per model, latency per backend, training curves.

matplotlib is imported inside each function (it is a ``[train]`` dependency, not the SDK's).
"""

from __future__ import annotations

from pathlib import Path

from kdaliens.training.pipeline import MODELS

COLORS = {"teacher/torch": "#444444", "student/torch": "#8c564b", "student/executorch": "#1f77b4",
          "student/onnxruntime": "#d62728", "student/litert": "#2ca02c"}


MODEL_COLORS = {"teacher": "#444444", "student_plain": "#8c564b", "student_kd": "#1f77b4", "student_kd_int8": "#17becf"}


def plot_accuracy(metrics: dict[str, dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    names = list(metrics)
    # Bars start at chance level: a random ranking's AUC is 0.5 and its HR@10 among 1 + 100
    # items is 10/101, so the bars' lengths are what each model adds over chance.
    panels = [("ctr", "auc", "AUC (CTR protocol), from chance 0.5", 0.5),
              ("ranking", "hr@10", "HR@10 (1 + 100 unobserved), from chance 0.099", 10 / 101)]
    if all("ranking_full" in metrics[n] for n in names):
        panels.append(("ranking_full", "hr@10", "HR@10 (full catalogue), from 0", 0.0))
    fig = Figure(figsize=(4 * len(panels), 3.6), dpi=120)
    for k, (block, key, label, base) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        vals = [metrics[n][block][key] for n in names]
        bars = ax.bar(range(len(names)), [v - base for v in vals], bottom=base,
                      color=[MODEL_COLORS.get(n, "#888888") for n in names])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.4f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("student_", "") for n in names], fontsize=8)
        ax.set_ylim(min(base, min(vals)), max(vals) + 0.05 * (max(vals) - base) + 1e-3)
        ax.set_title(label, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("test accuracy per model (student_kd_int8 measured on the converted int8 model)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_latency(rows: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=120)
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(f"{r['model']}/{r['backend']}", []).append(r)
    for k, (part, title) in enumerate((("", "model call"), ("sdk_", "whole SDK rerank (SQLite stores)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for name, rs in series.items():
            rs = sorted((r for r in rs if r.get(f"{part}p50_us") is not None), key=lambda r: r["candidates"])
            if not rs:
                continue
            x = [r["candidates"] for r in rs]
            quant = rs[0]["quantization"]
            c = COLORS.get(name, None)
            p50, p99 = [r[f"{part}p50_us"] for r in rs], [r[f"{part}p99_us"] for r in rs]
            line, = ax.plot(x, p50, "-o", color=c, markersize=4, label=f"{name} {quant}")
            # The band from p50 up to p99, in the series' own colour: the tail belongs to its line.
            ax.fill_between(x, p50, p99, color=line.get_color(), alpha=0.15, linewidth=0)
            ax.plot(x, p99, "_", color=line.get_color(), markersize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({r["candidates"] for r in rows})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("candidates per request")
        ax.set_ylabel("us (line: p50; band up to the p99 mark)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("latency on one thread", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_training(history: dict[str, list], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=120)
    names = sorted(history, key=lambda n: MODELS.index(n) if n in MODELS else len(MODELS))
    panels = (("ctr", "auc", "validation AUC", 0.5), ("ranking", "hr@10", "validation HR@10", 0.0))
    for k, (block, key, label, chance) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        # An ensemble teacher has one curve per member; the first stands for them.
        curves = {name: [(h["epoch"], h["val"][block][key]) for h in history[name]
                         if h.get("val") and not h.get("member")] for name in names}
        curves = {n: p for n, p in curves.items() if p}
        if max((len(p) for p in curves.values()), default=0) <= 1:
            # One epoch each (a smoke run): no curve to draw, so the values as bars from chance level.
            vals = [p[0][1] for p in curves.values()]
            ax.bar(range(len(vals)), [v - chance for v in vals], bottom=chance,
                   color=[MODEL_COLORS.get(n) for n in curves])
            for i, v in enumerate(vals):
                ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(vals)), list(curves), fontsize=7)
            ax.set_title(f"{label} after the only epoch (bars from {chance:g})", fontsize=9)
        else:
            for name, pts in curves.items():
                ax.plot(*zip(*pts), "-o", markersize=3, color=MODEL_COLORS.get(name), label=name)
            ax.set_xlabel("epoch")
            ax.set_title(label, fontsize=9)
            ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


# ------------------------------------------------------------------------------ main job
