"""Bundle = model file(s) + ``manifest.json``, written atomically.

The manifest holds everything a device needs to feed the model exactly what training
fed it: the FeatureSpec, the history-sampler settings, the input/output signature with
the candidate limit (or LiteRT buckets), the artifacts' sha256, the parity figures and
the source run's metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kdaliens.sdk.bundle import FORMAT_VERSION, debug_dir, sha256_file, validate_manifest

__all__ = ["FORMAT_VERSION", "check_out", "sha256_file", "staging_dir", "validate_manifest", "write_bundle"]


def _foreign(folder: Path, listing: str) -> list[str]:
    """What in ``folder`` kdaliens did not write: anything but ``listing`` (``manifest.json``
    or ``debug.json``) and the plain files it names; everything when the listing is unreadable."""
    entries = sorted(folder.iterdir())
    try:
        info = json.loads((folder / listing).read_text())
        names = info["artifacts"] if listing == "manifest.json" else info["files"]
        allowed = {listing, *names}
    except (OSError, ValueError, KeyError, TypeError):
        allowed = set()
    return [p.name + ("/" if p.is_dir() else "") for p in entries
            if not (p.name in allowed and p.is_file() and not p.is_symlink())]


def check_out(out: Path, force: bool = False) -> None:
    """Refuse to replace ``out`` (and ``<out>.debug/``) unless it is missing, empty, or a
    folder kdaliens wrote, holding nothing else; ``force`` allows it anyway.

    Raises:
        InputError: ``out`` holds something kdaliens did not write (the message lists it).
    """
    from kdaliens.sdk.errors import InputError

    if force:
        return
    for folder, listing in ((Path(out), "manifest.json"), (debug_dir(out), "debug.json")):
        if not os.path.lexists(folder):
            continue
        if folder.is_symlink() or not folder.is_dir():
            raise InputError(f"{folder} exists and is not a folder kdaliens wrote; refusing to replace it "
                             "(pass --force to replace it anyway)")
        names = _foreign(folder, listing)
        if not names:
            continue
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise InputError(f"{folder} holds files kdaliens did not write ({shown}); refusing to replace it. "
                         "Choose an empty or new folder, or pass --force to replace it anyway")


def write_bundle(out: Path, files_dir: Path, manifest: dict[str, Any], force: bool = False) -> Path:
    """Move ``files_dir`` (holding the model files) into place as bundle ``out``.

    Hashes every artifact into the manifest, writes ``manifest.json``, then renames the
    whole folder into place, so a crash at any point leaves either the old bundle or the
    new one, never half of one. An existing ``out`` is replaced only when it is a bundle
    holding nothing else, or with ``force`` (:func:`check_out`).
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
    check_out(out, force)
    _install(files_dir, out)
    return out


def write_debug(bundle_out: Path, files_dir: Path | None, model_sha256: str) -> Path | None:
    """Install ``files_dir`` (debugging artifacts of the bundle's model) as ``<bundle>.debug/``,
    with a ``debug.json`` naming the model's sha256; with ``files_dir`` None, remove a
    ``<bundle>.debug/`` left from an earlier model. Returns the folder, or None."""
    target = debug_dir(bundle_out)
    if files_dir is None:
        if target.is_dir() and not target.is_symlink() and not _foreign(target, "debug.json"):
            shutil.rmtree(target, ignore_errors=True)
        return None
    (files_dir / "debug.json").write_text(json.dumps(
        {"model_sha256": model_sha256, "files": sorted(f.name for f in files_dir.iterdir()),
         "note": "debugging artifacts of the bundle beside this folder; a device never needs them"}, indent=1))
    os.chmod(files_dir, 0o755)
    for f in files_dir.iterdir():
        os.chmod(f, 0o644)
    _install(files_dir, target)
    return target


def _install(files_dir: Path, out: Path) -> None:
    """Rename ``files_dir`` to ``out``, replacing an existing ``out`` with two renames."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(files_dir, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(files_dir, out)


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


#: Subfolder of a staging folder where a target writes debugging artifacts (they leave
#: the bundle before it is installed; see :func:`write_debug`).
DEBUG_STAGING = "_debug"
