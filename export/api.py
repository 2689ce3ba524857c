"""``export_bundle``: run dir -> verified bundle for one target."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdaliens.sdk.backends import backend_for_target, get_backend
from kdaliens.sdk.errors import InputError

from .bundle import staging_dir, write_bundle
from .exportable import Exportable, load_exportable
from .parity import check_parity, load_requests, torch_runner


def _lower(target: str, exp: Exportable, staging: Path, quantize: str, max_candidates: int, requests,
           buckets: tuple[int, ...] | None, log: Callable[[str], None]) -> dict[str, Any]:
    if target == "executorch":
        from .executorch import export_to_executorch

        calib = requests.as_tuples(exp.input_names, limit=256)
        return export_to_executorch(exp, staging, quantize, max_candidates, calibration=calib, log=log)
    if target == "onnx":
        from .onnx import export_to_onnx

        return export_to_onnx(exp, staging, quantize, max_candidates, calibration=requests.inputs[:256], log=log)
    if target == "tflite":
        from .litert import DEFAULT_BUCKETS, export_to_litert

        buckets = buckets or DEFAULT_BUCKETS
        return export_to_litert(exp, staging, quantize, buckets=tuple(b for b in buckets if b <= max_candidates)
                                or (max_candidates,), log=log)
    raise InputError(f"unknown target {target!r}; choose executorch, onnx or tflite")


def export_bundle(run_dir: str | Path, target: str, out: str | Path, quantize: str = "int8",
                  max_candidates: int = 512, tolerance: float = 0.002, buckets: tuple[int, ...] | None = None,
                  parity_limit: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export the run's student for ``target``, check parity in the real runtime, write the bundle.

    Args:
        run_dir: a ``kdaliens-train`` run directory.
        target: ``executorch``, ``onnx`` or ``tflite``.
        out: the bundle directory (replaced atomically if it exists).
        quantize: ``int8`` (default) or ``none``.
        max_candidates: the most candidates one model call takes (LiteRT: largest bucket).
        tolerance: the largest AUC drop of the exported model against the reference.
        parity_limit: score only this many test requests (all by default).

    Returns:
        The manifest that was written.

    Raises:
        ParityError: the exported model lost more than ``tolerance`` AUC (nothing written).
    """
    t0 = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    if target not in ("executorch", "onnx", "tflite"):
        raise InputError(f"unknown target {target!r}; choose executorch, onnx or tflite")
    if max_candidates < 2:
        raise InputError("max_candidates must be >= 2")
    log(f"[export] {target}, quantize={quantize}, from {run_dir}")
    exp = load_exportable(run_dir, quantize)
    requests = load_requests(run_dir, exp, "test", limit=parity_limit)
    implicit = _is_implicit(run_dir, exp)
    staging = staging_dir(out)
    try:
        res = _lower(target, exp, staging, quantize, max_candidates, requests, buckets, log)
        sig = res["signature"]
        backend = get_backend(backend_for_target(target))(staging / res["model_file"], {"signature": sig}, threads=1)
        reference = res.get("reference") or exp.module
        log(f"[export] parity: scoring {len(requests.inputs):,} test requests with the runtime and the reference")
        parity = check_parity(torch_runner(reference, exp.input_names), backend.run, requests, tolerance,
                              implicit=implicit,
                              reference_name="pytorch int8 (PT2E)" if "reference" in res and quantize == "int8"
                              else "pytorch fp32")
        del backend
        metrics_path = run_dir / "metrics.json"
        source_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        manifest = {
            "target": target,
            "quantization": quantize,
            "model_file": res["model_file"],
            "artifacts": {f: "" for f in res["files"]},
            "signature": sig,
            "feature_spec": exp.spec.to_dict(),
            "history_sampler": exp.spec.history.to_dict(),
            "parity": parity,
            "source": {"run_dir": str(run_dir.resolve()), "checkpoint": Path(exp.source_checkpoint).name,
                       "metrics": source_metrics},
            "export": {k: v for k, v in res.items() if k in ("quantization", "delegation")},
            "kdaliens_version": _version(),
        }
        manifest["export"]["seconds"] = round(time.perf_counter() - t0, 1)
        write_bundle(out, staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum((out / f).stat().st_size for f in manifest["artifacts"] if f == manifest["model_file"])
    log(f"[export] wrote {out}: {manifest['model_file']} {size / 1024:.1f} KB; parity max|diff| "
        f"{parity['max_abs_diff']:.3g}, AUC {parity['auc_exported']:.4f} vs reference {parity['auc_reference']:.4f}; "
        f"{time.perf_counter() - t0:.0f}s")
    return manifest


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
