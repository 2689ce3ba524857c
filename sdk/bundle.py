"""Reading and verifying a bundle: ``manifest.json`` plus model file(s).

A bundle is verified before anything in it is loaded: the manifest must be a regular
file within the size and nesting caps, parse, and pass the full schema check (every
key's type, range and length: :mod:`kdaliens.sdk.manifest`); every artifact is read once
into memory and its sha256 must match, and the runtime is handed those same bytes.
Nothing is ever unpickled.

Example:
    >>> b = Bundle.load("bundles/executorch")                 # doctest: +SKIP
    >>> b.target, b.quantization, b.spec.history.length       # doctest: +SKIP
    ('executorch', 'int8', 30)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import BundleError, InputError
from .features import FeatureSpec
from .fileio import NotRegularFile, open_dir, read_or_raise, read_regular
from .manifest import MAX_MANIFEST_BYTES, parse_manifest, schema_problems
from .names import Quantization, TargetName
from .signature import ModelSignature, Role
from .signing import SIGNATURE_FILE, public_keys, verify_manifest

FORMAT_VERSION = 1
TARGETS = tuple(TargetName.choices(aliases=True))  # "tflite": bundles written before the target was "litert"
# The history sampler's settings are ``feature_spec.history`` (older bundles also
# repeat them as ``history_sampler``; nothing reads that copy).
MAX_ARTIFACT_BYTES = 2 << 30  # read into memory once, verified, and handed to the runtime
MAX_SIGNATURE_BYTES = 64 << 10
_MAX_READS = 5  # a folder replaced while being read is read again, at most this many times in all


class _Replaced(Exception):
    """The bundle folder was replaced by another while it was being read."""


def _identity(path: Path) -> tuple[int, int] | None:
    """What folder ``path`` names now (device, inode), to notice one renamed into its place."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_manifest(m: Any) -> list[str]:
    """Problems with a manifest's schema: every key's type, range and length (an empty
    list when it is valid; see :mod:`kdaliens.sdk.manifest`)."""
    return schema_problems(m, TARGETS, tuple(Quantization.choices()), tuple(r.value for r in Role), FORMAT_VERSION)


def read_artifact(path: Path, sha256: str | None, what: str = "artifact listed in the manifest",
                  reader: Callable[[], bytes] | None = None) -> bytes:
    """The bytes of one bundle file: a regular file (no symlink, FIFO or device) of at most
    :data:`MAX_ARTIFACT_BYTES`, matching ``sha256`` when given (``reader``, when given,
    reads it; ``path`` names it in errors). Raises :class:`BundleError`."""
    data = read_or_raise(reader or (lambda: read_regular(path, MAX_ARTIFACT_BYTES)), path, what, BundleError)
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise BundleError(f"{path}: sha256 mismatch (manifest {sha256[:12]}..., file {got[:12]}...): "
                              "the file is truncated, corrupt or was changed after export")
    return data


#: Debugging artifacts of a bundle (ExecuTorch's ETRecord) live in ``<bundle>.debug/``, beside
#: the bundle and never in it: a device installs the bundle folder alone.
DEBUG_SUFFIX = ".debug"


def debug_dir(bundle_path: str | Path) -> Path:
    """The folder beside ``bundle_path`` that holds its debugging artifacts (may not exist)."""
    p = Path(bundle_path)
    return p.with_name(p.name + DEBUG_SUFFIX)


