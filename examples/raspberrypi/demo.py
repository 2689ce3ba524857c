#!/usr/bin/env python3
"""A kiosk on a Raspberry Pi (or any small Linux box): rerank the cached catalogue after every event.

The loop, with the public kdaliens SDK only (numpy plus one runtime; no torch):

1. load a bundle with ``Ranker.load`` (ONNX Runtime, LiteRT or ExecuTorch, as exported);
2. fill an ``ItemCache`` (a SQLite file) from a catalogue file;
3. replay one user's events, one at a time, into a ``BehaviorLog`` (another SQLite file);
4. after each event, ``Ranker.rerank`` the cached items the user has not seen yet and
   print the top K with the step's latency (model / encode / total, from ``result.meta``);
5. print the median and p99 latency of the steps.

By default the catalogue, the events and the user attributes are the MovieLens-100K files
shipped inside the kdaliens package (RecBole atomic format: ``ml-100k.item``,
``ml-100k.inter``, ``ml-100k.user``). Your own files can be CSV or JSON Lines:

* catalogue: one item per row, an ``item_id`` column plus the attributes the bundle's
  FeatureSpec names (``release_year``, ``class``, ...; a multi-valued attribute as a
  JSON list or a space-separated string) and optionally a ``title`` for display;
* events: ``user_id,item_id,timestamp[,rating][,event]`` (timestamp in Unix seconds or
  ISO 8601);
* users (``--users``, optional): ``user_id`` plus user attributes (``age``, ``gender``, ...).

Examples::

    python demo.py --bundle bundles/onnx
    python demo.py --bundle bundles/litert --user 42 --steps 20 --top 5
    python demo.py --bundle bundles/onnx --catalogue items.csv --events events.jsonl --user u7

Exit codes: 0 on success, 2 with a one-line message on a usage or data error (missing
bundle, unreadable file, unknown user, runtime not installed).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.resources
import io
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kdaliens.sdk import BehaviorLog, Bundle, ItemCache, KdaliensError, Ranker, normalize_token

# Runtimes the SDK's backends can load. "tflite_runtime" is not a separate SDK backend: the
# litert backend uses ai-edge-litert when it is installed and falls back to tflite-runtime.
BACKENDS = ("auto", "onnxruntime", "litert", "tflite_runtime", "executorch")
RUNTIME_MODULES = {"onnxruntime": ["onnxruntime"], "litert": ["ai_edge_litert", "tflite_runtime"],
                   "executorch": ["executorch"]}
RUNTIME_DISTS = {"onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert",
                 "tflite_runtime": "tflite-runtime", "executorch": "executorch"}
TITLE_KEYS = ("title", "movie_title", "name")


class DemoError(Exception):
    """A problem with the demo's input (a file, a user id): printed as one line, exit code 2."""


# ----------------------------------------------------------------------------------------
# Reading files: RecBole atomic (.item/.inter/.user), CSV, JSON Lines.


def embedded_movielens(suffix: str):
    """A file of the MovieLens-100K copy shipped in the kdaliens package (no torch import)."""
    return importlib.resources.files("kdaliens.training") / "datasets" / "movielens-100k" / f"ml-100k.{suffix}"


