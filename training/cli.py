"""``kdaliens-train``: train the teacher and the students, write RUN_DIR.

    kdaliens-train --data movielens-100k --out runs/ml100k [--preset tiny|default] [--config cfg.json]
                   [--set section.key=value ...] [--epochs N] [--seed S] [--device auto|cpu|cuda]
                   [--max-minutes N]

Every model trains epoch by epoch to early stopping on validation; the same data,
config and seed give the same models on a busy or an idle machine. ``--max-minutes``
opts into a wall-time budget instead (then the result depends on the machine's speed).

Config precedence: the preset, then ``--config`` (JSON with any subset of the keys),
then each ``--set`` in order, then ``--epochs``/``--seed``/``--device``/``--max-minutes``.
``--set`` values are parsed as JSON where they parse: ``--set teacher.dim=128
--set teacher.mlp=[256,128] --set distill.method=lrc``.

Distributed: ``torchrun --nproc_per_node 2 -m kdaliens.training --data ... --out ...``.
"""

from __future__ import annotations

import argparse
import json
import sys

from kdaliens.sdk.errors import KdaliensError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdaliens-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="embedded dataset name (movielens-100k) or a path to a log")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--preset", choices=("tiny", "default"), default=None,
                   help="base config: tiny (the tests' models, seconds) or default (the full models)")
    p.add_argument("--tiny", action="store_true", help="same as --preset tiny")
    p.add_argument("--config", help="JSON file with any subset of the RunConfig keys")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set teacher.dim=128")
    p.add_argument("--epochs", type=int, help="maximum epochs per model (default 30, early stopping on validation)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto: CUDA if present)")
    p.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="opt-in wall-time budget for the training loops (default: none, epoch-based)")
    p.add_argument("--force", action="store_true", help="retrain models whose checkpoints already exist")
    return p


def _read_json(path: str) -> dict:
    from kdaliens.sdk.errors import InputError

    try:
        data = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the config ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config must be a JSON object")
    return data


def config_from_args(args: argparse.Namespace):
    """The RunConfig the flags describe (see the module docstring for the precedence)."""
    from .config import merge, preset

    name = "tiny" if args.tiny and args.preset is None else (args.preset or "default")
    if args.tiny and args.preset not in (None, "tiny"):
        from kdaliens.sdk.errors import InputError

        raise InputError("--tiny and --preset default contradict each other")
    sets = list(args.sets)
    for key, value in (("epochs", args.epochs), ("seed", args.seed), ("device", args.device),
                       ("max_minutes", args.max_minutes)):
        if value is not None:
            sets.append(f"train.{key}={json.dumps(value)}")
    return merge(preset(name), _read_json(args.config) if args.config else None, sets)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .pipeline import run
    except ModuleNotFoundError as e:  # a device-only install
        print(f"kdaliens-train: error: {e.name} is not installed; install the server extra: "
              f'pip install -e ".[train]" (from a clone of the repository)', file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
        if cfg.train.max_minutes is not None:
            print(f"kdaliens-train: time budget {cfg.train.max_minutes} min (--max-minutes): models stop when "
                  f"their share runs out, so results depend on this machine's speed", file=sys.stderr)
        run(args.data, args.out, cfg)
    except KdaliensError as e:
        print(f"kdaliens-train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
