"""``kdaliens-train``: train the teacher and the students, write RUN_DIR.

    kdaliens-train --data movielens-100k --out runs/ml100k [--config cfg.json] [--epochs N] [--seed S]

Distributed: ``torchrun --nproc_per_node 2 -m kdaliens.training --data ... --out ...``.
"""

from __future__ import annotations

import argparse
import sys

from kdaliens.sdk.errors import KdaliensError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdaliens-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="embedded dataset name (movielens-100k) or a path to a log")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--config", help="JSON file with any subset of the RunConfig keys")
    p.add_argument("--epochs", type=int, help="maximum epochs per model (default 30, early stopping on validation)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="retrain models whose checkpoints already exist")
    p.add_argument("--tiny", action="store_true", help="a tiny config for smoke runs (seconds)")
    return p


def _read_json(path: str) -> dict:
    import json

    from kdaliens.sdk.errors import InputError

    try:
        data = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the config ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config must be a JSON object")
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import RunConfig, tiny_config
    from .pipeline import run

    try:
        cfg = tiny_config() if args.tiny else RunConfig()
        if args.config:
            # The file's keys override the base config (the defaults, or --tiny's), section by section;
            # RunConfig.from_dict then rejects unknown keys with a clear message.
            base = cfg.to_dict()
            for k, v in _read_json(args.config).items():
                base[k] = {**base[k], **v} if isinstance(base.get(k), dict) and isinstance(v, dict) else v
            cfg = RunConfig.from_dict(base)
        run(args.data, args.out, cfg, epochs=args.epochs, seed=args.seed, force=args.force)
    except KdaliensError as e:
        print(f"kdaliens-train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
