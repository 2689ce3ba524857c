"""Bundle = model file(s) + ``manifest.json``, written atomically.

The manifest holds everything a device needs to feed the model exactly what training
fed it: the FeatureSpec, the history-sampler settings, the input/output signature with
the candidate limit (or LiteRT buckets), the artifacts' sha256, the parity figures and
the source run's metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
TARGETS = ("executorch", "onnx", "tflite")
REQUIRED_KEYS = ("format_version", "target", "quantization", "model_file", "artifacts", "signature", "feature_spec",
                 "history_sampler", "parity", "source")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_manifest(m: Any) -> list[str]:
    """Problems with a manifest's schema (empty when it is valid)."""
    problems = []
    if not isinstance(m, dict):
        return ["manifest is not a JSON object"]
    for k in REQUIRED_KEYS:
        if k not in m:
            problems.append(f"missing key {k!r}")
    if problems:
        return problems
    if m["format_version"] != FORMAT_VERSION:
        problems.append(f"format_version {m['format_version']!r} != {FORMAT_VERSION}")
    if m["target"] not in TARGETS:
        problems.append(f"target {m['target']!r} not in {TARGETS}")
    if m["quantization"] not in ("int8", "none"):
        problems.append(f"quantization {m['quantization']!r} not int8/none")
    if not isinstance(m["artifacts"], dict) or m["model_file"] not in m["artifacts"]:
        problems.append("artifacts must map file names to sha256 and include model_file")
    else:
        for f, h in m["artifacts"].items():
            if not (isinstance(h, str) and len(h) == 64):
                problems.append(f"artifact {f!r}: sha256 must be 64 hex characters")
            if "/" in f or "\\" in f or f.startswith("."):
                problems.append(f"artifact {f!r}: must be a plain file name")
    sig = m["signature"]
    if not isinstance(sig, dict) or not {"inputs", "outputs", "max_candidates"} <= set(sig):
        problems.append("signature needs inputs, outputs and max_candidates")
    else:
        for i in sig["inputs"]:
            if not {"name", "dtype", "shape"} <= set(i):
                problems.append(f"signature input {i!r} needs name, dtype and shape")
        if [o.get("name") for o in sig["outputs"]] != ["score", "click"]:
            problems.append("signature outputs must be score, click")
    for k in ("max_abs_diff", "auc_reference", "auc_exported"):
        if k not in m["parity"]:
            problems.append(f"parity lacks {k!r}")
    return problems


def write_bundle(out: Path, files_dir: Path, manifest: dict[str, Any], force: bool = True) -> Path:
    """Move ``files_dir`` (holding the model files) into place as bundle ``out``.

    Hashes every artifact into the manifest, writes ``manifest.json``, then renames the
    whole folder into place, so a crash at any point leaves either the old bundle or the
    new one, never half of one.
    """
    out = Path(out)
    files_dir = Path(files_dir)
    manifest = dict(manifest)
    manifest["artifacts"] = {f: sha256_file(files_dir / f) for f in manifest["artifacts"]}
    manifest["format_version"] = FORMAT_VERSION
    manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    problems = validate_manifest(manifest)
    if problems:
        raise ValueError(f"refusing to write an invalid manifest: {problems}")
    # mkdtemp/mkstemp create private files; a bundle is meant to be shipped and read.
    os.chmod(files_dir, 0o755)
    for f in files_dir.iterdir():
        os.chmod(f, 0o644)
    with open(files_dir / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, default=float)
        f.flush()
        os.fsync(f.fileno())
    if out.exists():
        if not force:
            raise FileExistsError(f"{out} exists")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(files_dir, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(files_dir, out)
    return out


def staging_dir(out: Path) -> Path:
    """A temporary folder beside ``out`` (same file system, so the final rename is atomic).

    Staging folders left by a killed export (older than an hour) are removed first.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
