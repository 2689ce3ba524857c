"""``kdaliens-profile --plot``: latency against candidates (matplotlib, imported when drawing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import KdaliensError


class PlotError(KdaliensError):
    """A plot cannot be drawn (matplotlib missing, nothing to plot)."""


def plot_profiles(results: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Latency against candidates for one or more profiles on one figure (PNG, SVG, ... by suffix).

    Per profile: the SDK path (solid) and the bare model (dashed), p50 as a line and the
    p90-p99 range as a band.

    Raises:
        PlotError: matplotlib is not installed, or there is nothing to plot.
    """
    results = list(results)
    if not results or not any(r.get("rows") for r in results):
        raise PlotError("nothing to plot: no profile has rows")
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotError(f"plotting needs matplotlib, which does not import here ({e}): pip install matplotlib "
                        "(profiling itself does not need it)") from e
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    ax = fig.add_subplot()
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for k, p in enumerate(results):
        rows = sorted(p["rows"], key=lambda r: r["candidates"])
        x = [r["candidates"] for r in rows]
        color = colors[k % len(colors)]
        label = f"{p['backend']} {p.get('quantization', '')}".strip()
        if len(results) > 1:
            label += f" ({Path(p['bundle']).name})"
        for part, style, marker in (("sdk", "-", "o"), ("model", "--", "s")):
            ax.plot(x, [r[f"{part}_p50_us"] for r in rows], style, marker=marker, color=color, markersize=4,
                    label=f"{label}: {'SDK rerank' if part == 'sdk' else 'bare model'} p50")
            ax.fill_between(x, [r[f"{part}_p90_us"] for r in rows], [r[f"{part}_p99_us"] for r in rows],
                            color=color, alpha=0.12 if part == "sdk" else 0.08, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({r["candidates"] for p in results for r in p["rows"]})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("candidates per request")
    ax.set_ylabel("latency (us); band: p90 to p99")
    threads = sorted({p["threads"] for p in results})
    th = "thread" if threads == [1] else "threads"
    ax.set_title(title or f"kdaliens-profile: {', '.join(map(str, threads))} {th}, {results[0]['device']['machine']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_profile(result: Mapping[str, Any], path: str | Path) -> Path:
    """:func:`plot_profiles` for one profile."""
    return plot_profiles([result], path)
