"""Rerank latency through the full SDK path (SQLite log + cache, encode, model, sort).

    python benchmarks/sdk_rerank.py BUNDLE [BUNDLE ...] [--user 13] [--repeats 300]

A real MovieLens-100K user's events go into a BehaviorLog and the catalogue into an
ItemCache (one SQLite file in a temp folder); ``Ranker.rerank`` then scores 10, 100 and
500 cached items. Reports the p50 of the whole call and its parts (``meta``: encode =
log read + attribute lookups + encoding; model = backend calls incl. dtype casts).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from kdaliens.sdk import BehaviorLog, ItemCache, Ranker
from kdaliens.training.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--user", default="13", help="MovieLens user whose events fill the log (13 has 636)")
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    ds = load_dataset("movielens-100k")
    db = os.path.join(tempfile.mkdtemp(), "device.db")
    cache = ItemCache(db)
    cache.upsert(ds.items.to_dict("records"))
    log = BehaviorLog(db)
    inter = ds.interactions[ds.interactions.user_id == args.user].sort_values("timestamp")
    log.extend({"user_id": args.user, "item_id": r.item_id, "event": str(int(r.rating)), "ts": float(r.timestamp)}
               for r in inter.itertuples())
    items = list(ds.items.item_id)
    print(f"user {args.user}: {len(log)} events in the log; p50 over {args.repeats} calls, 1 thread")
    print(f"{'bundle':<24}{'cands':>6}{'total us':>10}{'encode us':>11}{'model us':>10}{'encode %':>10}")
    for b in args.bundles:
        ranker = Ranker.load(b, threads=1)
        for n in (10, 100, 500):
            cands = items[:n]
            for _ in range(30):
                ranker.rerank(args.user, cands, cache=cache, log=log)
            metas = [ranker.rerank(args.user, cands, cache=cache, log=log).meta for _ in range(args.repeats)]
            tot, enc, mod = (float(np.median([m[k] for m in metas])) for k in ("total_us", "encode_us", "model_us"))
            print(f"{os.path.basename(os.path.normpath(b)):<24}{n:>6}{tot:>10.0f}{enc:>11.0f}{mod:>10.0f}"
                  f"{100 * enc / tot:>9.0f}%")


if __name__ == "__main__":
    main()
