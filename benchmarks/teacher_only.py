"""Train only the teacher and report its validation metrics (sampled and full-catalogue).

    python benchmarks/teacher_only.py --data movielens-100k --seed 0 --set teacher.seq_encoder=dumn
    python benchmarks/teacher_only.py --long-history 300 --max-events 1500 --seed 0 \\
        --set teacher.seq_encoder=sam --set teacher.history_len=1000 --set train.epochs=3

For comparing teacher parts (encoders, DUMN's purification) on validation without
training the students. ``--long-history USERS`` writes the seeded synthetic long-history
log (``kdaliens.training.data.long_history``, seed 0) to ``runs/long_history_data/`` and
trains on it. Prints one ``RESULT {json}`` line: the validation metrics (and with ``--test`` the
test metrics), train seconds and epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def by_recall(model, ctx, split: str, length: int) -> dict:
    """Sampled HR@10 on held-out items the user consumed in the ``length`` events before
    (re-consumption) and on the others, with the share of each.

    The sampled and full-catalogue protocols rank the held-out item against items the
    user never touched, so a model that recalls the history ranks every re-consumed item
    first; this split shows how much of a figure that recall is.
    """
    import numpy as np

    from kdaliens.training.batches import HistoryMatches
    from kdaliens.training.evaluation import teacher_scorer
    from kdaliens.training.metrics import ranks_of_positive

    r = ctx.prep.rank[split]
    rows = np.arange(len(r["user"]))
    scores = teacher_scorer(model, ctx)(r, rows, r["items"], "interaction")
    hit = ranks_of_positive(scores) < 10
    events = r["start"] + r["n_past"]
    seen = HistoryMatches(ctx.prep).lookup(events, r["items"][:, :1], length)[0][:, 0] > 0
    return {"length": length, "reconsumed_share": float(seen.mean()),
            "hr@10_reconsumed": float(hit[seen].mean()) if seen.any() else None,
            "hr@10_new": float(hit[~seen].mean()) if (~seen).any() else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="movielens-100k")
    p.add_argument("--long-history", type=int, metavar="USERS", help="train on the synthetic long-history log")
    p.add_argument("--max-events", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--test", action="store_true", help="also report the test split (once, for the final runs)")
    p.add_argument("--by-recall", type=int, metavar="L",
                   help="split sampled HR@10 by whether the user consumed the held-out item in the L events before")
    args = p.parse_args(argv)
    import torch

    from kdaliens.training.config import RunConfig, merge
    from kdaliens.training.data import load_prepared
    from kdaliens.training.loop import Context, DistEnv
    from kdaliens.training.teacher_loop import evaluate_teacher, train_teacher

    data = args.data
    if args.long_history:
        from kdaliens.training.data.long_history import data_folder

        data = str(data_folder(args.long_history, args.max_events))
    cfg = merge(RunConfig(), None, [f"train.seed={args.seed}", *args.set])
    torch.manual_seed(args.seed)
    ctx = Context(load_prepared(data), cfg)
    t0 = time.time()
    res = train_teacher(ctx, DistEnv(), lambda s: print(s, flush=True))
    val = evaluate_teacher(res.model, ctx, "val", full=True)
    out = {"data": data, "seed": args.seed, "sets": args.set, "val": val, "train_s": round(time.time() - t0, 1),
           "epochs": res.epochs, "best_epoch": res.best_epoch}
    if args.test:
        out["test"] = evaluate_teacher(res.model, ctx, "test", full=True)
    if args.by_recall:
        for split in ("val", "test") if args.test else ("val",):
            out[f"{split}_by_recall"] = by_recall(res.model, ctx, split, args.by_recall)
    print("RESULT", json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
