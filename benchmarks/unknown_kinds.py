"""What hiding event kinds and ids in training (``train.unknown_share``) buys and costs.

    python benchmarks/unknown_kinds.py [--shares 0,0.02,0.05] [--seeds 0,1] [--epochs 10]

Per share and seed, the plain student (default config, at most ``--epochs`` epochs, one
thread) is trained on MovieLens-100K and evaluated on the **validation** split three
ways: with the logged ratings as event kinds, with every kind unknown (the OOV id: an
app logging kinds the bundle never saw), and with every kind the spec's default kind (an
app logging none). Prints one JSON line per run and a table of HR@10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def one(share: float, seed: int, epochs: int) -> dict:
    import numpy as np
    import torch

    from kdaliens.sdk.features import OOV_ID
    from kdaliens.training.config import merge, preset
    from kdaliens.training.data import load_prepared
    from kdaliens.training.loop import Context, init_distributed
    from kdaliens.training.student_loop import StudentTrainer, evaluate_student

    torch.set_num_threads(1)
    cfg = merge(preset("default"), None, [f"train.unknown_share={share}", f"train.seed={seed}",
                                          f"train.epochs={epochs}", "train.threads=1"])
    prep = load_prepared("movielens-100k")
    ctx = Context(prep, cfg, "cpu")
    t0 = time.time()
    model = StudentTrainer(ctx, init_distributed(), lambda s: None).train("student_plain").model.eval()
    out = {"share": share, "seed": seed, "epochs": epochs, "train_s": round(time.time() - t0)}
    logged = prep.ev_event.copy()
    default = prep.spec.event_field.encode_one(prep.spec.default_event)
    try:
        for name, kinds in (("right", logged), ("unknown", np.full_like(logged, OOV_ID)),
                            ("default", np.full_like(logged, default))):
            prep.ev_event[:] = kinds  # every history gathered from now on reads these kinds
            with torch.no_grad():
                r = evaluate_student(model, ctx, "val")
            out[name] = {"hr@10": r["ranking"]["hr@10"], "ndcg@10": r["ranking"]["ndcg@10"], "auc": r["ctr"]["auc"]}
    finally:
        prep.ev_event[:] = logged
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shares", default="0,0.02,0.05")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=10)
    a = ap.parse_args(argv)
    rows = []
    for share in (float(s) for s in a.shares.split(",")):
        for seed in (int(s) for s in a.seeds.split(",")):
            rows.append(one(share, seed, a.epochs))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| unknown_share | seed | HR@10 right kinds | every kind unknown | every kind the default |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['share']:g} | {r['seed']} | {r['right']['hr@10']:.4f} | {r['unknown']['hr@10']:.4f} | "
              f"{r['default']['hr@10']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
