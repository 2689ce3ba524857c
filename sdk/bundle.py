"""Reading and verifying a bundle: ``manifest.json`` plus model file(s).

A bundle is verified before anything in it is loaded: the manifest must parse, carry
a supported ``format_version`` and the required keys, and every artifact's sha256 must
match. Nothing is ever unpickled.

Example:
    >>> b = Bundle.load("bundles/executorch")                 # doctest: +SKIP
    >>> b.target, b.quantization, b.spec.history.length       # doctest: +SKIP
    ('executorch', 'int8', 30)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import BundleError, InputError
from .features import FeatureSpec
from .names import Quantization, TargetName
from .signature import ModelSignature

FORMAT_VERSION = 1
TARGETS = tuple(TargetName.choices(aliases=True))  # "tflite": bundles written before the target was "litert"
# The history sampler's settings are ``feature_spec.history`` (older bundles also
# repeat them as ``history_sampler``; nothing reads that copy).
REQUIRED_KEYS = ("format_version", "target", "quantization", "model_file", "artifacts", "signature", "feature_spec",
                 "parity", "source")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_manifest(m: Any) -> list[str]:
    """Problems with a manifest's schema (an empty list when it is valid)."""
    if not isinstance(m, dict):
        return ["manifest is not a JSON object"]
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in m]
    if problems:
        return problems
    if m["format_version"] != FORMAT_VERSION:
        problems.append(f"format_version {m['format_version']!r} is not supported (this SDK reads {FORMAT_VERSION})")
    if m["target"] not in TARGETS:
        problems.append(f"target {m['target']!r} not in {TARGETS}")
    if m["quantization"] not in Quantization.choices():
        problems.append(f"quantization {m['quantization']!r} is not int8 or none")
    arts = m["artifacts"]
    if not isinstance(arts, dict) or m["model_file"] not in arts:
        problems.append("artifacts must map file names to sha256 and include model_file")
    else:
        for f, h in arts.items():
            if not (isinstance(h, str) and len(h) == 64):
                problems.append(f"artifact {f!r}: sha256 must be 64 hex characters")
            if "/" in f or "\\" in f or f.startswith("."):
                problems.append(f"artifact {f!r}: must be a plain file name")
    sig = m["signature"]
    if not isinstance(sig, dict) or not {"inputs", "outputs", "max_candidates"} <= set(sig):
        problems.append("signature needs inputs, outputs and max_candidates")
    else:
        for i in sig["inputs"]:
            if not isinstance(i, dict) or not {"name", "role", "dtype", "shape"} <= set(i):
                problems.append(f"signature input {i!r} needs name, role, dtype and shape")
        if [o.get("name") for o in sig["outputs"]] != ["score", "click"]:
            problems.append("signature outputs must be score, click")
    if not isinstance(m["parity"], dict):
        problems.append("parity must be an object")
    else:
        for k in ("max_abs_diff", "auc_reference", "auc_exported"):
            if k not in m["parity"]:
                problems.append(f"parity lacks {k!r}")
    return problems


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
    """

    path: Path
    manifest: dict
    spec: FeatureSpec

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Read ``manifest.json`` and check it and every artifact's sha256.

        Raises:
            BundleError: missing or unreadable manifest, unsupported version, bad schema,
                missing artifact, or a hash mismatch (truncated, corrupt or tampered file).
        """
        path = Path(path)
        mpath = path / "manifest.json"
        if not path.is_dir():
            raise BundleError(f"{path}: not a bundle folder")
        try:
            manifest = json.loads(mpath.read_text())
        except FileNotFoundError as e:
            raise BundleError(f"{mpath}: missing (is {path} a bundle written by kdaliens-export?)") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{mpath}: unreadable manifest ({e})") from e
        problems = validate_manifest(manifest)
        if problems:
            raise BundleError(f"{mpath}: {'; '.join(problems)}")
        if verify:
            for name, expected in manifest["artifacts"].items():
                f = path / name
                if not f.is_file():
                    raise BundleError(f"{f}: artifact listed in the manifest is missing")
                got = sha256_file(f)
                if got != expected:
                    raise BundleError(f"{f}: sha256 mismatch (manifest {expected[:12]}..., file {got[:12]}...): "
                                      "the file is truncated, corrupt or was changed after export")
        try:
            spec = FeatureSpec.from_dict(manifest["feature_spec"])
        except InputError as e:
            raise BundleError(f"{mpath}: bad feature_spec ({e})") from e
        bundle = cls(path=path, manifest=manifest, spec=spec)
        bundle.signature.check_manifest(manifest["signature"], str(mpath))
        return bundle

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
