"""Scale check: a 20k-user x 20k-item SASRec-format log, end to end with the default config.

    python benchmarks/scale.py [--out runs/scale] [--users 20000] [--items 20000] [--seed 0]
        [--set section.key=value ...]

It writes the seeded synthetic log (``kdaliens.training.data.synthetic``; nothing is
downloaded) to ``OUT/synthetic.txt``, runs ``kdaliens-train`` on it into ``OUT/run``
(teacher, plain student, distilled student, int8 QAT, evaluation), and reports per
model the median epoch time, the epochs trained, the wall time of training and of the
final evaluation, and the test metrics (sampled and full-catalogue ranking), as
``OUT/scale.md`` and ``OUT/scale.json``. A rerun reuses finished models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

MODELS = ("teacher", "student_plain", "student_kd", "student_kd_int8")


def report(run_dir: Path, wall_s: float, stats: dict) -> tuple[str, dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    rows = {}
    for name in MODELS:
        m = metrics.get(name)
        if not m:
            continue
        ep = sorted(r["epoch_seconds"] for r in history.get(name, []))
        ev = [r["eval_seconds"] for r in history.get(name, [])]
        rows[name] = {"epoch_s_median": ep[len(ep) // 2] if ep else None, "epochs": m.get("epochs"),
                      "train_s": m.get("train_seconds"), "val_eval_s_median": sorted(ev)[len(ev) // 2] if ev else None,
                      "test_eval_s": m.get("test_eval_seconds"), "ctr": m["ctr"], "ranking": m["ranking"],
                      "ranking_full": m["ranking_full"]}
    lines = [f"Synthetic log: {stats['interactions']:,} interactions, {stats['users']:,} users, "
             f"{stats['items_seen']:,} items; whole run {wall_s / 60:.1f} min.", "",
             "| model | s/epoch (median) | epochs | train s | AUC | HR@10 | NDCG@10 | full HR@10 | full NDCG@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        f = r["ranking_full"]
        lines.append(f"| {name} | {r['epoch_s_median']} | {r['epochs']} | {r['train_s']} | {r['ctr']['auc']:.4f} | "
                     f"{r['ranking']['hr@10']:.4f} | {r['ranking']['ndcg@10']:.4f} | {f['hr@10']:.4f} | "
                     f"{f['ndcg@10']:.4f} ({f['users']} users) |")
    return "\n".join(lines) + "\n", {"wall_s": wall_s, "data": stats, "models": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/scale")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    a = ap.parse_args(argv)
    from kdaliens.training.config import RunConfig, merge
    from kdaliens.training.data.synthetic import SyntheticConfig, write_sasrec
    from kdaliens.training.pipeline import run

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "synthetic.txt"
    stats = write_sasrec(data, SyntheticConfig(users=a.users, items=a.items, seed=a.seed))
    cfg = merge(RunConfig(), None, a.sets + [f"train.seed={a.seed}"])
    t0 = time.perf_counter()
    run(str(data), out / "run", cfg)
    md, js = report(out / "run", time.perf_counter() - t0, stats)
    (out / "scale.md").write_text(md)
    (out / "scale.json").write_text(json.dumps(js, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
