"""``kdaliens-train``: train the teacher and the students, write RUN_DIR.

    kdaliens-train --data movielens-100k --out runs/ml100k [--preset tiny|default] [--config cfg.json]
                   [--set section.key=value ...] [--epochs N] [--seed S] [--device auto|cpu|cuda]
                   [--max-minutes N]

Every model trains epoch by epoch to early stopping on validation; the same data,
config and seed give the same models on a busy or an idle machine. ``--max-minutes``
opts into a wall-time budget instead (then the result depends on the machine's speed).

Config precedence: the preset, then ``--config`` (JSON, YAML or TOML with any subset of
the keys), then each ``--set`` in order, then ``--columns``/``--user-cols``/``--item-cols``,
then ``--epochs``/``--seed``/``--device``/``--max-minutes``.

Your own log (CSV or Parquet): ``--columns user_id=uid,item_id=sku,timestamp=ts`` names
its columns (also ``rating=``, ``label=``, ``event=``), ``--user-cols region,age`` and
``--item-cols category`` its attribute columns; the run prints which columns it used and
which it ignored. The same in a config file: ``{"data": {"columns": {"user_id": "uid"},
"user_columns": ["region", "age"], "item_columns": ["category"]}}``.
``--set`` values are parsed as JSON where they parse: ``--set teacher.dim=128
--set teacher.mlp=[256,128] --set distill.method=lrc``.

The seed papers' parts are one ``--set`` each: the teacher's sequence encoder
(``teacher.seq_encoder=transformer|sam|dumn|spnn``) and the distillation recipe
(``distill.method=default|spnn|lrc|emkd``, or several of the last three joined by ``+``).

Distributed: ``torchrun --nproc_per_node 2 -m kdaliens.training --data ... --out ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdaliens.sdk.errors import KdaliensError
from kdaliens.sdk.extras import help_text, run_tool

from .quiet import add_output_flags, quiet_third_party, tool_log


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdaliens-train", description=help_text(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="embedded dataset name (movielens-100k) or a path to a log")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--preset", choices=("tiny", "default"), default=None,
                   help="base config: tiny (the tests' models, seconds) or default (the full models)")
    p.add_argument("--tiny", action="store_true", help="same as --preset tiny")
    p.add_argument("--config", help="a config file (.json, .yaml/.yml or .toml) with any subset of the keys")
    p.add_argument("--columns", metavar="OURS=YOURS,...",
                   help="your CSV/Parquet column names, e.g. user_id=uid,item_id=sku,timestamp=ts "
                        "(also rating=, label=, event=); unnamed ones are guessed from common spellings")
    p.add_argument("--user-cols", dest="user_cols", metavar="COL,...",
                   help="columns that are user attributes, e.g. region,age")
    p.add_argument("--item-cols", dest="item_cols", metavar="COL,...",
                   help="columns that are item attributes, e.g. category")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set teacher.dim=128")
    p.add_argument("--epochs", type=int, help="maximum epochs per model (default 30, early stopping on validation)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto: CUDA if present)")
    p.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="opt-in wall-time budget for the training loops (default: none, epoch-based)")
    p.add_argument("--force", action="store_true", help="retrain models whose checkpoints already exist")
    add_output_flags(p)
    return p


def read_config_file(path: str) -> dict:
    """A config file as a dict: JSON, YAML (``.yaml``/``.yml``) or TOML (``.toml``), by its suffix."""
    from kdaliens.sdk.errors import InputError

    suffix = Path(path).suffix.lower()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the config ({e})") from e
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ModuleNotFoundError as e:
        raise InputError(f"{path}: reading a {suffix} config needs {e.name}: pip install {e.name}") from None
    except Exception as e:  # each parser has its own error types
        raise InputError(f"{path}: not a valid {suffix.lstrip('.') or 'JSON'} config: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config must be a mapping of sections, got {type(data).__name__}")
    return data


def _column_sets(args: argparse.Namespace) -> list[str]:
    """``--columns``, ``--user-cols`` and ``--item-cols`` as ``--set data...`` items."""
    from kdaliens.sdk.errors import InputError

    sets = []
    if args.columns is not None:
        pairs = [p.strip() for p in args.columns.split(",") if p.strip()]
        if not pairs:
            raise InputError("--columns is empty; give OURS=YOURS pairs, e.g. user_id=uid,item_id=sku")
        for pair in pairs:
            ours, eq, theirs = pair.partition("=")
            ours, theirs = ours.strip(), theirs.strip()
            if not eq or not theirs:
                raise InputError(f"--columns: {pair!r} is not OURS=YOURS (e.g. user_id=uid)")
            # An unknown OURS is refused by DataConfig, as it is in a config file.
            sets.append(f"data.columns.{ours}={json.dumps(theirs)}")
    for flag, key, value in (("--user-cols", "user_columns", args.user_cols),
                             ("--item-cols", "item_columns", args.item_cols)):
        if value is not None:
            cols = [c.strip() for c in value.split(",") if c.strip()]
            if not cols:
                raise InputError(f"{flag} is empty; give column names, e.g. {flag} region,age")
            sets.append(f"data.{key}={json.dumps(cols)}")
    return sets


def config_from_args(args: argparse.Namespace):
    """The RunConfig the flags describe (see the module docstring for the precedence)."""
    from .config import merge, preset

    name = "tiny" if args.tiny and args.preset is None else (args.preset or "default")
    if args.tiny and args.preset not in (None, "tiny"):
        from kdaliens.sdk.errors import InputError

        raise InputError("--tiny and --preset default contradict each other")
    sets = list(args.sets) + _column_sets(args)
    for key, value in (("epochs", args.epochs), ("seed", args.seed), ("device", args.device),
                       ("max_minutes", args.max_minutes)):
        if value is not None:
            sets.append(f"train.{key}={json.dumps(value)}")
    return merge(preset(name), read_config_file(args.config) if args.config else None, sets)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # On a device-only install: one line naming the extra, exit status 2.
    return run_tool("kdaliens-train", "train", ("torch", "pandas", "torchao"), lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    if not args.verbose:
        quiet_third_party()
    from .pipeline import run

    try:
        cfg = config_from_args(args)
        if cfg.train.max_minutes is not None:
            print(f"kdaliens-train: time budget {cfg.train.max_minutes} min (--max-minutes): models stop when "
                  f"their share runs out, so results depend on this machine's speed", file=sys.stderr)
        run(args.data, args.out, cfg, log=tool_log(args.quiet))
    except KdaliensError as e:
        print(f"kdaliens-train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
