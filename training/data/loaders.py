"""Readers for interaction logs: the embedded MovieLens-100K and users' own files.

Every reader returns a :class:`Dataset`: one row per interaction (``user_id``,
``item_id``, ``timestamp``, ``rating``, ``label``), plus user and item attribute tables
and the kind of each attribute. Ids are kept as strings, normalized the way the SDK's
encoder normalizes them, so ``7`` and ``"7"`` are the same id everywhere.

Supported inputs (picked by name, then by content):

* the name ``movielens-100k`` (alias ``ml-100k``): the copy shipped in this package;
* RecBole atomic files: a ``.inter`` file, or a folder holding one, with optional
  ``.user`` and ``.item`` files beside it (typed headers such as ``rating:float``);
* MovieLens raw files: ``u.data`` (tab-separated, with ``u.user``/``u.item`` when
  present) and ``ratings.dat`` (``::``-separated, with ``users.dat``/``movies.dat``);
* SASRec text: one ``user item`` pair per line, already in time order, implicit;
* CSV and Parquet logs with named columns (see :class:`DataConfig`).
"""

from __future__ import annotations

import importlib.resources
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import normalize_token

from ..config import COLUMN_ROLES, DataConfig

EMBEDDED = {"movielens-100k": "movielens-100k", "ml-100k": "movielens-100k"}

FIELD_KINDS = ("categorical", "numeric", "multi", "skip")


class DataFormatError(InputError):
    """A data file does not have the expected format. Names the file, line and expectation."""

    def __init__(self, path: Path | str, line: int | None, expected: str, got: str = ""):
        where = f"{path}" + (f", line {line}" if line is not None else "")
        msg = f"{where}: expected {expected}"
        if got:
            msg += f"; got {got!r}"
        super().__init__(msg)
        self.path, self.line, self.expected, self.got = str(path), line, expected, got


