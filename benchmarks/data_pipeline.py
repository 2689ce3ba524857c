"""Time loading and preprocessing of a dataset (cold, then from the cache).

    python benchmarks/data_pipeline.py [--data movielens-100k] [--repeats 5]

Reports medians over repeats; the cold runs use a fresh cache folder each time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from kdaliens.training.data import load_dataset, load_prepared, prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="movielens-100k")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    load_t, prep_t, cached_t = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ds = load_dataset(args.data)
        t1 = time.perf_counter()
        prepare(ds)
        t2 = time.perf_counter()
        load_t.append(t1 - t0)
        prep_t.append(t2 - t1)
    with tempfile.TemporaryDirectory() as d:
        load_prepared(args.data, cache_dir=d)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            load_prepared(args.data, cache_dir=d)
            cached_t.append(time.perf_counter() - t0)
    print(ds.summary())
    print(f"{'step':<28}{'median s':>10}{'max s':>10}")
    for name, ts in (("load (parse files)", load_t), ("preprocess (spec, splits)", prep_t),
                     ("load_prepared from cache", cached_t)):
        print(f"{name:<28}{statistics.median(ts):>10.3f}{max(ts):>10.3f}")


if __name__ == "__main__":
    main()
