"""From a :class:`~kdaliens.training.data.loaders.Dataset` to model-ready arrays.

:func:`prepare` builds, in order:

1. the item catalogue and user table, and a :class:`~kdaliens.sdk.FeatureSpec` whose
   vocabularies come from the training split (items first seen later are out of
   vocabulary, as on a device) and whose numeric buckets are training quantiles;
2. a flat, time-ordered event store (every interaction of every user, grouped by user)
   that histories are gathered from with the SDK's sampler;
3. the *CTR* protocol: per user, in time order, the last 10% of interactions (at least
   one) are test, the 10% before them validation, the rest training; explicit ratings
   >= 4 are clicks, implicit data gets sampled unobserved items as negatives;
4. the *ranking* protocol: leave-one-out (the last interaction is test, the one before
   it validation), each against 100 sampled items the user never touched (SASRec).

Everything is encoded with the SDK's :class:`~kdaliens.sdk.FeatureEncoder`, and the
result is cached on disk (``$KDALIENS_CACHE`` or ``~/.cache/kdaliens``) under a key of
the source files' bytes and the settings, so a second run loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import (
    CategoricalField,
    FeatureEncoder,
    FeatureSpec,
    MultiField,
    NumericField,
)
from kdaliens.sdk.history import HistorySpec

from ..config import DataConfig, SplitConfig
from .loaders import EMBEDDED, Dataset, describe_columns, embedded_path, load_dataset

PREP_VERSION = 2
IMPLICIT_EVENT = "interact"
SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Model-ready arrays. Indices into ``item_ids`` and ``user_ids`` are *catalogue* rows.

    Attributes:
        spec: the feature spec (vocabularies from training data; default history).
        item_ids / user_ids: raw ids of the catalogue rows, as strings.
        item_arrays / user_arrays: the encoder's output for every catalogue row.
        ev_user, ev_item, ev_ts, ev_event, ev_label: the flat event store, grouped by
            user (``user_offsets``), time-ordered within a user.
        ctr: split name -> dict of ``user``, ``item``, ``ts``, ``label``, ``start``,
            ``n_past`` (the sample's past events are ``ev[start:start+n_past]``).
        rank: ``val``/``test`` -> dict of ``user``, ``items`` (U, 1 + negatives; the
            held-out item first), ``ts``, ``start``, ``n_past``.
        implicit: whether labels were sampled.
        meta: counts and settings for reports.
    """

    spec: FeatureSpec
    item_ids: np.ndarray
    user_ids: np.ndarray
    item_arrays: dict[str, np.ndarray]
    user_arrays: dict[str, np.ndarray]
    ev_user: np.ndarray
    ev_item: np.ndarray
    ev_ts: np.ndarray
    ev_event: np.ndarray
    ev_label: np.ndarray
    user_offsets: np.ndarray
    ctr: dict[str, dict[str, np.ndarray]]
    rank: dict[str, dict[str, np.ndarray]]
    implicit: bool
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def event_items(self) -> dict[str, np.ndarray]:
        """Encoded item fields of every event in the store (for the encoder's gather)."""
        return {k: v[self.ev_item] for k, v in self.item_arrays.items()}

    # ---------------------------------------------------------------- (de)serialization
    def save(self, folder: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "item_ids": self.item_ids.astype(str), "user_ids": self.user_ids.astype(str),
            "ev_user": self.ev_user, "ev_item": self.ev_item, "ev_ts": self.ev_ts, "ev_event": self.ev_event,
            "ev_label": self.ev_label, "user_offsets": self.user_offsets,
        }
        for k, v in self.item_arrays.items():
            arrays[f"item__{k}"] = v
        for k, v in self.user_arrays.items():
            arrays[f"user__{k}"] = v
        for s, d in self.ctr.items():
            for k, v in d.items():
                arrays[f"ctr__{s}__{k}"] = v
        for s, d in self.rank.items():
            for k, v in d.items():
                arrays[f"rank__{s}__{k}"] = v
        np.savez(folder / "arrays.npz", **arrays)
        (folder / "spec.json").write_text(self.spec.to_json(indent=1))
        (folder / "meta.json").write_text(json.dumps({"implicit": self.implicit, "meta": self.meta}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> Prepared:
        spec = FeatureSpec.from_json((folder / "spec.json").read_text())
        m = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        ctr: dict[str, dict[str, np.ndarray]] = {}
        rank: dict[str, dict[str, np.ndarray]] = {}
        items, users = {}, {}
        for k, v in a.items():
            parts = k.split("__")
            if parts[0] == "ctr":
                ctr.setdefault(parts[1], {})[parts[2]] = v
            elif parts[0] == "rank":
                rank.setdefault(parts[1], {})[parts[2]] = v
            elif parts[0] == "item" and len(parts) == 2:
                items[parts[1]] = v
            elif parts[0] == "user" and len(parts) == 2:
                users[parts[1]] = v
        return cls(spec=spec, item_ids=a["item_ids"].astype(object), user_ids=a["user_ids"].astype(object),
                   item_arrays=items, user_arrays=users, ev_user=a["ev_user"], ev_item=a["ev_item"],
                   ev_ts=a["ev_ts"], ev_event=a["ev_event"], ev_label=a["ev_label"],
                   user_offsets=a["user_offsets"], ctr=ctr, rank=rank, implicit=bool(m["implicit"]),
                   meta=m["meta"])


# ------------------------------------------------------------------------------ spec
def _quantile_boundaries(values: np.ndarray, n_buckets: int) -> tuple[float, ...]:
    v = values[np.isfinite(values)]
    if len(v) == 0 or n_buckets < 2:
        return ()
    qs = np.quantile(v, np.linspace(0, 1, n_buckets + 1)[1:-1])
    return tuple(float(x) for x in np.unique(qs))


def event_tokens(ds: Dataset) -> np.ndarray:
    """The behaviour-log ``event`` of every interaction: the log's own event column (missing
    values: "interact"), else the rating ("4"), click/view, or "interact"."""
    from kdaliens.sdk.features import normalize_token

    if "event" in ds.interactions:
        return np.array([normalize_token(x) or IMPLICIT_EVENT for x in ds.interactions["event"]], dtype=object)
    if ds.implicit:
        return np.full(len(ds.interactions), IMPLICIT_EVENT, dtype=object)
    r = ds.interactions["rating"].to_numpy()
    if np.isnan(r).all():  # labelled CTR data without ratings
        lab = ds.interactions["label"].to_numpy()
        return np.where(lab > 0.5, "click", "view").astype(object)
    return np.array([normalize_token(x) or IMPLICIT_EVENT for x in r], dtype=object)


def build_feature_spec(ds: Dataset, train_rows: np.ndarray, cfg: SplitConfig,
                       history: HistorySpec | None = None) -> FeatureSpec:
    """Vocabularies and buckets from the training rows of ``ds.interactions``."""
    inter = ds.interactions.iloc[train_rows]
    train_items = set(inter["item_id"])

    def fields_for(table, kinds: Mapping[str, str], restrict: set | None) -> list:
        out = []
        for name, kind in kinds.items():
            col = table[name]
            if restrict is not None:
                col = col[table.iloc[:, 0].isin(restrict)]
            if kind == "numeric":
                vals = np.array([float(x) if _is_num(x) else np.nan for x in col], dtype=np.float64)
                out.append(NumericField(name, boundaries=_quantile_boundaries(vals, cfg.numeric_buckets)))
            elif kind == "multi":
                mf = MultiField(name, max_len=1, hash_buckets=1)
                toks: dict[str, int] = {}
                longest = 1
                for v in col:
                    parts = mf.split(v)
                    longest = max(longest, len(parts))
                    for t in parts:
                        toks[str(t).strip()] = toks.get(str(t).strip(), 0) + 1
                vocab = tuple(sorted(toks))
                out.append(MultiField(name, max_len=min(longest, cfg.multi_max_len), vocab=vocab))
            else:
                from kdaliens.sdk.features import normalize_token
                toks = sorted({t for t in (normalize_token(v) for v in col) if t is not None})
                if len(toks) > cfg.hash_threshold:
                    out.append(CategoricalField(name, hash_buckets=cfg.hash_threshold))
                else:
                    out.append(CategoricalField(name, vocab=tuple(toks)))
        return out

    item_vocab = tuple(sorted(train_items, key=_id_sort_key))
    item_fields = [CategoricalField("item_id", vocab=item_vocab)]
    item_fields += fields_for(ds.items, ds.item_field_kinds, restrict=None)
    user_fields = fields_for(ds.users, ds.user_field_kinds, restrict=None)
    events = event_tokens(ds)[train_rows]
    kinds, counts = np.unique(np.asarray(events, dtype=str), return_counts=True) if len(events) else ([], [])
    count = {str(k): int(c) for k, c in zip(kinds, counts)}
    event_vocab = tuple(sorted(count, key=_id_sort_key))
    # An event a device logs without a kind reads as the most common kind (ties: the first in the vocabulary).
    default_event = max(event_vocab, key=lambda k: count[k]) if event_vocab else None
    return FeatureSpec(user_fields=tuple(user_fields), item_fields=tuple(item_fields), item_id_field="item_id",
                       user_id_field="user_id", history=history or HistorySpec(), event_vocab=event_vocab,
                       default_event=default_event)


def _is_num(x: Any) -> bool:
    try:
        return x is not None and np.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _id_sort_key(s: str) -> tuple:
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


# ------------------------------------------------------------------------------ splits
def _sample_unobserved(rng: np.random.Generator, n_items: int, touched: np.ndarray, k: int) -> np.ndarray:
    """k distinct catalogue rows not in ``touched`` (rejection sampling; fine when sparse)."""
    free = n_items - len(touched)
    if free < k:
        raise InputError(f"a user touched {len(touched)} of {n_items} items: cannot sample {k} unobserved ones")
    touched_set = set(touched.tolist())
    out: list[int] = []
    seen: set[int] = set()
    if free < 4 * k:  # dense user: sample from the complement directly
        comp = np.setdiff1d(np.arange(n_items), touched)
        return rng.choice(comp, size=k, replace=False)
    while len(out) < k:
        for c in rng.integers(0, n_items, size=2 * k).tolist():
            if c not in touched_set and c not in seen:
                seen.add(c)
                out.append(c)
                if len(out) == k:
                    break
    return np.asarray(out, dtype=np.int64)


def prepare(ds: Dataset, cfg: SplitConfig | None = None) -> Prepared:
    """Build the catalogue, spec, event store and both protocols' splits (no caching)."""
    cfg = cfg or SplitConfig()
    inter = ds.interactions
    # Stable sort: time order within a user, file order breaks ties.
    order = np.lexsort((np.arange(len(inter)), inter["timestamp"].to_numpy(), inter["user_id"].to_numpy().astype(str)))
    inter = inter.iloc[order].reset_index(drop=True)
    users_sorted = inter["user_id"].to_numpy()
    # Users in order of appearance in the sorted log.
    _, first_idx = np.unique(users_sorted.astype(str), return_index=True)
    user_ids = users_sorted[np.sort(first_idx)]
    user_row = {u: i for i, u in enumerate(user_ids)}
    ev_user = np.array([user_row[u] for u in users_sorted], dtype=np.int64)
    counts = np.bincount(ev_user, minlength=len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pos = np.arange(len(inter)) - offsets[ev_user]  # position within the user

    split = _ctr_split(counts, ev_user, pos, cfg)

    train_rows = np.flatnonzero(split == 0)
    # The spec is built on a dataset view in sorted order.
    sorted_ds = Dataset(ds.name, inter, ds.users, ds.items, ds.user_field_kinds, ds.item_field_kinds,
                        ds.implicit, ds.sources, ds.columns)
    spec = build_feature_spec(sorted_ds, train_rows, cfg)
    enc = FeatureEncoder(spec)

    # Catalogue: every item of the item table plus any item only seen in the log.
    known = list(ds.items["item_id"])
    extra = sorted(set(inter["item_id"]) - set(known), key=_id_sort_key)
    item_ids = np.array(known + extra, dtype=object)
    item_row = {it: i for i, it in enumerate(item_ids)}
    item_records = ds.items.to_dict("records") + [{"item_id": it} for it in extra]
    item_arrays = enc.encode_items(item_records)
    urec = {r["user_id"]: r for r in ds.users.to_dict("records")}
    user_arrays = enc.encode_users([urec.get(u, {}) for u in user_ids])

    ev_item = np.array([item_row[i] for i in inter["item_id"]], dtype=np.int64)
    ev_ts = inter["timestamp"].to_numpy(dtype=np.float64)
    ev_event = enc.encode_events(list(event_tokens(sorted_ds)))
    ev_label = inter["label"].to_numpy(dtype=np.float64)

    rng = np.random.default_rng(cfg.seed)
    touched = [np.unique(ev_item[offsets[u]:offsets[u + 1]]) for u in range(len(user_ids))]

    ctr = _ctr_splits(split, ev_user, ev_item, ev_ts, ev_label, offsets, pos, ds.implicit, touched, len(item_ids),
                      cfg, rng)
    eligible = np.flatnonzero(counts >= 3)  # need a history, a validation and a test item
    rank = _rank_splits(eligible, ev_item, ev_ts, offsets, pos, touched, len(item_ids), cfg, rng)

    meta = {
        "dataset": ds.name, "n_interactions": int(len(inter)), "n_users": int(len(user_ids)),
        "n_items": int(len(item_ids)), "implicit": bool(ds.implicit), "split": cfg.to_dict(),
        "ctr_sizes": {k: int(len(v["label"])) for k, v in ctr.items()},
        "ctr_click_rate": {k: float(np.mean(v["label"])) if len(v["label"]) else None for k, v in ctr.items()},
        "rank_users": int(len(eligible)), "prep_version": PREP_VERSION, "columns": ds.columns,
    }
    return Prepared(spec=spec, item_ids=item_ids, user_ids=user_ids.astype(object), item_arrays=item_arrays,
                    user_arrays=user_arrays, ev_user=ev_user, ev_item=ev_item, ev_ts=ev_ts, ev_event=ev_event,
                    ev_label=ev_label, user_offsets=offsets, ctr=ctr, rank=rank, implicit=ds.implicit, meta=meta)


def _ctr_split(counts: np.ndarray, ev_user: np.ndarray, pos: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """Per event: 0 train, 1 val, 2 test; each user's events are [train | val | test] in time order."""
    n_test = np.maximum(1, np.floor(counts * cfg.ctr_test_frac + 1e-9)).astype(np.int64)
    n_val = np.floor(counts * cfg.ctr_val_frac + 1e-9).astype(np.int64)
    n_val = np.where((cfg.ctr_val_frac > 0) & (counts - n_test >= 2), np.maximum(1, n_val), n_val)
    n_val = np.minimum(n_val, np.maximum(counts - n_test - 1, 0))
    cu = counts[ev_user]
    split = np.zeros(len(ev_user), dtype=np.int8)
    split[pos >= cu - n_test[ev_user] - n_val[ev_user]] = 1
    split[pos >= cu - n_test[ev_user]] = 2
    return split


def _ctr_splits(split, ev_user, ev_item, ev_ts, ev_label, offsets, pos, implicit: bool, touched, n_items: int,
                cfg: SplitConfig, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """The CTR protocol's rows per split; implicit data gets sampled unobserved negatives."""
    ctr: dict[str, dict[str, np.ndarray]] = {}
    for s_id, s_name in enumerate(SPLITS):
        rows = np.flatnonzero(split == s_id)
        d = {"user": ev_user[rows], "item": ev_item[rows], "ts": ev_ts[rows], "label": ev_label[rows],
             "start": offsets[ev_user[rows]], "n_past": pos[rows].astype(np.int64)}
        if implicit:
            d["label"] = np.ones(len(rows), dtype=np.float64)
            k = cfg.implicit_negatives
            negs = np.concatenate([_sample_unobserved(rng, n_items, touched[u], k)
                                   for u in d["user"].tolist()]) if len(rows) else np.zeros(0, np.int64)
            rep = {key: np.repeat(v, k) for key, v in d.items()}
            rep["item"] = negs.astype(np.int64)
            rep["label"] = np.zeros(len(negs), dtype=np.float64)
            d = {key: np.concatenate([d[key], rep[key]]) for key in d}
        ctr[s_name] = d
    return ctr


def _rank_splits(eligible, ev_item, ev_ts, offsets, pos, touched, n_items: int, cfg: SplitConfig,
                 rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Leave-one-out ranking rows: each eligible user's second-last (val) and last (test) item."""
    rank: dict[str, dict[str, np.ndarray]] = {}
    for s_name, back in (("val", 2), ("test", 1)):
        rows = offsets[eligible + 1] - back
        negs = np.stack([_sample_unobserved(rng, n_items, touched[u], cfg.rank_negatives)
                         for u in eligible.tolist()]) if len(eligible) else np.zeros((0, cfg.rank_negatives), np.int64)
        rank[s_name] = {"user": eligible.astype(np.int64), "items": np.concatenate([ev_item[rows][:, None], negs], 1),
                        "ts": ev_ts[rows], "start": offsets[eligible], "n_past": pos[rows].astype(np.int64)}
    return rank


# ------------------------------------------------------------------------------ cache
def _print_columns(prep: Prepared, log: Callable[[str], None] = print) -> None:
    line = describe_columns(prep.meta.get("columns") or {}, prep.meta["n_interactions"])
    if line:
        log(f"[data] {line}; {prep.meta['rank_users']:,} of {prep.meta['n_users']:,} users have the 3 events "
              f"the ranking evaluation needs")


def cache_root() -> Path:
    """``$KDALIENS_CACHE`` or ``~/.cache/kdaliens``."""
    env = os.environ.get("KDALIENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kdaliens"


def _source_files(name_or_path: str | os.PathLike) -> list[Path]:
    key = str(name_or_path)
    if key.lower() in EMBEDDED:
        return sorted(p for p in embedded_path(key.lower()).iterdir() if p.is_file())
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.is_file())
    if p.is_file():
        sib = {"u.user", "u.item", "users.dat", "movies.dat", p.stem + ".user", p.stem + ".item"}
        return [p] + sorted(q for q in p.parent.iterdir() if q.is_file() and q.name in sib and q != p)
    raise InputError(f"no dataset named {key!r} and no such file or folder")


def cache_key(name_or_path: str | os.PathLike, data_config: DataConfig, cfg: SplitConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": PREP_VERSION, "data": data_config.to_dict(), "split": cfg.to_dict()},
                        sort_keys=True).encode())
    for f in _source_files(name_or_path):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:24]


def load_prepared(name_or_path: str | os.PathLike, data_config: DataConfig | Mapping[str, Any] | None = None,
                  split_config: SplitConfig | None = None, cache_dir: Path | str | None = None,
                  use_cache: bool = True, verbose: bool = False, log: Callable[[str], None] = print) -> Prepared:
    """Load and preprocess a dataset, from the on-disk cache when it is there.

    With ``verbose``, what was read (and, for CSV/Parquet, which columns) goes to ``log``.

    The cache entry is written to a temporary folder and renamed into place, so an
    interrupted run never leaves a half-written entry.
    """
    if data_config is None:
        data_config = DataConfig()
    elif isinstance(data_config, Mapping):
        data_config = DataConfig.from_dict(data_config)
    split_config = split_config or SplitConfig()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    key = cache_key(name_or_path, data_config, split_config)
    entry = root / "prepared" / key
    if use_cache and (entry / "meta.json").exists():
        try:
            t0 = time.perf_counter()
            prep = Prepared.load(entry)
            if verbose:
                log(f"[data] loaded preprocessed {prep.meta['dataset']} from cache {entry} "
                      f"in {time.perf_counter() - t0:.2f}s")
                _print_columns(prep, log)
            return prep
        except (OSError, ValueError, KeyError, InputError) as e:  # corrupt entry: rebuild it
            if verbose:
                log(f"[data] cache entry {entry} unreadable ({e}); rebuilding")
            shutil.rmtree(entry, ignore_errors=True)
    t0 = time.perf_counter()
    ds = load_dataset(name_or_path, data_config)
    t1 = time.perf_counter()
    prep = prepare(ds, split_config)
    t2 = time.perf_counter()
    prep.meta["timings_s"] = {"load": round(t1 - t0, 3), "prepare": round(t2 - t1, 3)}
    if verbose:
        log(f"[data] {ds.summary()}; loaded in {t1 - t0:.2f}s, preprocessed in {t2 - t1:.2f}s")
        _print_columns(prep, log)
    if use_cache:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
            prep.save(tmp)
            try:
                os.replace(tmp, entry)
            except OSError:  # another process won the race: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            if verbose:
                log(f"[data] could not write cache {entry}: {e}")
    return prep
