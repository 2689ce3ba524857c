"""``export_bundle``: run dir -> verified bundle for one target."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdaliens.sdk.backends import get_backend
from kdaliens.sdk.bundle import debug_dir, sha256_file
from kdaliens.sdk.canary import CANARY_FILE, build_canary
from kdaliens.sdk.names import Quantization
from kdaliens.sdk.signing import load_signing_key

from .bundle import DEBUG_STAGING, check_bundle_version, check_out, staging_dir, write_bundle, write_debug
from .check import random_requests, self_check
from .exportable import Exportable, choose_model, load_exportable
from .parity import Requests, check_parity, load_requests, torch_runner
from .targets import ExportConfig, LoweredModel, get_target


def export_bundle(run_dir: str | Path, target: str | ExportConfig, out: str | Path, quantize: str = "int8",
                  max_candidates: int = 512, tolerance: float = 0.002, buckets: tuple[int, ...] | None = None,
                  parity_limit: int | None = None, log: Callable[[str], None] = print,
                  debug: bool = False, force: bool = False, sign: str | os.PathLike | bytes | None = None,
                  bundle_version: int | None = None, model: str = "student_kd") -> dict[str, Any]:
    """Export the run's student for ``target``, check it in the real runtime, write the bundle.

    Args:
        run_dir: a ``kdaliens-train`` run directory.
        target: ``executorch``, ``onnx`` or ``litert`` (``tflite`` is an alias), or an
            :class:`~kdaliens.export.targets.ExportConfig` (then the options below are ignored).
        out: the bundle directory, replaced atomically if it is a bundle holding nothing
            else (or empty, or missing); any other folder is refused unless ``force``.
        quantize: ``int8`` (default) or ``none``.
        max_candidates: the most candidates one model call takes (LiteRT: largest bucket).
        tolerance: the largest AUC drop of the exported model against the reference.
        buckets: LiteRT's candidate buckets (default: 16, 64, 128, 256, 512).
        parity_limit: score only this many test requests (all by default).
        debug: also write debugging artifacts (ExecuTorch's ETRecord) to ``<out>.debug/``.
        force: replace ``out`` (and ``<out>.debug/``) even when they hold files kdaliens
            did not write.
        sign: a ``signing.key`` (path or bytes, from ``kdaliens-keygen``): the manifest,
            which lists every file's sha256, is signed with Ed25519 into ``manifest.sig``.
        bundle_version: the version devices pin (a BundleStore refuses a lower one);
            default: the time in seconds, above the version of a bundle already at ``out``.
        model: ``student_kd`` (default), ``student_plain``, or ``auto`` (the better of the
            two on validation).

    Returns:
        The manifest that was written.

    Raises:
        ParityError: the exported model lost more than ``tolerance`` AUC (nothing written).
        InputError: ``out`` holds files kdaliens did not write and ``force`` is False
            (checked before any work, and again before the bundle is installed); an
            unusable signing key or bundle version (checked before any work).
    """
    config = target if isinstance(target, ExportConfig) else ExportConfig(
        target, quantize, max_candidates, tolerance, parity_limit, buckets, debug=debug, model=model)
    check_out(Path(out), force)
    if sign is not None:
        load_signing_key(sign)  # fail before minutes of lowering, not after
    if bundle_version is not None:
        check_bundle_version(bundle_version)
    return _Export(Path(run_dir), config, Path(out), log, force, sign, bundle_version).run()


CANARY_CANDIDATES = 16


class _Export:
    """One export: lower, self-check and parity-check through the SDK backend, write."""

    def __init__(self, run_dir: Path, config: ExportConfig, out: Path, log: Callable[[str], None],
                 force: bool = False, sign: str | os.PathLike | bytes | None = None,
                 bundle_version: int | None = None):
        self.run_dir, self.config, self.out, self.log, self.force = run_dir, config, out, log, force
        self.sign, self.bundle_version = sign, bundle_version
        self.target = get_target(config.target)

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = self.config
        self.log(f"[export] {cfg.target.value}, quantize={cfg.quantize.value}, from {self.run_dir}")
        model, why = choose_model(self.run_dir, cfg.model)
        self.log(f"[export] model {model} ({why})")
        exp = load_exportable(self.run_dir, cfg.quantize.value, model)
        requests = load_requests(self.run_dir, exp, "test", limit=cfg.parity_limit)
        staging = staging_dir(self.out)
        try:
            lowered = self.target.lower(exp, cfg, requests.inputs, staging, self.log)
            check, parity = self._checks(exp, lowered, staging, requests)
            manifest = self._manifest(exp, lowered, check, parity)
            manifest["export"]["seconds"] = round(time.perf_counter() - t0, 1)
            debug = self._take_debug(staging, lowered)
            write_bundle(self.out, staging, manifest, force=self.force, signing_key=self.sign,
                         bundle_version=self.bundle_version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            where = write_debug(self.out, debug, sha256_file(self.out / lowered.model_file))
        finally:
            if debug is not None:
                shutil.rmtree(debug, ignore_errors=True)
        if where is not None:
            self.log(f"[export] debugging artifacts ({', '.join(lowered.debug_files)}) in {where}, beside the bundle")
        size = (self.out / manifest["model_file"]).stat().st_size
        signed = "signed" if self.sign is not None else "unsigned"
        self.log(f"[export] wrote {self.out} ({signed}, bundle_version {self._written_version()}): "
                 f"{manifest['model_file']} {size / 1024:.1f} KB; parity max|diff| "
                 f"{parity['max_abs_diff']:.3g}, AUC {parity['auc_exported']:.4f} vs reference "
                 f"{parity['auc_reference']:.4f}; {time.perf_counter() - t0:.0f}s")
        return manifest

    def _written_version(self) -> int:
        return int(json.loads((self.out / "manifest.json").read_text()).get("bundle_version", 0))

    def _take_debug(self, staging: Path, lowered: LoweredModel) -> Path | None:
        """Move the target's debugging artifacts out of the bundle's staging folder."""
        src = staging / DEBUG_STAGING
        if not lowered.debug_files:
            shutil.rmtree(src, ignore_errors=True)
            return None
        dst = staging_dir(debug_dir(self.out))
        for name in lowered.debug_files:
            os.replace(src / name, dst / name)
        shutil.rmtree(src, ignore_errors=True)
        return dst

    def _checks(self, exp: Exportable, lowered: LoweredModel, staging: Path, requests: Requests
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The same two checks for every target, through the backend a device would use."""
        backend = get_backend(self.target.backend)(
            staging / lowered.model_file, {"signature": lowered.signature}, threads=1)
        try:
            check = self_check(exp, backend.run, self.config.quantize == Quantization.INT8,
                               lowered.check_candidates, lowered.signature["max_candidates"])
            self._write_canary(exp, backend, staging, lowered.signature["max_candidates"])
            self.log(f"[export] self-check vs torch fp32: max |score diff| {check['max_abs_score_diff']:.2e}, "
                     f"min Spearman {check['min_spearman']:.4f}")
            self.log(f"[export] parity: scoring {len(requests.inputs):,} test requests with the runtime and the "
                     "reference")
            reference = lowered.reference if lowered.reference is not None else exp.module
            parity = check_parity(torch_runner(reference, exp.input_names), backend.run, requests,
                                  self.config.tolerance, implicit=_is_implicit(self.run_dir, exp),
                                  reference_name=lowered.reference_name)
        finally:
            del backend
        return check, parity

    @staticmethod
    def _write_canary(exp: Exportable, backend: Any, staging: Path, max_candidates: int) -> None:
        """``canary.json``: one request and this runtime's scores on it, which a device's
        BundleStore reproduces before it switches to the bundle (:mod:`kdaliens.sdk.canary`)."""
        request = random_requests(exp, n=1, n_cand=min(CANARY_CANDIDATES, int(max_candidates)), seed=7)[0]
        request = {n: np.ascontiguousarray(a, dtype=backend.input_dtypes[n]) for n, a in request.items()}
        (staging / CANARY_FILE).write_bytes(build_canary(request, backend.run(request)))

    def _manifest(self, exp: Exportable, lowered: LoweredModel, check: dict[str, Any], parity: dict[str, Any]
                  ) -> dict[str, Any]:
        metrics_path = self.run_dir / "metrics.json"
        source_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        export: dict[str, Any] = {"quantization": lowered.quantization, "self_check": check}
        if lowered.delegation is not None:
            export["delegation"] = lowered.delegation
        return {
            "target": self.config.target.value,
            "quantization": self.config.quantize.value,
            "model_file": lowered.model_file,
            "artifacts": {f: "" for f in [*lowered.files, CANARY_FILE]},
            "canary": CANARY_FILE,
            "signature": lowered.signature,
            "feature_spec": exp.spec.to_dict(),
            "parity": parity,
            "source": {"run_dir": str(self.run_dir.resolve()), "checkpoint": Path(exp.source_checkpoint).name,
                       "metrics": source_metrics},
            "export": export,
            "kdaliens_version": _version(),
        }


def _is_implicit(run_dir: Path, exp: Exportable) -> bool:
    """Implicit runs have no click labels: parity then compares interaction scores."""
    info = run_dir / "run.json"
    if info.exists():
        return bool(json.loads(info.read_text()).get("implicit", False))
    from kdaliens.training.data.preprocess import IMPLICIT_EVENT

    return tuple(exp.spec.event_vocab) == (IMPLICIT_EVENT,)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("kdaliens")
    except Exception:
        return "unknown"