@dataclass
class Dataset:
    """A loaded interaction log.

    Attributes:
        name: a short name for logs and reports.
        interactions: one row per interaction with columns ``user_id`` (str),
            ``item_id`` (str), ``timestamp`` (float seconds; file order for SASRec
            data), ``rating`` (float, NaN when implicit) and ``label`` (1.0 click /
            0.0 no click, NaN when implicit).
        users: ``user_id`` plus user attribute columns (may have no attributes).
        items: ``item_id`` plus item attribute columns.
        user_field_kinds / item_field_kinds: attribute name -> kind.
        implicit: True when there are no explicit labels (negatives get sampled).
        sources: files read, for cache keys.
        columns: for CSV/Parquet, how the file's columns were read: ``rows`` read,
            ``roles`` (our name -> the file's column), ``user_columns``, ``item_columns``
            and the ``ignored`` columns.

    ``interactions`` also has an ``event`` column (the event kind) when the log has one.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    user_field_kinds: dict[str, str]
    item_field_kinds: dict[str, str]
    implicit: bool
    sources: list[str] = field(default_factory=list)
    columns: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.interactions)

    def summary(self) -> str:
        n_u = self.interactions["user_id"].nunique()
        n_i = self.interactions["item_id"].nunique()
        kind = "implicit" if self.implicit else f"explicit, {self.interactions['label'].mean():.1%} clicks"
        return f"{self.name}: {len(self):,} interactions, {n_u:,} users, {n_i:,} items ({kind})"


def describe_columns(c: Mapping[str, Any], n_interactions: int) -> str:
    """One line: the columns used for each role and as attributes, those ignored, the rows kept."""
    if not c:
        return ""
    roles = ", ".join(f"{ours}={theirs}" for ours, theirs in c["roles"].items())
    attrs = "; ".join(f"{what} attributes {', '.join(c[key])}" for what, key in (("user", "user_columns"),
                                                                             ("item", "item_columns")) if c[key])
    ignored = ", ".join(c["ignored"]) or "none"
    return (f"columns {roles}" + (f"; {attrs}" if attrs else "") + f"; ignored: {ignored} "
            f"(--user-cols/--item-cols to use them); {c['rows']:,} rows read, {n_interactions:,} interactions kept")


# ----------------------------------------------------------------------------- helpers
def _norm_ids(s: pd.Series) -> pd.Series:
    return s.map(normalize_token).astype(object)


def _numeric(df: pd.DataFrame, col: str, path: Path, line_offset: int, expected: str) -> pd.Series:
    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce")
    bad = vals.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(path, i + line_offset, expected, str(raw.iloc[i]))
    return vals.astype(np.float64)


def _require_ids(df: pd.DataFrame, cols: list[str], path: Path, line_offset: int) -> None:
    for c in cols:
        miss = df[c].isna().to_numpy()
        if miss.any():
            i = int(np.flatnonzero(miss)[0])
            raise DataFormatError(path, i + line_offset, f"a non-empty {c}", "")


def _read_delimited(path: Path, sep: str, names: list[str] | None, header: int | None,
                    encoding: str = "utf-8", expected: str = "") -> pd.DataFrame:
    try:
        text = path.read_bytes().decode(encoding, errors="strict")
    except UnicodeDecodeError:
        text = path.read_bytes().decode("latin-1")
    except OSError as e:
        raise DataFormatError(path, None, "a readable file", str(e)) from e
    lines = text.splitlines()
    n_cols = len(names) if names is not None else None
    start = 0 if header is None else header + 1
    if header is not None:
        if not lines:
            raise DataFormatError(path, 1, "a header line", "an empty file")
        n_cols = len(lines[0].split(sep))
    # Check the field count of every line ourselves: pandas' messages lack the file name.
    for i in range(start, len(lines)):
        ln = lines[i]
        if not ln.strip():
            continue
        k = len(ln.split(sep)) if sep != r"\s+" else len(ln.split())
        if n_cols is not None and k != n_cols:
            raise DataFormatError(path, i + 1, expected or f"{n_cols} fields separated by {sep!r}", ln[:200])
    engine = "python" if len(sep) > 1 else "c"
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, names=names, header=header, dtype=str,
                           keep_default_na=False, na_values=[""], engine=engine, skip_blank_lines=True)
    except (pd.errors.ParserError, ValueError) as e:
        raise DataFormatError(path, None, expected or "a delimited text file", str(e)) from e


def _epoch_seconds(ts: pd.Series) -> pd.Series:
    """Datetimes -> float Unix seconds, whatever the datetime64 unit (pandas 3 uses us)."""
    if getattr(ts.dt, "tz", None) is None:
        ts = ts.dt.tz_localize("UTC")
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _finish(name: str, inter: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None,
            user_kinds: dict[str, str], item_kinds: dict[str, str], sources: list[str],
            config: DataConfig, has_label: bool = False) -> Dataset:
    inter = inter.copy()
    for c in ("user_id", "item_id"):
        inter[c] = _norm_ids(inter[c])
    if "rating" not in inter:
        inter["rating"] = np.nan
    implicit = config.implicit
    if implicit is None:
        implicit = not has_label and bool(inter["rating"].isna().all())
    if has_label:
        inter["label"] = inter["label"].astype(np.float64)
    elif implicit:
        inter["label"] = np.nan
    else:
        inter["label"] = (inter["rating"] >= config.click_threshold).astype(np.float64)
    if implicit:
        inter["label"] = np.nan
    keep = ["user_id", "item_id", "timestamp", "rating", "label"] + (["event"] if "event" in inter else [])
    inter = inter[keep].reset_index(drop=True)
    if len(inter) == 0:
        raise InputError(f"{name}: no interactions found in {sources}")

    def table(df: pd.DataFrame | None, key: str, kinds: dict[str, str], ids: pd.Series) -> tuple[pd.DataFrame, dict]:
        kinds = {k: config.field_kinds.get(k, v) for k, v in kinds.items()}
        for k, v in kinds.items():
            if v not in FIELD_KINDS:
                raise InputError(f"field {k!r}: kind {v!r} is not one of {FIELD_KINDS}")
        kinds = {k: v for k, v in kinds.items() if v != "skip"}
        if df is None:
            df = pd.DataFrame({key: pd.unique(ids)})
        else:
            df = df.copy()
            df[key] = _norm_ids(df[key])
            df = df.drop_duplicates(key, keep="first")
        cols = [key] + [c for c in kinds if c in df.columns]
        return df[cols].reset_index(drop=True), {c: kinds[c] for c in cols[1:]}

    users, user_kinds = table(users, "user_id", user_kinds, inter["user_id"])
    items, item_kinds = table(items, "item_id", item_kinds, inter["item_id"])
    return Dataset(name=name, interactions=inter, users=users, items=items, user_field_kinds=user_kinds,
                   item_field_kinds=item_kinds, implicit=bool(implicit), sources=sources)


# ----------------------------------------------------------------------------- RecBole
_RECBOLE_TYPES = {"token": "categorical", "float": "numeric", "token_seq": "multi", "float_seq": "skip"}

# What we know of the embedded data's columns beyond their RecBole types.
_ML100K_KINDS = {"age": "numeric", "release_year": "numeric", "movie_title": "skip", "zip_code": "skip"}


def read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole atomic file: the table (column names without types) and each column's field kind."""
    with open(path, "rb") as f:
        first = f.readline().decode("latin-1").rstrip("\r\n")
    cols = first.split("\t")
    names, kinds = [], {}
    for c in cols:
        if ":" not in c:
            raise DataFormatError(path, 1, "a RecBole header of name:type columns (e.g. user_id:token)", first)
        n, t = c.split(":", 1)
        if t not in _RECBOLE_TYPES:
            raise DataFormatError(path, 1, f"RecBole types {sorted(_RECBOLE_TYPES)}", t)
        names.append(n)
        kinds[n] = _RECBOLE_TYPES[t]
    df = _read_delimited(path, "\t", names=None, header=0, expected=f"{len(cols)} tab-separated fields")
    df.columns = names
    return df, kinds


