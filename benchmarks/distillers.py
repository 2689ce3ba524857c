"""Every distillation recipe (``distill.method``) against the plain student, and their ablations.

    python benchmarks/distillers.py [--data movielens-100k] [--seeds 3] [--out runs/distillers]
        [--labels default,spnn,...] [--variant LABEL SECTION.KEY=VALUE ...]
        [--targets executorch,onnx,tflite] [--threads 1] [--preset default|tiny] [--set ...]

Rows (``--labels`` picks some; ``--variant`` adds one):

* ``default``: the default recipe (logit KL, click soft labels, feature MSE);
* ``spnn``, ``lrc``, ``emkd``: each seed paper's recipe (``distill.method=NAME``);
* ablations of each recipe's key part: ``spnn-nogate`` (the knowledge detector's gate
  off: every sample and layer weighted 1), ``lrc-onestage`` (contrastive and labels
  together from the first epoch), ``lrc-noperturb`` (no gradient perturbation),
  ``emkd-1`` (an ensemble of one network: no mutual KL, no cross-network contrast).

Per seed, ``default`` is a full ``kdaliens-train`` run into ``OUT/default/seed<S>/``
(teacher, plain student, distilled student, int8 student). Every other row reuses its
plain student and, unless the row trains its own teacher (EMKD), its teacher: copied
in under the row's config hash, so only what the recipe changes is trained. Each row's
int8 student is exported to every ``--targets`` target through the parity gate.

The report, ``OUT/distillers.md`` and ``OUT/distillers.json``: per row, mean ± std over
the seeds of AUC, GAUC, HR@10 and NDCG@10 (100 sampled items, and the full catalogue)
of the fp32 and int8 distilled students on the test split; training time (the
distilled student's, and the teacher's where the row trains one); the per-seed
difference of HR@10 from the plain student and from ``default``; the exports that
passed; then the teachers (the default one, and each EMKD ensemble). ``OUT/distillers.png``
plots each row's per-seed HR@10 difference from the plain student. Runs and exports are
reused on a rerun, so an interrupted benchmark resumes where it stopped.

``distillers.json`` also keeps every row's per-seed figures (``per_seed``). ``--merge
FILE`` adds the rows and seeds of an earlier ``distillers.json`` that this invocation did
not run (same data and settings, checked), so seeds run in separate processes or on
separate machines make one table; with ``--merge``, ``--seeds ,`` runs nothing and only
summarizes. Training is deterministic at a fixed thread count, so a seed's figures do
not depend on where it ran (the training times do).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from runs_common import export_int8, mean_std, parse_seeds, share_models

METRICS = (("ctr", "auc"), ("ctr", "gauc"), ("ranking", "hr@10"), ("ranking", "ndcg@10"),
           ("ranking_full", "hr@10"), ("ranking_full", "ndcg@10"))
TARGETS = ("executorch", "onnx", "tflite")
ROWS = {
    "default": ["distill.method=default"],
    "spnn": ["distill.method=spnn"],
    "lrc": ["distill.method=lrc"],
    "emkd": ["distill.method=emkd"],
    "spnn-nogate": ["distill.method=spnn", "distill.spnn_gate=false"],
    "lrc-onestage": ["distill.method=lrc", "distill.lrc_stage1_epochs=0"],
    "lrc-noperturb": ["distill.method=lrc", "distill.lrc_perturb=0"],
    "emkd-1": ["distill.method=emkd", "distill.emkd_members=1"],
}


def _own_teacher(sets: list[str]) -> bool:
    return any(s.startswith("distill.method=") and "emkd" in s for s in sets)


def compact(record: dict) -> dict:
    """The part of one row's per-seed record that :func:`summarize` reads (what ``per_seed`` keeps),
    metrics to 6 decimals (a table shows 4)."""
    models = {}
    for model, m in record["metrics"].items():
        if not isinstance(m, dict) or "ranking" not in m:
            continue
        models[model] = {b: {k: round(m[b][k], 6) for bb, k in METRICS if bb == b}
                         for b in dict.fromkeys(b for b, _ in METRICS)}
        models[model].update({k: m.get(k) for k in ("train_seconds", "params")})
    return {"metrics": models, "exports": {t: {"passed": e["passed"]} for t, e in record["exports"].items()},
            "own_teacher": record["own_teacher"]}


def merge_results(results: dict[str, dict[int, dict]], rows: dict[str, list[str]], path: Path,
                  made_with: dict) -> list[str]:
    """Add to ``results`` (and ``rows``) the rows and seeds of an earlier ``distillers.json``
    that ``results`` lacks; returns them as 'label/seed'. Raises ValueError when that run
    differs in any of ``made_with`` (data, preset, settings, threads) or in a row's settings."""
    old = json.loads(path.read_text())
    if "per_seed" not in old:
        raise ValueError(f"{path}: no per_seed figures (written by an older distillers.py); rerun its seeds")
    for key, mine in made_with.items():
        if old.get(key) != mine:
            raise ValueError(f"{path}: made with {key}={old.get(key)!r}, this run has {mine!r}")
    added = []
    for label, per_seed in old["per_seed"].items():
        if label in rows and rows[label] != old["rows"][label]:
            raise ValueError(f"{path}: row {label!r} had settings {old['rows'][label]}, here {rows[label]}")
        rows.setdefault(label, old["rows"][label])
        for seed, rec in per_seed.items():
            if int(seed) not in results.get(label, {}):
                results.setdefault(label, {})[int(seed)] = rec
                added.append(f"{label}/{seed}")
    return added


