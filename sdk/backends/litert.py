"""LiteRT backend: runs a bundle's ``model.tflite`` with ai-edge-litert (or tflite-runtime).

The model holds one fixed-shape signature per candidate bucket (``n16``, ``n64``, ...).
A request of N candidates runs in the smallest bucket that holds it: every ``cand_*``
input is padded with id 0 (the padding id) along the candidate axis, and the outputs
are cut back to N. Candidates do not interact in the student, so padding changes no
real score.

Runtimes, in order: ``ai_edge_litert`` (numpy 2, aarch64 wheels), then
``tflite_runtime`` (old device images with numpy < 2; never under numpy 2, where 2.14
crashes). ``backend.runtime`` names the one in use.

The interpreter shares its tensors between calls, so :meth:`Backend.run` runs one call
at a time (a lock); a Ranker shared by threads is safe.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InputError
from .base import Backend, dist_version, unavailable


def _interpreter_class() -> tuple[type, str]:
    """The LiteRT interpreter to use and the package that provides it.

    ai-edge-litert first: the maintained runtime (XNNPACK, numpy 2), and the cheaper one
    measured here (README: a cold load of 19 ms and 15 MB). tflite-runtime only where
    ai-edge-litert is missing (old device images), and never under numpy 2, where
    tflite-runtime 2.14 crashes.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, dist_version("ai-edge-litert")
    except ImportError as first:
        if int(np.__version__.split(".")[0]) >= 2:
            raise unavailable("litert", first) from first
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise unavailable("litert", first) from first
        return Interpreter, dist_version("tflite-runtime")


class _Plan:
    """Everything one bucket needs per call, resolved once."""

    __slots__ = ("bucket", "key", "runner", "feeds", "outputs", "fast")

    def __init__(self, bucket: int, key: str, runner: Any):
        self.bucket = bucket
        self.key = key
        self.runner = runner
        # (our name, name in the file, tensor index, shape, padding buffer for cand_*) per input
        self.feeds: list[tuple[str, str, int, tuple[int, ...], np.ndarray | None]] = []
        self.outputs: list[tuple[str, str, int]] = []  # (our name, name in the file, tensor index)
        self.fast: tuple[Callable, Callable, Callable, int] | None = None


