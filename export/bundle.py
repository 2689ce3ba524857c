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
from kdaliens.sdk.errors import BundleError, InputError
from kdaliens.sdk.fileio import exchange, fsync_dir
from kdaliens.sdk.signing import SIGNATURE_FILE, load_signing_key, sign_manifest

__all__ = ["FORMAT_VERSION", "check_bundle_version", "check_out", "next_bundle_version", "sha256_file", "sign_bundle", "staging_dir",
           "validate_manifest", "write_bundle"]


def _foreign(folder: Path, listing: str) -> list[str]:
    """What in ``folder`` kdaliens did not write: anything but ``listing`` (``manifest.json``
    or ``debug.json``), the plain files it names and a bundle's ``manifest.sig``; everything
    when the listing is unreadable."""
    entries = sorted(folder.iterdir())
    try:
        info = json.loads((folder / listing).read_text())
        names = [*info["artifacts"], SIGNATURE_FILE] if listing == "manifest.json" else info["files"]
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


def next_bundle_version(out: Path) -> int:
    """The default ``bundle_version`` of a bundle written to ``out``: the time in seconds,
    and always above the version of the bundle already there, so versions only grow."""
    version = int(time.time())
    try:
        old = json.loads((Path(out) / "manifest.json").read_text()).get("bundle_version", 0)
        if isinstance(old, int) and not isinstance(old, bool):
            version = max(version, old + 1)
    except (OSError, ValueError, AttributeError):
        pass
    return version


def write_bundle(out: Path, files_dir: Path, manifest: dict[str, Any], force: bool = False,
                 signing_key: str | os.PathLike | bytes | None = None, bundle_version: int | None = None) -> Path:
    """Move ``files_dir`` (holding the model files) into place as bundle ``out``.

    Hashes every artifact into the manifest, sets its ``bundle_version``, writes
    ``manifest.json`` (and ``manifest.sig``, signed with ``signing_key``), then puts the
    whole folder in place in one atomic step, so a crash at any point leaves either the
    old bundle or the new one, never half of one, and a device or process loading ``out``
    meanwhile reads one of the two. An existing ``out`` is replaced only when it is a
    bundle holding nothing else, or with ``force`` (:func:`check_out`).

    Args:
        signing_key: a ``signing.key`` (path or bytes) from ``kdaliens-keygen``.
        bundle_version: the version a device's :class:`~kdaliens.sdk.BundleStore` pins
            (it refuses to go back to a lower one); default :func:`next_bundle_version`.

    Raises:
        InputError: ``out`` holds files kdaliens did not write, a bad ``bundle_version``
            or an unusable ``signing_key``.
    """
    out = Path(out)
    files_dir = Path(files_dir)
    key = load_signing_key(signing_key) if signing_key is not None else None
    manifest = dict(manifest)
    manifest["artifacts"] = {f: sha256_file(files_dir / f) for f in manifest["artifacts"]}
    manifest["format_version"] = FORMAT_VERSION
    manifest["bundle_version"] = _version_arg(bundle_version, out)
    manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    problems = validate_manifest(manifest)
    if problems:
        raise ValueError(f"refusing to write an invalid manifest: {problems}")
    # mkdtemp/mkstemp create private files; a bundle is meant to be shipped and read.
    os.chmod(files_dir, 0o755)
    for f in files_dir.iterdir():
        os.chmod(f, 0o644)
    _write_manifest(files_dir, manifest, key)
    check_out(out, force)
    _install(files_dir, out)
    return out


def check_bundle_version(bundle_version: object) -> int:
    """``bundle_version`` if it is an int from 0 to 2**63 - 1, else an :class:`InputError`."""
    if not isinstance(bundle_version, int) or isinstance(bundle_version, bool) or not 0 <= bundle_version < 1 << 63:
        raise InputError(f"bundle_version must be an int from 0 to 2**63 - 1, got {bundle_version!r}")
    return bundle_version


def _version_arg(bundle_version: int | None, out: Path) -> int:
    return next_bundle_version(out) if bundle_version is None else check_bundle_version(bundle_version)


def _write_manifest(folder: Path, manifest: dict[str, Any], key: Any) -> None:
    """``manifest.json`` (and, with a key, its ``manifest.sig``), flushed to disk."""
    data = json.dumps(manifest, indent=1, sort_keys=True, default=float).encode()
    files = {"manifest.json": data}
    if key is not None:
        files[SIGNATURE_FILE] = sign_manifest(data, key)
    elif (folder / SIGNATURE_FILE).exists():
        os.unlink(folder / SIGNATURE_FILE)
    for name, content in files.items():
        with open(folder / name, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(folder / name, 0o644)


def sign_bundle(bundle: str | os.PathLike, signing_key: str | os.PathLike | bytes,
                bundle_version: int | None = None) -> Path:
    """Sign an existing bundle (for example on a release machine that holds the key, away
    from the one that trained and exported), optionally giving it a new ``bundle_version``.

    The bundle is verified first (hashes and schema), then rewritten and replaced in one
    atomic step like :func:`write_bundle`.

    Raises:
        BundleError: the bundle does not verify. InputError: an unusable key or version.
    """
    from kdaliens.sdk.bundle import Bundle

    src = Path(bundle)
    key = load_signing_key(signing_key)
    b = Bundle.load(src)
    manifest = dict(b.manifest)
    if bundle_version is not None:
        manifest["bundle_version"] = _version_arg(bundle_version, src)
    staging = staging_dir(src)
    try:
        for name, data in b.blobs.items():
            (staging / name).write_bytes(data)
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        _write_manifest(staging, manifest, key)
        _install(staging, src)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not (src / "manifest.json").is_file():  # pragma: no cover
        raise BundleError(f"{src}: signing failed")
    return src


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
    """Rename ``files_dir`` to ``out``. An existing ``out`` is swapped with it in one atomic
    step (Linux ``renameat2(RENAME_EXCHANGE)``), so ``out`` never stops existing; where the
    system cannot swap, it falls back to two renames (``out`` is then missing for an instant)."""
    if out.is_dir() and not out.is_symlink():
        if exchange(files_dir, out):
            shutil.rmtree(files_dir, ignore_errors=True)  # now the old bundle
        else:  # pragma: no cover  (not Linux)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(files_dir, out)
            shutil.rmtree(old, ignore_errors=True)
    else:
        if os.path.lexists(out):  # a file or a link (only with --force): removed, never followed
            os.unlink(out)
        os.replace(files_dir, out)
    fsync_dir(out.parent)


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
