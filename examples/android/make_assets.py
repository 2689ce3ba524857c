"""Put a bundle and a small item catalogue into the Android sample's assets.

Usage (from the repository root, after ``kdaliens-train`` and ``kdaliens-export --target executorch``):

    python examples/android/make_assets.py --bundle bundles/executorch

It writes ``examples/android/app/src/main/assets/``:

* ``manifest.json`` and the model file it names (``model.pte``), copied from the verified bundle;
* ``catalogue.json``: the most-rated items of the dataset with their attributes (and titles,
  for MovieLens), one user's attributes and latest events (the app's first history), and the
  event kind a tap logs.

The catalogue needs the training extra (``pip install -e ".[train]"``) to read the dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

from kdaliens.sdk import Bundle
from kdaliens.sdk.extras import run_tool
from kdaliens.sdk.features import normalize_token

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "app" / "src" / "main" / "assets"


def _clean(value):
    """JSON-safe attribute values: NaN (pandas' missing value) becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def _titles(data: str) -> dict[str, str]:
    """Item titles of the embedded MovieLens-100K (its loader drops the title column)."""
    if data.lower() != "movielens-100k":
        return {}
    from kdaliens.training.data.loaders import embedded_path

    path = embedded_path("movielens-100k") / "ml-100k.item"
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    if "movie_title" not in header:
        return {}
    i_id, i_title = header.index("item_id"), header.index("movie_title")
    out = {}
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) > max(i_id, i_title):
            out[cols[i_id]] = cols[i_title]
    return out


def catalogue(bundle: Bundle, data: str, n_items: int, user: str | None, n_history: int) -> dict:
    from kdaliens.training.data import load_dataset

    spec = bundle.spec
    ds = load_dataset(data)
    inter = ds.interactions
    popular = inter["item_id"].map(normalize_token).value_counts().index[:n_items].tolist()
    items_by_id = {normalize_token(r["item_id"]): r for r in ds.items.to_dict("records")}
    titles = _titles(data)
    items = []
    for iid in popular:
        row = {k: _clean(v) for k, v in items_by_id.get(iid, {}).items()}
        row["item_id"] = iid
        if iid in titles:
            row["title"] = titles[iid]
        items.append(row)

    users = ds.users.to_dict("records") if ds.users is not None else []
    uid = user if user is not None else (normalize_token(users[0][spec.user_id_field]) if users else None)
    features = next((r for r in users if normalize_token(r.get(spec.user_id_field)) == uid), {})
    features = {k: _clean(v) for k, v in features.items() if k != spec.user_id_field}

    history = []
    if uid is not None and n_history > 0:
        mine = inter[inter["user_id"].map(normalize_token) == uid].sort_values("timestamp").tail(n_history)
        for r in mine.to_dict("records"):
            kind = normalize_token(_clean(r.get("rating"))) if "rating" in r else None
            if kind is not None and spec.event_vocab and kind not in spec.event_vocab:
                kind = None  # no kind: the app's encoder reads it as the bundle's default kind
            history.append({"item_id": normalize_token(r["item_id"]), "event": kind, "ts": float(r["timestamp"])})

    vocab = list(spec.event_vocab)
    tap = "click" if not vocab or "click" in vocab else vocab[-1]
    return {"source": data, "user": features, "tap_event": tap, "history": history, "items": items}


def main(argv: list[str] | None = None) -> int:
    # The catalogue reads the dataset with the [train] extra: without it, one line and exit 2.
    return run_tool("make_assets.py", "train", ("pandas",), lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="an ExecuTorch bundle folder written by kdaliens-export")
    ap.add_argument("--data", default="movielens-100k", help="dataset of the catalogue (name or path)")
    ap.add_argument("--items", type=int, default=200, help="items in the catalogue (the most-rated ones)")
    ap.add_argument("--user", default=None, help="user whose attributes and events seed the app (default: the first)")
    ap.add_argument("--history", type=int, default=20, help="that user's latest events to seed the log with")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the assets folder")
    args = ap.parse_args(argv)

    bundle = Bundle.load(args.bundle)  # verifies every artifact's sha256
    if bundle.target != "executorch":
        raise SystemExit(f"{args.bundle} targets {bundle.target!r}; the Android sample runs ExecuTorch bundles")
    cat = catalogue(bundle, args.data, args.items, args.user, args.history)  # first: nothing half-copied on failure
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle.path / "manifest.json", args.out / "manifest.json")
    shutil.copyfile(bundle.model_path, args.out / bundle.manifest["model_file"])
    (args.out / "catalogue.json").write_text(json.dumps(cat, ensure_ascii=False, allow_nan=False, indent=1),
                                             encoding="utf-8")
    size = (args.out / bundle.manifest["model_file"]).stat().st_size
    print(f"wrote {args.out}: manifest.json, {bundle.manifest['model_file']} ({size / 1024:.0f} KB), "
          f"catalogue.json ({len(cat['items'])} items, {len(cat['history'])} events, tap logs {cat['tap_event']!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