def summarize(results: dict[str, dict[int, dict]]) -> dict:
    """Per row: per model and metric the per-seed values, times, differences, exports."""
    out: dict = {}
    base = results.get("default", {})
    for label, per_seed in results.items():
        seeds = sorted(per_seed)
        m = {s: per_seed[s]["metrics"] for s in seeds}
        row: dict = {"seeds": seeds, "models": {}}
        for model in ("student_kd", "student_kd_int8", "student_plain", "teacher"):
            row["models"][model] = {f"{b}.{k}": [m[s][model][b][k] for s in seeds if model in m[s]] for b, k in METRICS}
        row["student_kd_train_s"] = [m[s]["student_kd"].get("train_seconds") for s in seeds]
        row["teacher_train_s"] = [m[s]["teacher"].get("train_seconds") for s in seeds]
        row["own_teacher"] = per_seed[seeds[0]]["own_teacher"]
        row["teacher_params"] = m[seeds[0]]["teacher"]["params"]
        def hr(s: int, model: str, m: dict = m) -> float:
            return m[s][model]["ranking"]["hr@10"]

        row["hr10_minus_plain"] = {model: [round(hr(s, model) - hr(s, "student_plain"), 4) for s in seeds]
                                   for model in ("student_kd", "student_kd_int8")}
        row["hr10_minus_default"] = {model: [round(hr(s, model) - base[s]["metrics"][model]["ranking"]["hr@10"], 4)
                                             for s in seeds if s in base]
                                     for model in ("student_kd", "student_kd_int8")}
        row["exports"] = {s: per_seed[s]["exports"] for s in seeds}
        out[label] = row
    return out


def _signed(xs: list[float]) -> str:
    return " / ".join(f"{x:+.4f}" for x in xs) if xs else "-"


