"""Teacher cost against history length: the transformer (O(L²)) and SAM (O(L)), in one run.

    python benchmarks/long_history.py [--lengths 100,250,500,1000,2000] [--encoders transformer,sam]
        [--batch 16] [--candidates 100] [--runs 7] [--threads 1] [--out runs/long_history.json]

For each encoder and history length L it builds a default-size teacher network
(``TeacherConfig()`` with ``history_len = L``; a 5,000-item catalogue with two item
fields, random but valid ids) and times:

* ``forward``: one request batch (``--batch`` users, ``--candidates`` candidates each,
  a full history of L events), inference, median and p99 of ``--runs`` calls;
* ``train_step``: one training pass over ``--batch`` windows of L events (the causal
  encoder pass, every slot's user vector, forward and backward), median;
* ``peak_mb``: the growth of the process's peak resident memory during the forward and
  training calls (each (encoder, L) in its own fresh process, so peaks do not mix).

The ratio ``time(2000) / time(250)`` says how cost grows: about 8 is linear, about 64
quadratic. Numbers are per machine; compare the two encoders and the ratios, which come
from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

N_ITEMS = 5000


def _spec(length: int):
    from kdaliens.sdk.features import CategoricalField, FeatureSpec
    from kdaliens.sdk.history import HistorySpec

    return FeatureSpec(
        user_fields=(CategoricalField("gender", vocab=("F", "M")),),
        item_fields=(CategoricalField("item_id", vocab=tuple(str(i) for i in range(N_ITEMS))),
                     CategoricalField("topic", vocab=tuple(str(i) for i in range(50)))),
        history=HistorySpec(short_len=length, long_len=0),
        event_vocab=("1", "2", "3", "4", "5"))


def _inputs(spec, batch: int, length: int, candidates: int, prefix: str):
    import torch

    g = torch.Generator().manual_seed(0)
    gaps = spec.time_gap_field.cardinality

    def ids(card, *shape):
        return torch.randint(2, card, shape, generator=g)

    out = {"user_gender": ids(4, batch)}
    for f in spec.item_fields:
        out[f"{prefix}{f.name}"] = ids(f.cardinality, batch, length)
        out[f"cand_{f.name}"] = ids(f.cardinality, batch, candidates)
    out[f"{prefix}event"] = ids(spec.event_field.cardinality, batch, length)
    out[f"{prefix}gap"] = ids(gaps, batch, length)
    out[f"{prefix}mask"] = torch.ones(batch, length, dtype=torch.bool)
    if prefix == "hist_":
        out["hist_time_gap"] = ids(gaps, batch, length)
        out["query_gap"] = ids(gaps, batch)
    else:
        out["tgt_gap"] = ids(gaps, batch, length)
    return out


def measure(encoder: str, length: int, batch: int, candidates: int, runs: int) -> dict:
    """One (encoder, L) point, in this process."""
    import torch

    from kdaliens.training.config import TeacherConfig
    from kdaliens.training.models.teacher import TeacherRanker

    torch.manual_seed(0)
    spec = _spec(length)
    net = TeacherRanker(spec, TeacherConfig(history_len=length, seq_encoder=encoder))
    req = _inputs(spec, batch, length, candidates, "hist_")
    win = _inputs(spec, batch, length, candidates, "win_")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net.eval()
    times = []
    with torch.no_grad():
        net(req)  # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            net(req)
            times.append(time.perf_counter() - t0)
    net.train()
    steps = []
    for _ in range(max(2, runs // 2)):
        t0 = time.perf_counter()
        p = net.encode_windows(win)
        (p.user.square().mean() + p.key.mean()).backward()
        steps.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times.sort()
    steps.sort()
    return {"encoder": encoder, "L": length, "forward_ms_p50": 1e3 * times[len(times) // 2],
            "forward_ms_p99": 1e3 * times[min(len(times) - 1, int(0.99 * len(times)))],
            "train_step_ms_p50": 1e3 * steps[len(steps) // 2], "peak_mb": (peak - base) / 1024,
            "params": sum(p.numel() for p in net.parameters())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="100,250,500,1000,2000")
    p.add_argument("--encoders", default="transformer,sam")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/long_history.json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # "encoder:L": measure one point in this process
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        enc, length = args.one.split(":")
        print(json.dumps(measure(enc, int(length), args.batch, args.candidates, args.runs)))
        return 0
    rows = []
    lengths = [int(x) for x in args.lengths.split(",")]
    for enc in args.encoders.split(","):
        for length in lengths:
            cmd = [sys.executable, __file__, "--one", f"{enc}:{length}", "--batch", str(args.batch),
                   "--candidates", str(args.candidates), "--runs", str(args.runs), "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS":
                                                                           str(args.threads)})
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{enc:12s} L={length:5d}  forward p50 {row['forward_ms_p50']:8.1f} ms  p99 "
                  f"{row['forward_ms_p99']:8.1f}  train step {row['train_step_ms_p50']:8.1f} ms  "
                  f"peak +{row['peak_mb']:7.1f} MB", flush=True)
    ratios = {}
    for enc in args.encoders.split(","):
        by_l = {r["L"]: r for r in rows if r["encoder"] == enc}
        if 250 in by_l and 2000 in by_l:
            ratios[enc] = {k: by_l[2000][k] / by_l[250][k] for k in ("forward_ms_p50", "train_step_ms_p50")}
            print(f"{enc:12s} time(2000)/time(250): forward {ratios[enc]['forward_ms_p50']:.1f}x, "
                  f"train step {ratios[enc]['train_step_ms_p50']:.1f}x  (8 = linear, 64 = quadratic)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "ratios_2000_250": ratios}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