class LiteRTBackend(Backend):
    """``model.tflite`` through the LiteRT interpreter, one signature runner per bucket.

    Args:
        model_path: the ``.tflite`` file.
        manifest: the bundle manifest; reads ``signature`` (``inputs``, ``max_candidates``,
            and when present ``signature_keys`` and ``tensor_names``).
        threads: interpreter threads.

    Raises:
        BackendUnavailable: neither ai-edge-litert nor tflite-runtime imports.
        BundleError: the file is missing, truncated or corrupt, or does not match the manifest.
    """

    name = "litert"

    def __init__(self, model_path: Path, manifest: Mapping[str, Any], threads: int = 1,
                 model_bytes: bytes | None = None):
        super().__init__(model_path, manifest, threads, model_bytes)
        Interpreter, self.runtime = _interpreter_class()
        sig = manifest["signature"]
        names = sig.get("tensor_names") or {}
        self._in_names: dict[str, str] = dict(names.get("inputs") or {n: n for n in self.input_names})
        self._out_names: dict[str, str] = dict(names.get("outputs") or {"score": "score", "click": "click"})
        self._cand = self.candidate_names
        if not self._cand:
            raise BundleError(f"{self.model_path}: the manifest signature has no candidate input")
        try:
            self._interpreter = Interpreter(model_content=self.model_bytes, num_threads=max(1, self.threads))
            available = self._interpreter.get_signature_list()
        except Exception as e:  # the runtime raises ValueError/RuntimeError on bad files
            raise BundleError(f"{self.model_path}: not a loadable LiteRT model ({e})") from e
        keys = sig.get("signature_keys")
        wanted = list(keys.values()) if keys else sorted(available)
        self._plans: dict[int, _Plan] = {}
        for key in wanted:
            plan = self._plan(key, available)
            if keys and str(plan.bucket) not in {str(k) for k, v in keys.items() if v == key}:
                raise BundleError(f"{self.model_path}: signature {key!r} holds {plan.bucket} candidates, "
                                  f"the manifest says {[k for k, v in keys.items() if v == key]}")
            self._plans[plan.bucket] = plan
        if not self._plans:
            raise BundleError(f"{self.model_path}: the model has no signatures")
        self._buckets = sorted(self._plans)
        if self._buckets[-1] < self.max_candidates:
            raise BundleError(f"{self.model_path}: largest bucket {self._buckets[-1]} < manifest max_candidates "
                              f"{self.max_candidates}")
        self._warm_up()

    def _plan(self, key: str, available: Mapping[str, Any]) -> _Plan:
        if key not in available:
            raise BundleError(f"{self.model_path}: no signature {key!r} (the model has {sorted(available)})")
        runner = self._interpreter.get_signature_runner(key)
        details, out_details = runner.get_input_details(), runner.get_output_details()
        bucket = None
        for n in self._cand:
            d = details.get(self._in_names.get(n, ""))
            if d is not None and len(d["shape"]) >= 2:
                bucket = int(d["shape"][1])
                break
        if bucket is None:
            raise BundleError(f"{self.model_path}: signature {key!r} has no input {self._in_names.get(self._cand[0])!r}")
        plan = _Plan(bucket, key, runner)
        expected = set(self._in_names[n] for n in self.input_names)
        if set(details) != expected:
            raise BundleError(f"{self.model_path}: signature {key!r} inputs {sorted(details)} do not match the "
                              f"manifest's {sorted(expected)}")
        for n in self.input_names:
            d = details[self._in_names[n]]
            if np.dtype(d["dtype"]) != self.input_dtypes[n]:
                raise BundleError(f"{self.model_path}: signature {key!r} input {n} is {np.dtype(d['dtype'])}, "
                                  f"the manifest says {self.input_dtypes[n]}")
            shape = tuple(int(s) for s in d["shape"])
            pad = np.zeros(shape, dtype=self.input_dtypes[n]) if n in self._cand else None
            plan.feeds.append((n, self._in_names[n], int(d["index"]), shape, pad))
        for n in ("score", "click"):
            d = out_details.get(self._out_names.get(n, ""))
            if d is None:
                raise BundleError(f"{self.model_path}: signature {key!r} has no output {self._out_names.get(n)!r} "
                                  f"({n}); it has {sorted(out_details)}")
            plan.outputs.append((n, self._out_names[n], int(d["index"])))
        # Fast path: the public runner resizes every input and re-runs AllocateTensors on
        # each call (about 8x slower for 100 candidates here: ~390 vs ~50 us). Our shapes
        # never change, so set, invoke and read the signature's tensors directly.
        wrapper = getattr(runner, "_interpreter_wrapper", None)
        subgraph = getattr(runner, "_subgraph_index", None)
        if wrapper is not None and isinstance(subgraph, int) and all(
                hasattr(wrapper, m) for m in ("SetTensor", "Invoke", "GetTensor")):
            plan.fast = (wrapper.SetTensor, wrapper.Invoke, wrapper.GetTensor, subgraph)
        return plan

    def _warm_up(self) -> None:
        """One run per bucket through the public runner (allocates tensors, lets XNNPACK pack
        its weights), then the same run through the fast path, which is dropped on a mismatch."""
        for plan in self._plans.values():
            feed = {}
            for n, file_name, _, shape, _ in plan.feeds:
                feed[file_name] = np.zeros(shape, dtype=self.input_dtypes[n])
            try:
                ref = plan.runner(**feed)
            except Exception as e:
                raise BundleError(f"{self.model_path}: signature {plan.key!r} does not run ({e})") from e
            if plan.fast is not None:
                try:
                    got = self._invoke_fast(plan, {n: feed[f] for n, f, _, _, _ in plan.feeds})
                    same = all(np.array_equal(got[n], ref[f]) for n, f, _ in plan.outputs)
                except Exception:
                    same = False
                if not same:  # a runtime whose internals differ: keep the public API
                    plan.fast = None

    @staticmethod
    def _invoke_fast(plan: _Plan, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_tensor, invoke, get_tensor, sg = plan.fast  # type: ignore[misc]
        for n, _, index, _, _ in plan.feeds:
            set_tensor(index, arrays[n], sg)
        invoke(sg)
        return {n: get_tensor(index, sg) for n, _, index in plan.outputs}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = inputs[self._cand[0]]
        if first.ndim < 2 or first.shape[0] != 1:
            raise InputError(f"{self._cand[0]} must have shape (1, N, ...), got {first.shape}")
        n = first.shape[1]
        if n == 0:
            empty = np.zeros((1, 0), dtype=np.float32)
            return {"score": empty, "click": empty.copy()}
        i = bisect.bisect_left(self._buckets, n)
        if i == len(self._buckets):
            raise InputError(f"{n} candidates exceed the model's largest bucket ({self._buckets[-1]}); "
                             "split the request into chunks of max_candidates")
        plan = self._plans[self._buckets[i]]
        arrays = dict(inputs)
        for name, _, _, shape, pad in plan.feeds:
            if pad is None:
                if plan.fast is None and inputs[name].shape != shape:  # the fast path's SetTensor checks this
                    raise InputError(f"{name} has shape {inputs[name].shape}; expected {shape}")
                continue
            a = inputs[name]
            if a.shape[:2] != (1, n) or a.shape[2:] != shape[2:]:
                raise InputError(f"{name} has shape {a.shape}; expected {(1, n) + shape[2:]}")
            if n != plan.bucket:
                # The buffer is reused: the runtime copies it into its own tensor.
                pad[:, :n] = a
                pad[:, n:] = 0
                arrays[name] = pad
        try:
            if plan.fast is not None:
                out = self._invoke_fast(plan, arrays)
            else:
                res = plan.runner(**{f: arrays[n] for n, f, _, _, _ in plan.feeds})
                out = {n: res[f] for n, f, _ in plan.outputs}
        except ValueError as e:  # shape or dtype of a non-candidate input
            raise InputError(f"LiteRT rejected the request: {e}") from e
        if n == plan.bucket:
            return out
        return {k: v[:, :n] for k, v in out.items()}
