"""ExecuTorch backend: runs a bundle's ``.pte`` with the ExecuTorch runtime (XNNPACK).

The Python bindings import torch; on phones the Java/C++ runtime needs none.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import debug_dir, debug_file
from ..errors import BundleError
from .base import Backend, dist_version, unavailable


class ExecuTorchBackend(Backend):
    """``model.pte`` through ``executorch.runtime`` (quantized kernels registered first)."""

    name = "executorch"

    def __init__(self, model_path: Path, manifest: Mapping[str, Any], threads: int = 1,
                 model_bytes: bytes | None = None):
        super().__init__(model_path, manifest, threads, model_bytes)
        try:
            # Registers embedding_byte & co. before a quantized program is loaded.
            import executorch.kernels.quantized  # noqa: F401
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as e:
            raise unavailable("executorch", e) from e
        self._torch = torch
        self.runtime = dist_version("executorch")
        try:
            # XNNPACK's threadpool is process-wide; size it for this ranker.
            portable_lib._unsafe_reset_threadpool(max(1, self.threads))
        except Exception:  # older runtimes lack it: keep their default
            pass
        try:
            program = Runtime.get().load_program(self.model_bytes)
            self._method = program.load_method(manifest["signature"].get("method", "forward"))
        except Exception as e:  # the runtime raises RuntimeError/ValueError on bad files
            raise BundleError(f"{self.model_path}: ExecuTorch could not load the program ({e})") from e
        self._program = program

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t = self._torch
        out = self._method.execute([t.from_numpy(inputs[n]) for n in self.input_names])
        # The outputs live in the method's planned memory, which the next call overwrites.
        return {"score": out[0].numpy().copy(), "click": out[1].numpy().copy()}


# ---------------------------------------------------------------------- operator breakdown
# ExecuTorch's own profiler (ETDump + Inspector), for ``kdaliens-profile``; onnxruntime
# and LiteRT have profilers of their own.
def _short_op(op: str) -> str:
    for prefix in ("aten.", "dim_order_ops.", "quantized_decomposed.", "torchao."):
        if op.startswith(prefix):
            op = op[len(prefix):]
    return op[: -len(".default")] if op.endswith(".default") else op


def _base_name(name: str) -> str:
    """'Add (ND) #3' -> 'Add (ND)' (XNNPACK numbers each instance)."""
    head, sep, tail = name.rpartition(" #")
    return head if sep and tail.isdigit() else name


def _event_us(ev: Any, skip: int, n_runs: int) -> float:
    """Mean time of one event instance per model call, in us (Inspector reports ms)."""
    raw = list(ev.perf_data.raw) if ev.perf_data is not None else []
    if len(raw) > skip and len(raw) == n_runs + skip:
        raw = raw[skip:]
    return 1000.0 * float(sum(raw)) / max(1, len(raw))


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


def operator_breakdown(backend: ExecuTorchBackend, bundle_path: Path, manifest: Mapping[str, Any],
                       chunk: Mapping[str, np.ndarray], n_cand: int, runs: int, warmup: int,
                       on_run: Callable[[], None] = lambda: None) -> tuple[dict[str, Any] | None, str | None]:
    """Per-operator times of the bundle's model on one request, through ETDump + Inspector.

    Best effort: returns ``(None, why)`` when the runtime, the devtools or the ETDump
    cannot do it. ``on_run`` is called after each timed run (progress).
    """
    try:
        import torch
        from executorch.runtime import Runtime
    except ImportError as e:
        return None, f"per-operator breakdown unavailable: the ExecuTorch runtime does not import ({e})"
    try:
        from executorch.devtools import Inspector
    except ImportError as e:
        return None, (f"per-operator breakdown unavailable: executorch.devtools does not import ({e}); "
                      "it ships with the full executorch pip package")
    etrecord = debug_file(bundle_path, "model.etrecord", manifest)  # <bundle>.debug/, from kdaliens-export --debug
    if etrecord is None and "model.etrecord" in manifest.get("artifacts", {}):  # bundles that carried it inside
        etrecord = bundle_path / "model.etrecord"
    has_etrecord = etrecord is not None
    tensors = [torch.from_numpy(np.ascontiguousarray(chunk[n], dtype=backend.input_dtypes[n]))
               for n in backend.input_names]
    with tempfile.TemporaryDirectory(prefix="kdaliens-etdump-") as tmp:
        try:
            program = Runtime.get().load_program(backend.model_bytes, enable_etdump=True, debug_buffer_size=0)
            method = program.load_method(manifest["signature"].get("method", "forward"))
            for _ in range(warmup):
                method.execute(tensors)
            for _ in range(runs):
                method.execute(tensors)
                on_run()
            etdump = os.path.join(tmp, "model.etdp")
            program.write_etdump_result_to_file(etdump, os.path.join(tmp, "debug.bin"))
            del method, program
        except Exception as e:  # a runtime built without ETDump support, a failing call
            return None, f"per-operator breakdown unavailable: ETDump run failed ({type(e).__name__}: {e})"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inspector = Inspector(etdump_path=etdump, etrecord=str(etrecord) if has_etrecord else None)
        except Exception as e:
            return None, f"per-operator breakdown unavailable: Inspector could not read the ETDump ({type(e).__name__}: {e})"
    result = _summarize(inspector, n_cand, runs, warmup)
    if result is None:
        return None, "per-operator breakdown unavailable: the ETDump holds no operator events"
    result["etrecord"] = has_etrecord
    note = None if has_etrecord else (f"no model.etrecord for this model in {debug_dir(bundle_path)} (kdaliens-export "
                                      "--debug writes it): operators are named by their kernels and delegates list "
                                      "no source operators")
    return result, note


def _summarize(inspector: Any, n_cand: int, runs: int, warmup: int) -> dict[str, Any] | None:
    """Operators (portable kernels and delegate calls) and the ops inside the delegates, by time."""
    execute: list[float] = []
    init_us = None
    top: dict[str, dict[str, Any]] = {}
    inside: dict[tuple[str, str], dict[str, Any]] = {}
    for block in inspector.event_blocks:
        kernel = None
        for ev in block.events:
            name = ev.name or ""
            if name == "Method::execute":
                raw = list(ev.perf_data.raw) if ev.perf_data is not None else []
                execute = [1000.0 * x for x in (raw[warmup:] if len(raw) == runs + warmup else raw)]
            elif name == "Method::init":
                init_us = _event_us(ev, 0, 1)
            elif name.startswith("native_call_"):
                kernel = name[len("native_call_"):]
            elif ev.is_delegated_op:
                key = (ev.delegate_backend_name or "delegate", _base_name(name))
                row = inside.setdefault(key, {"name": key[1], "backend": key[0], "calls": 0, "total_us": 0.0})
                row["calls"] += 1
                row["total_us"] += _event_us(ev, warmup, runs)
            elif name == "DELEGATE_CALL":
                be = ev.delegate_backend_name or "delegate"
                label = f"{be} #{sum(r['kind'] == 'delegate' for r in top.values()) + 1}"
                ops = list(dict.fromkeys(_short_op(op) for op in ev.op_types or []))
                top[label] = {"name": label, "kind": "delegate", "backend": be, "kernel": None, "calls": 1,
                              "total_us": _event_us(ev, warmup, runs), "ops": ops}
            elif name == "OPERATOR_CALL":
                op = _short_op(ev.op_types[0]) if ev.op_types else (kernel or "operator")
                row = top.setdefault(op, {"name": op, "kind": "portable", "backend": None, "kernel": kernel,
                                          "calls": 0, "total_us": 0.0, "ops": []})
                row["calls"] += 1
                row["total_us"] += _event_us(ev, warmup, runs)
                kernel = None
    if not top:
        return None
    exec_mean = float(np.mean(execute)) if execute else sum(r["total_us"] for r in top.values())
    rows = sorted(top.values(), key=lambda r: -r["total_us"])
    inner = sorted(inside.values(), key=lambda r: -r["total_us"])
    for r in rows + inner:
        r["total_us"] = _round(r["total_us"])
        r["share"] = _round(r["total_us"] / exec_mean, 4) if exec_mean > 0 else None
    other = exec_mean - sum(r["total_us"] for r in rows)
    return {"candidates": n_cand, "runs": runs, "execute_p50_us": _round(float(np.median(execute)) if execute else None),
            "execute_mean_us": _round(exec_mean), "other_us": _round(max(other, 0.0)),
            "method_init_us": _round(init_us), "top": rows, "inside_delegates": inner}