def to_markdown(summary: dict, title: str) -> str:
    cols = ["AUC", "GAUC", "HR@10", "NDCG@10", "full HR@10", "full NDCG@10"]
    lines = [f"## {title}", "", "Test split; mean ± std over the seeds. Train s: the distilled student's training "
             "(median over seeds; + the teacher's where the row trains its own). HR@10 differences per seed.", "",
             "| distiller | student | " + " | ".join(cols) + " | train s | HR@10 - plain | HR@10 - default | exports |",
             "|---|---|" + "---|" * len(cols) + "---|---|---|---|"]
    plain = None
    for label, row in summary.items():
        exports = [e for per in row["exports"].values() for e in per.values()]
        ok = f"{sum(e['passed'] for e in exports)}/{len(exports)}"
        kd_s = statistics.median(x for x in row["student_kd_train_s"] if x is not None)
        t_s = statistics.median(x for x in row["teacher_train_s"] if x is not None)
        time_s = f"{kd_s:.0f}" + (f" + {t_s:.0f}" if row["own_teacher"] else "")
        for model, name in (("student_kd", "fp32"), ("student_kd_int8", "int8")):
            cells = [mean_std(row["models"][model][f"{b}.{k}"]) for b, k in METRICS]
            lines.append(f"| {label if name == 'fp32' else ''} | {name} | " + " | ".join(cells)
                         + f" | {time_s if name == 'fp32' else ''} | {_signed(row['hr10_minus_plain'][model])} | "
                         + f"{_signed(row['hr10_minus_default'][model]) if label != 'default' else ''} | "
                         + f"{ok if name == 'int8' else ''} |")
        if plain is None and row["models"]["student_plain"]["ranking.hr@10"]:
            plain = row["models"]["student_plain"]
    if plain:
        lines.append("| (no teacher) | plain | " + " | ".join(mean_std(plain[f"{b}.{k}"]) for b, k in METRICS)
                     + " | | | | |")
    lines += ["", "Teachers:", "", "| teacher | params | " + " | ".join(cols) + " | train s |",
              "|---|---|" + "---|" * len(cols) + "---|"]
    for label, row in summary.items():
        if label == "default" or row["own_teacher"]:
            name = "default teacher" if label == "default" else f"{label} ensemble"
            t_s = statistics.median(x for x in row["teacher_train_s"] if x is not None)
            lines.append(f"| {name} | {row['teacher_params']:,} | "
                         + " | ".join(mean_std(row["models"]["teacher"][f"{b}.{k}"]) for b, k in METRICS)
                         + f" | {t_s:.0f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path | None:
    """Per row, each seed's HR@10 minus the plain student's (dots) and their mean (bar),
    for the fp32 and the int8 distilled student; None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    labels = list(summary)
    fig = Figure(figsize=(max(6.0, 1.1 * len(labels)), 3.8), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for k, (model, color) in enumerate((("student_kd", "#1f77b4"), ("student_kd_int8", "#17becf"))):
        x = [i + (k - 0.5) * 0.36 for i in range(len(labels))]
        diffs = [summary[lb]["hr10_minus_plain"][model] for lb in labels]
        ax.bar(x, [statistics.fmean(d) for d in diffs], width=0.34, color=color, alpha=0.6,
               label="fp32" if k == 0 else "int8")
        for xi, d in zip(x, diffs):
            ax.plot([xi] * len(d), d, "o", color="black", markersize=3)
    ax.axhline(0.0, color="#444444", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8, rotation=20)
    ax.set_ylabel("HR@10 - plain student", fontsize=8)
    ax.set_title("distilled student vs plain student, per seed (dots) and mean (bars); test split", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="movielens-100k")
    ap.add_argument("--labels", default=",".join(ROWS), help=f"rows to run, of {', '.join(ROWS)}")
    ap.add_argument("--variant", nargs="+", action="append", metavar=("LABEL", "SET"),
                    help="one more row: a label and its SECTION.KEY=VALUE settings")
    ap.add_argument("--seeds", default="3", help="a count N (seeds 0..N-1) or a comma list (one seed S: 'S,')")
    ap.add_argument("--out", default="runs/distillers")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--preset", default="default", choices=("tiny", "default"))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--merge", action="append", default=[], type=Path, metavar="FILE",
                    help="an earlier distillers.json whose rows and seeds join the table (repeatable)")
    a = ap.parse_args(argv)
    from kdaliens.sdk.errors import KdaliensError
    from kdaliens.training.config import merge, preset
    from kdaliens.training.pipeline import config_hash, run

    unknown = [x for x in a.labels.split(",") if x.strip() and x.strip() not in ROWS]
    if unknown:
        ap.error(f"--labels: unknown rows {unknown}; have {', '.join(ROWS)} (--variant adds others)")
    rows = {"default": ROWS["default"]}  # every other row borrows from it
    rows.update({x.strip(): ROWS[x.strip()] for x in a.labels.split(",") if x.strip()})
    for v in a.variant or []:
        rows[v[0]] = list(v[1:])
    seeds = parse_seeds(a.seeds)
    if not seeds and not a.merge:
        ap.error(f"--seeds {a.seeds!r} gives no seed (a count N >= 1 runs seeds 0..N-1; seed 0 alone is '0,')")
    targets = [t for t in a.targets.split(",") if t.strip()]
    out = Path(a.out)
    results: dict[str, dict[int, dict]] = {}
    made_with = {"data": a.data, "preset": a.preset, "sets": a.sets, "threads": a.threads}
    try:
        for s in seeds:
            first = out / "default" / f"seed{s}"
            for label, sets in rows.items():
                cfg = merge(preset(a.preset), None, [*a.sets, *sets, f"train.seed={s}", f"train.threads={a.threads}"])
                run_dir = out / label / f"seed{s}"
                own = _own_teacher(sets)
                share_models(first, run_dir, ["student_plain"] + ([] if own else ["teacher"]),
                             config_hash(cfg, a.data))
                print(f"== {label} seed {s} -> {run_dir}", flush=True)
                t0 = time.perf_counter()
                metrics = run(a.data, run_dir, cfg)
                exports = {}
                for t in targets:
                    exports[t] = export_int8(run_dir, t)
                    print(f"   export {t}: {'passed' if exports[t]['passed'] else 'REFUSED'}", flush=True)
                results.setdefault(label, {})[s] = compact({"metrics": metrics, "exports": exports,
                                                            "own_teacher": own})
                print(f"   {label} seed {s}: {time.perf_counter() - t0:.0f}s", flush=True)
        for path in a.merge:
            added = merge_results(results, rows, path, made_with)
            print(f"merged from {path}: {', '.join(added) or 'nothing new'}", flush=True)
    except (KdaliensError, ValueError, OSError) as e:
        print(f"distillers: error: {e}", file=sys.stderr)
        return 2
    order = [*(lb for lb in ROWS if lb in rows), *(lb for lb in rows if lb not in ROWS)]
    results = {label: dict(sorted(results[label].items())) for label in order if label in results}
    summary = summarize(results)
    title = f"{a.data}: distillers" + (f" ({' '.join(a.sets)})" if a.sets else "")
    md = to_markdown(summary, title)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distillers.json").write_text(json.dumps({**made_with, "rows": rows, "summary": summary,
                                                     "per_seed": results}, indent=1))
    (out / "distillers.md").write_text(md)
    print(md)
    png = plot(summary, out / "distillers.png")
    print(f"wrote {out / 'distillers.md'}, {out / 'distillers.json'}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
