"""The quickstart's report: latency rows, the checks against the product's bars, ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The bars the report checks the int8 student against (one request, one thread).
BAR_CANDIDATES = 100
BAR_SPEEDUP = 10.0
BAR_P50_US = 300.0


def format_demo(d: dict) -> str:
    lines = [f"user {d['user']} ({d['n_history']} past events; latest: "
             + "; ".join(e["title"] or e["item_id"] for e in d["recent"]) + ")"]
    for j, t in enumerate(d["top"], 1):
        mark = "  <- watched next" if t["item_id"] == d["next"]["item_id"] else ""
        lines.append(f"  {j:>2}. {t['title'] or t['item_id']:<48.48} {t['score']:>8.3f}{mark}")
    rating = d["next"]["rating"]
    lines.append(f"  what they did next: {d['next']['title'] or d['next']['item_id']}"
                 + (f" (rated {rating:g})" if rating is not None else "")
                 + f"; the model put it at {d['next_rank']} of {d['n_candidates']}"
                 + f"  [{d['backend']}, {d['latency_us']['total_us'] / 1e3:.2f} ms]")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ report
def latency_rows(torch_res: dict | None, profiles: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    if torch_res:
        for model, quant in (("teacher", "none"), ("student", "none")):
            for r in torch_res[model]:
                rows.append({"model": model, "backend": "torch", "quantization": quant, "candidates": r["candidates"],
                             "p50_us": round(r["p50_us"], 1), "p99_us": round(r["p99_us"], 1)})
    for p in profiles.values():
        for r in p["rows"]:
            rows.append({"model": "student", "backend": p["backend"], "quantization": p["quantization"],
                         "candidates": r["candidates"], "p50_us": round(r["model_p50_us"], 1),
                         "p99_us": round(r["model_p99_us"], 1), "sdk_p50_us": round(r["sdk_p50_us"], 1),
                         "sdk_p99_us": round(r["sdk_p99_us"], 1)})
    return rows


def _row(rows: list[dict], model: str, backend: str, n: int) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["backend"] == backend and r["candidates"] == n), None)


def checks(rows: list[dict], bundles: dict[str, dict]) -> tuple[dict[str, float], list[dict]]:
    teacher = _row(rows, "teacher", "torch", BAR_CANDIDATES)
    speedup = {}
    for r in rows:
        if r["model"] == "student" and r["candidates"] == BAR_CANDIDATES and teacher:
            speedup[r["backend"] if r["quantization"] == "int8" else f"{r['backend']} fp32"] = round(
                teacher["p50_us"] / r["p50_us"], 1)
    et = _row(rows, "student", "executorch", BAR_CANDIDATES)
    out = [
        {"name": f"teacher/torch and student/executorch timed at {BAR_CANDIDATES} candidates",
         "value": bool(teacher and et), "target": "both present", "met": bool(teacher and et)},
        {"name": f"student/executorch speed-up over teacher/torch at {BAR_CANDIDATES} candidates (p50)",
         "value": speedup.get("executorch"), "target": f">= {BAR_SPEEDUP:g}x",
         "met": bool(speedup.get("executorch") and speedup["executorch"] >= BAR_SPEEDUP)},
        {"name": f"student/executorch p50 at {BAR_CANDIDATES} candidates (us)", "value": et and et["p50_us"],
         "target": f"<= {BAR_P50_US:g}", "met": bool(et and et["p50_us"] <= BAR_P50_US)},
    ]
    for t, b in bundles.items():
        p = b.get("parity") or {}
        if "auc_exported" in p:
            d = abs(p["auc_exported"] - p["auc_reference"])
            out.append({"name": f"{t} int8 parity: AUC exported vs reference, absolute difference", "value": round(d, 5),
                        "target": "<= 0.002", "met": d <= 0.002})
    return speedup, out


def bundle_summary(out: Path, manifests: dict[str, dict]) -> dict[str, dict]:
    res = {}
    for t, m in manifests.items():
        d = out / "bundles" / t
        res[t] = {"path": str(d.relative_to(out)), "quantization": m["quantization"], "model_file": m["model_file"],
                  "model_bytes": (d / m["model_file"]).stat().st_size,
                  "bundle_bytes": sum(f.stat().st_size for f in d.iterdir() if f.is_file()),
                  "parity": {k: v for k, v in m["parity"].items() if not isinstance(v, (list, dict))}}
    return res


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def format_report_md(rep: dict) -> str:
    L = ["# kdaliens quickstart report", "",
         f"`{rep['command']}` on {rep['device']['cpu'] or rep['device']['machine']} "
         f"({rep['device']['cpu_count']} cores), {rep['created']}. Data: {rep['data']}.", ""]
    if rep["failures"]:
        L += ["**Failed steps:** " + "; ".join(f"{f['step']}: {f['error']}" for f in rep["failures"]), ""]
    if rep["metrics"]:
        L += ["## Accuracy (test split)", "",
              "| model | AUC | GAUC | logloss | HR@10 | NDCG@10 | full HR@10 | full NDCG@10 | params | size |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in rep["metrics"].items():
            f = m.get("ranking_full") or {}
            full = " | ".join(f"{f[k]:.4f}" if k in f else "-" for k in ("hr@10", "ndcg@10"))
            L.append(f"| {name} | {m['ctr']['auc']:.4f} | {m['ctr']['gauc']:.4f} | {m['ctr']['logloss']:.4f} | "
                     f"{m['ranking']['hr@10']:.4f} | {m['ranking']['ndcg@10']:.4f} | {full} | {m['params']:,} | "
                     f"{m['size_bytes'] / 1024:.1f} KB |")
        L += ["", "AUC/GAUC/logloss: click given interaction on the held-out last 10% of each user's ratings. "
              "HR@10/NDCG@10: each user's last item among 100 items they never touched; full HR@10/NDCG@10: "
              "the same item among every item the user never touched.", "",
              "![accuracy](accuracy.png)", ""]
    if rep["bundles"]:
        L += ["## Bundles (int8)", "", "Bundle = the folder a device installs: the model file and `manifest.json` (ExecuTorch's "
              "`model.etrecord`, a profiling aid for `kdaliens-profile`, is beside it in `<bundle>.debug/`). "
              "Parity: the held-out CTR test split scored by the target's runtime and by the PyTorch reference.", "",
              "| target | model file | bundle | parity requests | AUC reference | AUC exported | max abs diff |",
              "|---|---|---|---|---|---|---|"]
        for t, b in rep["bundles"].items():
            p = b["parity"]
            L.append(f"| {t} | {b['model_file']} {b['model_bytes'] / 1024:.1f} KB | {b['bundle_bytes'] / 1024:.1f} KB | "
                     f"{_fmt(p.get('requests'), 0)} | {_fmt(p.get('auc_reference'))} | {_fmt(p.get('auc_exported'))} | "
                     f"{_fmt(p.get('max_abs_diff'), 6)} |")
        L.append("")
    if rep["latency"]:
        L += ["## Latency (1 thread, model call; SDK = the whole `Ranker.rerank` with SQLite stores)", "",
              "| model | backend | quant | candidates | p50 us | p99 us | SDK p50 us | SDK p99 us |",
              "|---|---|---|---|---|---|---|---|"]
        for r in rep["latency"]:
            L.append(f"| {r['model']} | {r['backend']} | {r['quantization']} | {r['candidates']} | {r['p50_us']:.0f} | "
                     f"{r['p99_us']:.0f} | {_fmt(r.get('sdk_p50_us'), 0)} | {_fmt(r.get('sdk_p99_us'), 0)} |")
        if rep["speedup_at_100"]:
            L += ["", f"Speed-up over the eager teacher at {BAR_CANDIDATES} candidates (p50): "
                  + ", ".join(f"{k} {v:g}x" for k, v in rep["speedup_at_100"].items()) + "."]
        L += ["", "![latency](latency.png)", ""]
    if rep["checks"]:
        L += ["## Checks", "", "| check | value | target | met |", "|---|---|---|---|"]
        L += [f"| {c['name']} | {_fmt(c['value'], 5 if 'parity' in c['name'] else 1)} | {c['target']} | "
              f"{_fmt(c['met'])} |" for c in rep["checks"]]
        L.append("")
    if rep["demo"]:
        L += ["## Reranking real users on the device path", "",
              "Candidates: the item each user interacted with next, among 100 items they never touched, "
              "shuffled; reranked by the ExecuTorch bundle through `kdaliens.sdk`.", "", "```"]
        L += [format_demo(d) for d in rep["demo"]]
        L += ["```", ""]
    L += ["## Steps", "", "| step | seconds | reused |", "|---|---|---|"]
    L += [f"| {k} | {v['seconds']:.1f} | {_fmt(v['reused'])} |" for k, v in rep["steps"].items()]
    L += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if v) + ".", ""]
    return "\n".join(L)