def load_recbole(inter_path: Path, config: DataConfig, name: str | None = None,
                 extra_kinds: Mapping[str, str] | None = None) -> Dataset:
    """Read RecBole atomic files: ``X.inter`` with optional ``X.user`` and ``X.item``."""
    inter_path = Path(inter_path)
    stem = inter_path.name[: -len(".inter")]
    inter, kinds = read_atomic(inter_path)
    for need in ("user_id", "item_id"):
        if need not in inter.columns:
            raise DataFormatError(inter_path, 1, f"a {need} column", ", ".join(inter.columns))
    _require_ids(inter, ["user_id", "item_id"], inter_path, 2)
    if "timestamp" in inter.columns:
        inter["timestamp"] = _numeric(inter, "timestamp", inter_path, 2, "a numeric timestamp")
    else:
        inter["timestamp"] = np.arange(len(inter), dtype=np.float64)
    has_label = "label" in inter.columns
    if "rating" in inter.columns:
        inter["rating"] = _numeric(inter, "rating", inter_path, 2, "a numeric rating")
    if has_label:
        inter["label"] = _numeric(inter, "label", inter_path, 2, "a 0/1 label")
    sources = [str(inter_path)]
    users = items = None
    ukinds: dict[str, str] = {}
    ikinds: dict[str, str] = {}
    for suffix in ("user", "item"):
        p = inter_path.with_name(f"{stem}.{suffix}")
        if p.exists():
            df, k = read_atomic(p)
            key = f"{suffix}_id"
            if key not in df.columns:
                raise DataFormatError(p, 1, f"a {key} column", ", ".join(df.columns))
            k.pop(key, None)
            k.update({c: v for c, v in (extra_kinds or {}).items() if c in k})
            sources.append(str(p))
            if suffix == "user":
                users, ukinds = df, k
            else:
                items, ikinds = df, k
    return _finish(name or stem, inter, users, items, ukinds, ikinds, sources, config, has_label=has_label)