def debug_file(bundle_path: str | Path, name: str, manifest: dict) -> Path | None:
    """``<bundle>.debug/<name>`` when that folder was written for this bundle's model file
    (``debug.json`` names the model's sha256), else None."""
    d = debug_dir(bundle_path)
    try:
        info = json.loads((d / "debug.json").read_text())
    except (OSError, ValueError):
        return None
    model_sha = manifest.get("artifacts", {}).get(manifest.get("model_file", ""))
    ok = isinstance(info, dict) and model_sha and info.get("model_sha256") == model_sha
    return d / name if ok and (d / name).is_file() else None


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. Use :meth:`load`.

    Attributes:
        path: the bundle folder.
        manifest: the parsed manifest.
        spec: the FeatureSpec the model was trained with (history settings included).
        blobs: artifact name -> the bytes read and verified at load (see :meth:`artifact`).
        signed_by: the id of the trusted key whose signature was checked (None when
            ``trusted_keys`` were not given).
        warning: one line about what was not verified (an unsigned bundle, or a signature
            not checked), None for a bundle whose signature was checked.
    """

    path: Path
    manifest: dict
    spec: FeatureSpec
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    signed_by: str | None = None
    warning: str | None = None

    @classmethod
    def load(cls, path: str | Path, verify: bool = True,
             trusted_keys: Iterable[str | os.PathLike | bytes] | None = None) -> Bundle:
        """Read ``manifest.json``, check its schema and signature, and read and hash every artifact.

        Each artifact is read once into memory; :meth:`artifact` hands out those same
        bytes, so the runtime runs what was verified, and a file changed or truncated on
        disk afterwards can neither run nor crash the process. ``manifest.json`` and the
        artifacts must be regular files inside the folder (not symlinks, FIFOs or
        devices); the folder itself may be reached through a symlink. Files are read
        through one open handle of the folder, and a folder replaced while it was being
        read (a new export installed over it) is read again, so a load never mixes two
        bundles.

        Args:
            path: the bundle folder.
            verify: check each artifact's sha256 (``False`` skips the hashes, never the
                schema; it cannot be combined with ``trusted_keys``).
            trusted_keys: ``signing.pub`` paths, their bytes, or raw 32-byte Ed25519
                public keys. When given, ``manifest.sig`` must be a signature of
                ``manifest.json`` by one of them (:mod:`kdaliens.sdk.signing`); since the
                manifest lists every file's sha256, that covers the whole bundle. When
                None, an unsigned bundle loads and :attr:`warning` says so.

        Raises:
            BundleError: missing or unreadable manifest, one too big or too deep, bad
                schema, unsupported version, a missing or non-regular artifact, a hash
                mismatch (truncated, corrupt or tampered file), or with ``trusted_keys``:
                no signature, a signature by another key, or a manifest changed after
                signing.
            InputError: unusable ``trusted_keys``, or ``trusted_keys`` with ``verify=False``.
            BackendUnavailable: ``trusted_keys`` given but PyNaCl is not installed.
        """
        keys = None if trusted_keys is None else public_keys(trusted_keys)
        if keys is not None and not verify:
            raise InputError("verify=False cannot be combined with trusted_keys: the signature covers the "
                             "artifacts through their hashes")
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"{path}: not a bundle folder")
        for attempt in range(_MAX_READS):
            try:
                return cls._read(path, verify, keys)
            except _Replaced as e:
                if attempt == _MAX_READS - 1:
                    raise BundleError(f"{path}: replaced {_MAX_READS} times while being read; try again") from e
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _read(cls, path: Path, verify: bool, keys: dict[str, bytes] | None) -> Bundle:
        before = _identity(path)
        try:
            dir_fd = open_dir(path)
        except OSError as e:
            raise BundleError(f"{path}: unreadable bundle folder ({e.strerror or e})") from None
        try:
            return cls._read_in(path, dir_fd, verify, keys)
        except BundleError as e:
            # The folder read (held open, so its identity cannot be reused) is no longer the
            # one the path names: a new bundle was installed meanwhile. Read that one.
            read_one = os.fstat(dir_fd) if dir_fd is not None else None
            read_id = (read_one.st_dev, read_one.st_ino) if read_one is not None else before
            if _identity(path) not in (read_id, None):
                raise _Replaced(str(e)) from None
            raise
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    @classmethod
    def _read_in(cls, path: Path, dir_fd: int | None, verify: bool, keys: dict[str, bytes] | None) -> Bundle:
        mpath = path / "manifest.json"

        def read(name: str, limit: int) -> bytes:
            return read_regular(name if dir_fd is not None else path / name, limit, dir_fd=dir_fd)

        try:
            raw = read("manifest.json", MAX_MANIFEST_BYTES)
        except FileNotFoundError as e:
            raise BundleError(f"{mpath}: missing (is {path} a bundle written by kdaliens-export?)") from e
        except NotRegularFile as e:
            raise BundleError(f"refusing the manifest: {e}") from None
        except OSError as e:
            raise BundleError(f"{mpath}: unreadable manifest ({e.strerror or e})") from None
        try:
            sig = read(SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
        except FileNotFoundError:
            sig = None
        except OSError as e:
            raise BundleError(f"refusing {path / SIGNATURE_FILE}: {e}") from None
        signed_by = None if keys is None else verify_manifest(raw, sig, keys, str(path))
        manifest, problem = parse_manifest(raw)
        if problem:
            raise BundleError(f"{mpath}: {problem}")
        problems = validate_manifest(manifest)
        if problems:
            more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
            raise BundleError(f"{mpath}: {'; '.join(problems[:8])}{more}")
        blobs: dict[str, bytes] = {}
        for name, expected in manifest["artifacts"].items():
            blobs[name] = read_artifact(path / name, expected if verify else None,
                                        reader=lambda n=name: read(n, MAX_ARTIFACT_BYTES))
        try:
            spec = FeatureSpec.from_dict(manifest["feature_spec"])
        except InputError as e:
            raise BundleError(f"{mpath}: bad feature_spec ({e})") from None
        if signed_by is not None:
            warning = None
        elif sig is not None:
            warning = "signed bundle loaded without trusted_keys: its signature was not checked"
        else:
            warning = "unsigned bundle: its origin is not verified (sign it with kdaliens-export --sign)"
        bundle = cls(path=path, manifest=manifest, spec=spec, blobs=blobs, signed_by=signed_by, warning=warning)
        bundle.signature.check_manifest(manifest["signature"], str(mpath))
        return bundle

    def artifact(self, name: str) -> bytes:
        """The verified bytes of artifact ``name``, as read by :meth:`load`."""
        try:
            return self.blobs[name]
        except KeyError:
            raise BundleError(f"{self.path}: no artifact {name!r} in the manifest") from None

    @property
    def model_bytes(self) -> bytes:
        """The verified bytes of the model file."""
        return self.artifact(self.manifest["model_file"])

    @property
    def target(self) -> TargetName:
        """Where the bundle runs (``tflite`` in older manifests reads as ``litert``)."""
        return TargetName.parse(self.manifest["target"])

    @cached_property
    def signature(self) -> ModelSignature:
        """The model's inputs and outputs, derived from the feature spec (checked against the manifest)."""
        return ModelSignature.from_spec(self.spec)

    @property
    def quantization(self) -> str:
        return self.manifest["quantization"]

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def bundle_version(self) -> int:
        """The manifest's ``bundle_version`` (0 in bundles written without one). A
        :class:`~kdaliens.sdk.BundleStore` refuses to install a lower one than it runs."""
        return int(self.manifest.get("bundle_version", 0))

    @property
    def max_candidates(self) -> int:
        return int(self.manifest["signature"]["max_candidates"])
