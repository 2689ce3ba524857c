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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import BundleError, InputError
from .features import FeatureSpec
from .fileio import NotRegularFile, read_regular
from .manifest import MAX_MANIFEST_BYTES, parse_manifest, schema_problems
from .names import Quantization, TargetName
from .signature import ModelSignature, Role

FORMAT_VERSION = 1
TARGETS = tuple(TargetName.choices(aliases=True))  # "tflite": bundles written before the target was "litert"
# The history sampler's settings are ``feature_spec.history`` (older bundles also
# repeat them as ``history_sampler``; nothing reads that copy).
MAX_ARTIFACT_BYTES = 2 << 30  # read into memory once, verified, and handed to the runtime


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


def read_artifact(path: Path, sha256: str | None, what: str = "artifact listed in the manifest") -> bytes:
    """The bytes of one bundle file: a regular file (no symlink, FIFO or device) of at most
    :data:`MAX_ARTIFACT_BYTES`, matching ``sha256`` when given. Raises :class:`BundleError`."""
    try:
        data = read_regular(path, MAX_ARTIFACT_BYTES)
    except FileNotFoundError:
        raise BundleError(f"{path}: {what} is missing") from None
    except NotRegularFile as e:
        raise BundleError(f"refusing the {what}: {e}") from None
    except OSError as e:
        raise BundleError(f"{path}: unreadable {what} ({e.strerror or e})") from None
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
    """

    path: Path
    manifest: dict
    spec: FeatureSpec
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Read ``manifest.json``, check its schema, and read and hash every artifact.

        Each artifact is read once into memory; :meth:`artifact` hands out those same
        bytes, so the runtime runs what was verified, and a file changed or truncated on
        disk afterwards can neither run nor crash the process. ``manifest.json`` and the
        artifacts must be regular files inside the folder (not symlinks, FIFOs or
        devices); the folder itself may be reached through a symlink. ``verify=False``
        skips the hashes (the files are still read the same way).

        Raises:
            BundleError: missing or unreadable manifest, one too big or too deep, bad
                schema, unsupported version, a missing or non-regular artifact, or a hash
                mismatch (truncated, corrupt or tampered file).
        """
        path = Path(path)
        mpath = path / "manifest.json"
        if not path.is_dir():
            raise BundleError(f"{path}: not a bundle folder")
        try:
            raw = read_regular(mpath, MAX_MANIFEST_BYTES)
        except FileNotFoundError as e:
            raise BundleError(f"{mpath}: missing (is {path} a bundle written by kdaliens-export?)") from e
        except NotRegularFile as e:
            raise BundleError(f"refusing the manifest: {e}") from None
        except OSError as e:
            raise BundleError(f"{mpath}: unreadable manifest ({e.strerror or e})") from None
        manifest, problem = parse_manifest(raw)
        if problem:
            raise BundleError(f"{mpath}: {problem}")
        problems = validate_manifest(manifest)
        if problems:
            more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
            raise BundleError(f"{mpath}: {'; '.join(problems[:8])}{more}")
        blobs: dict[str, bytes] = {}
        for name, expected in manifest["artifacts"].items():
            blobs[name] = read_artifact(path / name, expected if verify else None)
        try:
            spec = FeatureSpec.from_dict(manifest["feature_spec"])
        except InputError as e:
            raise BundleError(f"{mpath}: bad feature_spec ({e})") from None
        bundle = cls(path=path, manifest=manifest, spec=spec, blobs=blobs)
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
    def max_candidates(self) -> int:
        return int(self.manifest["signature"]["max_candidates"])