# ----------------------------------------------------------------------------- MovieLens raw
_ML_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
              "War", "Western"]


def load_movielens_raw(path: Path, config: DataConfig) -> Dataset:
    """Read ``u.data`` (ML-100K) or ``ratings.dat`` (ML-1M/10M), with attribute files beside them."""
    path = Path(path)
    sources = [str(path)]
    users = items = None
    ukinds: dict[str, str] = {}
    ikinds: dict[str, str] = {}
    if path.name == "ratings.dat" or _sniff_line(path).count("::") == 3:
        inter = _read_delimited(path, "::", names=["user_id", "item_id", "rating", "timestamp"], header=None,
                                expected="user::item::rating::timestamp")
        u, m = path.with_name("users.dat"), path.with_name("movies.dat")
        if u.exists():
            users = _read_delimited(u, "::", names=["user_id", "gender", "age", "occupation", "zip_code"],
                                    header=None, expected="user::gender::age::occupation::zip")
            ukinds = {"gender": "categorical", "age": "numeric", "occupation": "categorical"}
            sources.append(str(u))
        if m.exists():
            items = _read_delimited(m, "::", names=["item_id", "movie_title", "class"], header=None,
                                    encoding="latin-1", expected="movie::title::genres")
            items["class"] = items["class"].str.replace("|", " ", regex=False)
            items["release_year"] = items["movie_title"].str.extract(r"\((\d{4})\)\s*$")[0]
            ikinds = {"release_year": "numeric", "class": "multi"}
            sources.append(str(m))
    else:
        inter = _read_delimited(path, "\t", names=["user_id", "item_id", "rating", "timestamp"], header=None,
                                expected="user<TAB>item<TAB>rating<TAB>timestamp")
        u, m = path.with_name("u.user"), path.with_name("u.item")
        if u.exists():
            users = _read_delimited(u, "|", names=["user_id", "age", "gender", "occupation", "zip_code"],
                                    header=None, expected="user|age|gender|occupation|zip")
            ukinds = {"age": "numeric", "gender": "categorical", "occupation": "categorical"}
            sources.append(str(u))
        if m.exists():
            names = ["item_id", "movie_title", "release_date", "video_date", "url"] + _ML_GENRES
            items = _read_delimited(m, "|", names=names, header=None, encoding="latin-1",
                                    expected="24 |-separated fields of u.item")
            flags = items[_ML_GENRES].fillna("0").to_numpy() == "1"
            items["class"] = [" ".join(g for g, f in zip(_ML_GENRES, row) if f) for row in flags]
            items["release_year"] = items["release_date"].str.extract(r"(\d{4})\s*$")[0]
            ikinds = {"release_year": "numeric", "class": "multi"}
            sources.append(str(m))
    _require_ids(inter, ["user_id", "item_id"], path, 1)
    inter["rating"] = _numeric(inter, "rating", path, 1, "a numeric rating in the third field")
    inter["timestamp"] = _numeric(inter, "timestamp", path, 1, "a numeric timestamp in the fourth field")
    return _finish(path.parent.name or path.stem, inter, users, items, ukinds, ikinds, sources, config)


# ----------------------------------------------------------------------------- SASRec text
def load_sasrec(path: Path, config: DataConfig) -> Dataset:
    """Read SASRec's ``user item`` lines. Implicit feedback; file order is time order."""
    path = Path(path)
    rows_u, rows_i = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataFormatError(path, n, "two whitespace-separated fields: user item", line.rstrip("\n")[:200])
            rows_u.append(parts[0])
            rows_i.append(parts[1])
    inter = pd.DataFrame({"user_id": rows_u, "item_id": rows_i,
                          "timestamp": np.arange(len(rows_u), dtype=np.float64)})
    cfg = DataConfig(**{**config.to_dict(), "implicit": True})
    return _finish(path.stem, inter, None, None, {}, {}, [str(path)], cfg)


