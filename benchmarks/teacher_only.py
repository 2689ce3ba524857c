"""Train only the teacher and report its validation metrics (sampled and full-catalogue).

    python benchmarks/teacher_only.py --data movielens-100k --seed 0 --set teacher.seq_encoder=dumn
    python benchmarks/teacher_only.py --long-history 300 --max-events 1500 --seed 0 \\
        --set teacher.seq_encoder=sam --set teacher.history_len=1000 --set train.epochs=3

For comparing teacher parts (encoders, DUMN's purification) on validation without
training the students. ``--long-history USERS`` writes the seeded synthetic long-history
log (``kdaliens.training.data.long_history``, seed 0) to ``runs/long_history_data/`` and
trains on it. Prints one ``RESULT {json}`` line: the validation metrics and train seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="movielens-100k")
    p.add_argument("--long-history", type=int, metavar="USERS", help="train on the synthetic long-history log")
    p.add_argument("--max-events", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = p.parse_args(argv)
    import torch

    from kdaliens.training.config import RunConfig, merge
    from kdaliens.training.data import load_prepared
    from kdaliens.training.loop import Context, DistEnv
    from kdaliens.training.teacher_loop import evaluate_teacher, train_teacher

    data = args.data
    if args.long_history:
        from kdaliens.training.data.long_history import LongHistoryConfig, write_recbole

        out = Path("runs/long_history_data") / f"u{args.long_history}_m{args.max_events}"
        if not out.exists():
            write_recbole(out, LongHistoryConfig(users=args.long_history, max_events=args.max_events, seed=0))
        data = str(out)
    cfg = merge(RunConfig(), None, [f"train.seed={args.seed}", *args.set])
    torch.manual_seed(args.seed)
    ctx = Context(load_prepared(data), cfg)
    t0 = time.time()
    res = train_teacher(ctx, DistEnv(), lambda s: print(s, flush=True))
    val = evaluate_teacher(res.model, ctx, "val", full=True)
    print("RESULT", json.dumps({"data": data, "seed": args.seed, "sets": args.set, "val": val,
                                "train_s": round(time.time() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
