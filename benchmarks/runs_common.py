"""Helpers the multi-run benchmarks share (``encoders.py``, ``distillers.py``).

* :func:`share_models`: copy finished models of one run into another run of the same
  seed, under the other run's config hash, so ``kdaliens-train`` reuses them there
  (the plain student under every teacher; the default teacher under every student-side
  distiller) instead of training identical models again;
* :func:`export_int8`: export a run's int8 student to a target through the parity gate,
  once (the result is recorded, so an interrupted benchmark resumes);
* :func:`mean_std`, :func:`parse_seeds`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path


def parse_seeds(text: str) -> list[int]:
    """A count N (seeds 0..N-1) or a comma list (one seed S: 'S,')."""
    return list(range(int(text))) if text.isdigit() else [int(s) for s in text.split(",") if s.strip()]


def share_models(src: Path, dst: Path, names: list[str], chash: str) -> list[str]:
    """Copy the models ``names`` (checkpoint, metrics entry, history rows) of run ``src`` into
    run ``dst`` under config hash ``chash``; returns the names copied. Models ``src`` has not
    finished, or that ``dst`` already holds under ``chash``, are left alone."""
    if src == dst or not (src / "metrics.json").exists():
        return []
    have = json.loads((src / "metrics.json").read_text())
    dst.mkdir(parents=True, exist_ok=True)
    mpath, hpath = dst / "metrics.json", dst / "history.json"
    metrics = json.loads(mpath.read_text()) if mpath.exists() else {}
    history = json.loads(hpath.read_text()) if hpath.exists() else {}
    src_hist = json.loads((src / "history.json").read_text()) if (src / "history.json").exists() else {}
    copied = []
    for name in names:
        if name not in have or not (src / f"{name}.pt").exists():
            continue
        if metrics.get(name, {}).get("config_hash") == chash and (dst / f"{name}.pt").exists():
            continue
        shutil.copy2(src / f"{name}.pt", dst / f"{name}.pt")
        metrics[name] = {**have[name], "config_hash": chash, "copied_from": str(src)}
        if name in src_hist:
            history[name] = src_hist[name]
        copied.append(name)
    if copied:
        mpath.write_text(json.dumps(metrics, indent=1))
        hpath.write_text(json.dumps(history, indent=1))
    return copied


def export_int8(run_dir: Path, target: str) -> dict:
    """Export the int8 student to ``target``; the parity figures, or why it was refused."""
    from kdaliens.export.api import export_bundle
    from kdaliens.export.parity import ParityError

    out = run_dir / "bundles" / target
    record = run_dir / "bundles" / f"{target}.json"
    if record.exists():
        return json.loads(record.read_text())
    t0 = time.perf_counter()
    try:
        m = export_bundle(run_dir, target, out, quantize="int8", log=lambda s: None)
        p = m["parity"]
        res = {"passed": True, "auc_reference": p["auc_reference"], "auc_exported": p["auc_exported"],
               "max_abs_diff": p["max_abs_diff"], "model_bytes": (out / m["model_file"]).stat().st_size}
    except ParityError as e:
        res = {"passed": False, "error": str(e)}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(res, indent=1))
    return res


def mean_std(xs: list[float], digits: int = 4) -> str:
    """'mean ± sample std' ('-' for none)."""
    if not xs:
        return "-"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.{digits}f}"