# ----------------------------------------------------------------------------- CSV / Parquet
_GUESSES = {
    "user_id": ["user_id", "userId", "user", "uid", "userid", "UserID"],
    "item_id": ["item_id", "itemId", "item", "iid", "movieId", "movie_id", "itemid", "MovieID", "product_id"],
    "timestamp": ["timestamp", "ts", "time", "datetime", "Timestamp", "event_time"],
    "rating": ["rating", "score", "stars", "Rating"],
    "label": ["label", "click", "clicked", "y"],
    "event": ["event", "event_type", "action", "behavior", "behaviour"],
}

assert tuple(_GUESSES) == COLUMN_ROLES  # a spelling list for every role DataConfig accepts


def load_table(path: Path, config: DataConfig) -> Dataset:
    """Read a CSV or Parquet log with named columns (mapping in ``config.columns``)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DataFormatError(path, None, "a Parquet file", f"{type(e).__name__}: {e}") from e
        line_offset = 0  # rows, not lines
    else:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline().rstrip("\r\n")
        df = _read_delimited(path, sep, names=None, header=0, expected=f"{len(header.split(sep))} fields like the header")
        line_offset = 2
    mapping: dict[str, str] = {}
    for ours, guesses in _GUESSES.items():
        if ours in config.columns:
            col = config.columns[ours]
            if col not in df.columns:
                raise DataFormatError(path, 1 if line_offset else None, f"a column {col!r} (mapped to {ours})",
                                      ", ".join(map(str, df.columns)))
            mapping[ours] = col
        else:
            found = next((g for g in guesses if g in df.columns), None)
            if found is not None:
                mapping[ours] = found
    for need in ("user_id", "item_id"):
        if need not in mapping:
            raise DataFormatError(path, 1 if line_offset else None,
                                  f"a {need} column (name it with --columns {need}=YOUR_COLUMN, or "
                                  f'"data": {{"columns": {{"{need}": "YOUR_COLUMN"}}}} in the config file)',
                                  ", ".join(map(str, df.columns)))
    inter = pd.DataFrame({"user_id": df[mapping["user_id"]].astype(object),
                          "item_id": df[mapping["item_id"]].astype(object)})
    _require_ids(inter, ["user_id", "item_id"], path, line_offset)
    if "timestamp" in mapping:
        ts = df[mapping["timestamp"]]
        if pd.api.types.is_datetime64_any_dtype(ts):
            inter["timestamp"] = _epoch_seconds(ts)
        else:
            num = pd.to_numeric(ts, errors="coerce")
            if num.isna().any() and ts.notna().all():
                parsed = pd.to_datetime(ts, errors="coerce", utc=True)
                bad = parsed.isna().to_numpy()
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise DataFormatError(path, i + line_offset, "a numeric or ISO-8601 timestamp", str(ts.iloc[i]))
                num = _epoch_seconds(parsed)
            inter["timestamp"] = _numeric(pd.DataFrame({"t": num}), "t", path, line_offset, "a timestamp")
    else:
        inter["timestamp"] = np.arange(len(inter), dtype=np.float64)
    if "rating" in mapping:
        inter["rating"] = _numeric(df, mapping["rating"], path, line_offset, "a numeric rating")
    has_label = "label" in mapping
    if has_label:
        inter["label"] = _numeric(df, mapping["label"], path, line_offset, "a numeric 0/1 label")
        if not inter["label"].isin([0.0, 1.0]).all():
            i = int(np.flatnonzero(~inter["label"].isin([0.0, 1.0]).to_numpy())[0])
            raise DataFormatError(path, i + line_offset, "a 0/1 label", str(df[mapping["label"]].iloc[i]))

    def attrs(cols: list[str], key: str) -> tuple[pd.DataFrame | None, dict[str, str]]:
        if not cols:
            return None, {}
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataFormatError(path, 1 if line_offset else None, f"attribute columns {missing}",
                                  ", ".join(map(str, df.columns)))
        t = df[[mapping[key]] + cols].rename(columns={mapping[key]: key})
        kinds = {c: "numeric" if pd.api.types.is_numeric_dtype(df[c]) or
                 pd.to_numeric(df[c], errors="coerce").notna().mean() > 0.99 else "categorical" for c in cols}
        return t, kinds

    if "event" in mapping:
        inter["event"] = df[mapping["event"]].astype(object)
    users, ukinds = attrs(config.user_columns, "user_id")
    items, ikinds = attrs(config.item_columns, "item_id")
    listed = set(mapping.values()) | set(config.user_columns) | set(config.item_columns)
    ds = _finish(path.stem, inter, users, items, ukinds, ikinds, [str(path)], config, has_label=has_label)
    ds.columns = {"rows": int(len(df)), "roles": dict(mapping), "user_columns": list(config.user_columns),
                  "item_columns": list(config.item_columns),
                  "ignored": [str(c) for c in df.columns if c not in listed]}
    return ds


# ----------------------------------------------------------------------------- dispatch
def _sniff_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.readline(4096).decode("latin-1").rstrip("\r\n")
    except OSError as e:
        raise DataFormatError(path, None, "a readable file", str(e)) from e


def embedded_path(name: str) -> Path:
    """Folder of an embedded dataset inside the installed package."""
    base = importlib.resources.files("kdaliens.training") / "datasets" / EMBEDDED[name]
    return Path(str(base))


def load_dataset(name_or_path: str | os.PathLike, config: DataConfig | Mapping[str, Any] | None = None) -> Dataset:
    """Load a dataset by embedded name or path.

    Args:
        name_or_path: ``"movielens-100k"`` (shipped with the package) or a file or
            folder in one of the supported formats (see the module docstring).
        config: a :class:`DataConfig` or its dict form (column mapping, field kinds).

    Raises:
        DataFormatError: a file is malformed (the message names file, line, expectation).
        InputError: the path does not exist or its format is unknown.

    Example:
        >>> ds = load_dataset("movielens-100k")
        >>> len(ds.interactions)
        100000
    """
    if config is None:
        config = DataConfig()
    elif isinstance(config, Mapping):
        config = DataConfig.from_dict(config)
    key = str(name_or_path)
    if key.lower() in EMBEDDED:
        folder = embedded_path(key.lower())
        cfg = DataConfig(**{**config.to_dict(), "field_kinds": {**_ML100K_KINDS, **config.field_kinds}})
        ds = load_recbole(folder / "ml-100k.inter", cfg, name="movielens-100k")
        ds.sources = ["embedded:movielens-100k"]
        return ds
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise InputError(f"no dataset named {key!r} and no such file or folder "
                         f"(embedded datasets: {sorted(set(EMBEDDED.values()))})")
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if len(inters) == 1:
            return load_recbole(inters[0], config)
        if len(inters) > 1:
            raise InputError(f"{path}: several .inter files {[p.name for p in inters]}; pass one of them")
        for raw in ("u.data", "ratings.dat"):
            if (path / raw).exists():
                return load_movielens_raw(path / raw, config)
        raise InputError(f"{path}: no .inter, u.data or ratings.dat file in this folder")
    suffix = path.suffix.lower()
    if suffix == ".inter":
        return load_recbole(path, config)
    if path.name in ("u.data", "ratings.dat"):
        return load_movielens_raw(path, config)
    if suffix in (".csv", ".tsv", ".parquet", ".pq"):
        return load_table(path, config)
    first = _sniff_line(path)
    if "\t" in first and all(":" in c for c in first.split("\t")):
        return load_recbole(path, config)
    if first.count("::") == 3:
        return load_movielens_raw(path, config)
    parts = first.split()
    if len(first.split("\t")) == 4:
        return load_movielens_raw(path, config)
    if len(parts) == 2:
        return load_sasrec(path, config)
    raise DataFormatError(path, 1, "a known format: RecBole header, u.data, ratings.dat, 'user item' lines, "
                          "or a .csv/.parquet file", first[:200])