def read_text(source) -> str:
    """The text of a file (a Path or a package resource); UTF-8, else Latin-1."""
    try:
        with source.open("rb") as f:
            data = f.read()
    except OSError as e:
        raise DemoError(f"{source}: cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_rows(source) -> list[dict[str, Any]]:
    """Rows of a file as dicts; the format is picked by the file name, then the first line.

    * RecBole atomic (tab-separated, header ``name:type``): ``float`` columns become numbers,
      ``token_seq`` columns stay space-separated strings (the encoder splits them);
    * ``.jsonl`` / ``.json``: one JSON object per line;
    * anything else: CSV with a header line (``.tsv``: tab-separated).
    Empty values are left out of a row, so the encoder treats them as missing.
    """
    name = source.name.lower()
    text = read_text(source)
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DemoError(f"{source}: the file is empty")
    header = lines[0]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        rows = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DemoError(f"{source}, line {n}: not a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise DemoError(f"{source}, line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append({k: v for k, v in row.items() if v is not None and v != ""})
        return rows
    cols = header.split("\t")
    if len(cols) > 1 and all(":" in c for c in cols):  # RecBole atomic file
        names = [c.split(":", 1)[0] for c in cols]
        types = [c.split(":", 1)[1] for c in cols]
        rows = []
        for n, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            values = line.split("\t")
            if len(values) != len(names):
                raise DemoError(f"{source}, line {n}: expected {len(names)} tab-separated fields, got {len(values)}")
            row: dict[str, Any] = {}
            for key, kind, value in zip(names, types, values):
                value = value.strip()
                if value:
                    row[key] = parse_number(value, source, n, key) if kind == "float" else value
            rows.append(row)
        return rows
    delimiter = "\t" if name.endswith(".tsv") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = []
    for n, row in enumerate(reader, start=2):
        if None in row:  # more fields than the header
            raise DemoError(f"{source}, line {n}: more fields than the header has ({len(reader.fieldnames or [])})")
        rows.append({k.strip(): v.strip() for k, v in row.items() if k and v is not None and v.strip()})
    return rows


def parse_number(value: Any, source, line: int, key: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{source}, line {line}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise DemoError(f"{source}, line {line}: {key} must be finite, got {value!r}")
    return f


def parse_timestamp(value: Any, source, line: int) -> float:
    """Unix seconds, or an ISO-8601 date and time (UTC when it names no zone)."""
    try:
        return parse_number(value, source, line, "timestamp")
    except DemoError:
        pass
    try:
        dt = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise DemoError(f"{source}, line {line}: timestamp must be Unix seconds or ISO 8601, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def row_line(source, index: int) -> int:
    """The file line of row ``index`` (after a header, except in JSON Lines)."""
    return index + (1 if source.name.lower().endswith((".jsonl", ".json", ".ndjson")) else 2)


def load_catalogue(source) -> list[dict[str, Any]]:
    """Item dicts for ``ItemCache.upsert``: ``item_id`` plus raw attributes."""
    items = read_rows(source)
    for i, item in enumerate(items):
        if normalize_token(item.get("item_id")) is None:
            raise DemoError(f"{source}, line {row_line(source, i)}: the item has no item_id")
    if not items:
        raise DemoError(f"{source}: no items")
    return items


def load_user_events(source, user: str | None) -> tuple[str, list[dict[str, Any]]]:
    """One user's events, oldest first, as ``{"item_id", "event", "ts"}``.

    The event kind is the ``event`` column when there is one, else the rating (MovieLens:
    "1".."5", the event kinds the bundle was trained with), else "click".
    """
    rows = read_rows(source)
    if not rows:
        raise DemoError(f"{source}: no events (expected columns user_id,item_id,timestamp[,rating][,event])")
    ts_key = "timestamp" if "timestamp" in rows[0] else "ts"
    for key in ("user_id", "item_id", ts_key):
        if key not in rows[0]:
            raise DemoError(f"{source}: expected columns user_id,item_id,timestamp[,rating][,event]; "
                            f"got {','.join(rows[0])}")
    if user is None:
        user = normalize_token(rows[0]["user_id"])
    events = []
    for i, row in enumerate(rows):
        if normalize_token(row.get("user_id")) != user:
            continue
        line = row_line(source, i)
        if normalize_token(row.get("item_id")) is None:
            raise DemoError(f"{source}, line {line}: the event has no item_id")
        if ts_key not in row:
            raise DemoError(f"{source}, line {line}: the event has no {ts_key}")
        if "event" in row:
            kind = str(row["event"])
        elif "rating" in row:
            kind = normalize_token(parse_number(row["rating"], source, line, "rating"))
        else:
            kind = "click"
        events.append({"item_id": row["item_id"], "event": kind, "ts": parse_timestamp(row[ts_key], source, line)})
    if not events:
        raise DemoError(f"unknown user {user!r}: no events for this user in {source}")
    events.sort(key=lambda e: e["ts"])  # stable: equal times keep the file order
    return user, events


def load_user_features(source, user: str) -> dict[str, Any]:
    """The user's attributes (``age``, ``gender``, ...), or {} when the file does not list the user."""
    if source is None:
        return {}
    for row in read_rows(source):
        if normalize_token(row.get("user_id")) == user:
            return {k: v for k, v in row.items() if k != "user_id"}
    return {}


# ----------------------------------------------------------------------------------------
# Display helpers.


def title_of(item: dict[str, Any] | None) -> str:
    if not item:
        return "(not in the catalogue)"
    for key in TITLE_KEYS:
        if item.get(key):
            return str(item[key])
    return ""


def runtime_in_use(backend: str) -> str:
    """The runtime module a backend actually imported, with its version."""
    for module in RUNTIME_MODULES.get(backend, []):
        if module in sys.modules:
            try:
                return f"{RUNTIME_DISTS[module]} {importlib.metadata.version(RUNTIME_DISTS[module])}"
            except importlib.metadata.PackageNotFoundError:
                return module
    return backend


def ms(us: float | None) -> str:
    return "   n/a" if us is None else f"{us / 1000:6.2f}"


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


# ----------------------------------------------------------------------------------------
# The kiosk loop.


def run(args: argparse.Namespace, db_dir: Path) -> None:
    # 1. Read the input files first: a bad file or an unknown user fails before anything loads.
    catalogue_file = args.catalogue or embedded_movielens("item")
    events_file = args.events or embedded_movielens("inter")
    users_file = args.users
    if users_file is None:
        if args.events is None:
            users_file = embedded_movielens("user")
        elif args.events.suffix == ".inter" and args.events.with_suffix(".user").exists():
            users_file = args.events.with_suffix(".user")
    catalogue = load_catalogue(catalogue_file)
    user, events = load_user_events(events_file, None if args.user is None else normalize_token(args.user))
    features = load_user_features(users_file, user)

    # 2. The model. Ranker.load verifies the bundle (sha256 of every file) before loading it.
    backend = "litert" if args.backend == "tflite_runtime" else args.backend
    bundle = Bundle.load(args.bundle)
    ranker = Ranker.load(bundle, backend=backend, threads=args.threads)
    print(f"bundle     {bundle.path} ({bundle.target}, {bundle.quantization}, "
          f"at most {ranker.max_candidates} candidates per model call)")
    print(f"runtime    {ranker.backend.name}: {runtime_in_use(ranker.backend.name)}, {args.threads} thread(s)")
    if args.backend == "tflite_runtime" and "tflite_runtime" not in sys.modules:
        print("           (ai-edge-litert is installed, so the litert backend uses it instead of tflite-runtime)")

    # 3. The catalogue, cached on the device, the user, and their behaviour log.
    with ItemCache(db_dir / "items.db", max_items=None) as cache, BehaviorLog(db_dir / "behavior.db") as log:
        n = cache.upsert(catalogue)
        print(f"catalogue  {n} items from {catalogue_file} -> {cache.path}")
        wanted = [f.name for f in ranker.spec.user_fields]
        shown = ", ".join(f"{k} {features[k]}" for k in wanted if k in features) or "no attributes"
        print(f"user       {user} ({shown}): {len(events)} events in {events_file}")

        done = len(log.events(user))  # with --db-dir, a second run goes on where the last one stopped
        todo = events[done:done + args.steps]
        print(f"log        {log.path}: {done} events of this user already logged, replaying {len(todo)}")
        if not todo:
            print("nothing to replay: every event of this user is in the log already")
            return

        # 4. One event at a time: log it, then rerank what the user has not seen yet.
        seen = {normalize_token(e["item_id"]) for e in log.events(user)}
        all_items = cache.item_ids()
        totals, models, encodes = [], [], []
        for step, event in enumerate(todo, start=1):
            t0 = time.perf_counter()
            log.append(user, event["item_id"], event=event["event"], ts=event["ts"])
            append_us = (time.perf_counter() - t0) * 1e6
            seen.add(normalize_token(event["item_id"]))
            candidates = [i for i in all_items if i not in seen]
            # "now" is just after the event, so the replayed history has realistic time gaps.
            result = ranker.rerank(user, candidates, cache=cache, log=log, user_features=features,
                                   k=args.top, now=event["ts"] + 1.0)
            meta = result.meta

            item = cache.get(event["item_id"])
            print(f"\nstep {step}/{len(todo)}  {when(event['ts'])}  event {event['event']}  "
                  f"item {event['item_id']}  {title_of(item)}")
            print(f"  latency ms: model {ms(meta.get('model_us'))} | encode {ms(meta.get('encode_us'))} | "
                  f"total {ms(meta.get('total_us'))} | log append {ms(append_us)}   "
                  f"({meta['n_candidates']} candidates, {meta['chunks']} model calls, {meta['n_history']} history slots)")
            if meta.get("fallback"):
                print(f"  warning: the model call failed, items are in catalogue order ({meta.get('error')})")
            titles = cache.get_many([item_id for item_id, _ in result])
            for rank, (item_id, score) in enumerate(result, start=1):
                print(f"  {rank:3d}. {item_id:>8}  {score:7.3f}  {title_of(titles.get(item_id))}")
            totals.append(meta["total_us"])
            models.append(meta.get("model_us", math.nan))
            encodes.append(meta.get("encode_us", math.nan))

        # 5. Summary.
        print(f"\nsummary    {len(totals)} steps, {len(all_items)} cached items, backend {ranker.backend.name}")
        for name, values in (("total", totals), ("model", models), ("encode", encodes)):
            v = np.asarray(values, dtype=np.float64)
            print(f"  {name:<7} median {np.nanmedian(v) / 1000:7.2f} ms   p99 {np.nanpercentile(v, 99) / 1000:7.2f} ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Kiosk demo: rerank the cached catalogue after each of a user's events (kdaliens SDK).")
    ap.add_argument("--bundle", required=True, type=Path, metavar="DIR", help="a bundle folder from kdaliens-export")
    ap.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="runtime (default: the one the bundle was exported for)")
    ap.add_argument("--steps", type=int, default=10, metavar="N", help="events to replay (default: 10)")
    ap.add_argument("--user", metavar="ID", help="user whose events are replayed (default: the first in the file)")
    ap.add_argument("--catalogue", type=Path, metavar="FILE",
                    help="items: CSV, JSON Lines or RecBole .item (default: the embedded MovieLens-100K)")
    ap.add_argument("--events", type=Path, metavar="FILE",
                    help="events: CSV, JSON Lines or RecBole .inter (default: the embedded MovieLens-100K)")
    ap.add_argument("--users", type=Path, metavar="FILE",
                    help="user attributes: CSV, JSON Lines or RecBole .user (default: the embedded MovieLens-100K "
                         "with the default events, else none)")
    ap.add_argument("--top", type=int, default=5, metavar="K", help="items shown per step (default: 5)")
    ap.add_argument("--db-dir", type=Path, metavar="DIR",
                    help="keep the SQLite files (items.db, behavior.db) here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1, metavar="T", help="runtime threads (default: 1)")
    args = ap.parse_args(argv)
    for name in ("steps", "top", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.db_dir is not None:
            args.db_dir.mkdir(parents=True, exist_ok=True)
            run(args, args.db_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="kdaliens-demo-") as tmp:
                run(args, Path(tmp))
    except (KdaliensError, DemoError) as e:  # BundleError, BackendUnavailable, InputError, StoreError, ...
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
