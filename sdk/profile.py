"""``kdaliens-profile``: latency, memory and size of a bundle on the device it runs on.

Run it on the phone, Pi or laptop that will serve the model::

    kdaliens-profile bundles/executorch [--backend auto] [--candidates 10,100,500] [--history-len N]
        [--threads 1] [--runs 500] [--warmup 50] [--json out.json] [--plot out.png]

or from Python (several bundles in one figure)::

    >>> from kdaliens.sdk.profile import profile_bundle, plot_profiles       # doctest: +SKIP
    >>> res = [profile_bundle(b) for b in ("bundles/executorch", "bundles/onnx")]   # doctest: +SKIP
    >>> plot_profiles(res, "latency.png")                                    # doctest: +SKIP

What is measured, in this order:

1. **Cold load**: the first ``Ranker.load`` of the process, split into bundle
   verification (manifest + sha256 of every artifact) and backend load. When the
   runtime module was not imported before (``cold: true``) this includes its import;
   the ExecuTorch Python bindings import torch, which the Android/C++ runtime does not.
   ``warm_load_ms`` is a second load once everything is imported.
2. **Memory**: resident set size added by loading and by running, from ``VmHWM`` and
   ``VmRSS`` in ``/proc/self/status`` (the peak is reset through
   ``/proc/self/clear_refs`` before each phase where the kernel allows it), else from
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``; ``rss_method`` says which.
3. **Latency**, per candidate count, on synthetic but valid requests: users with a
   history of ``history_len`` events (default: 3 x the bundle's history length) drawn
   from the bundle's item vocabulary, candidates drawn from it too (ids beyond the
   vocabulary when more are asked for: new items), every item with plausible attributes
   drawn from the FeatureSpec. Each run times the full SDK path
   (``Ranker.rerank``: store reads, encoding, model, sort) and then the bare model call
   (``ranker.backend.run`` on the same request, pre-encoded, in the same chunks);
   percentiles over ``runs`` runs after ``warmup`` runs. The stores are dict lookups by
   default, so the SDK time is encoding, model and sort without I/O (``store="sqlite"``
   uses the SDK's SQLite ItemCache/BehaviorLog in a temporary file instead).
4. **Size**: the model file and the whole bundle folder, in bytes.
5. **Per operator** (ExecuTorch bundles): the model is loaded a second time with
   ETDump on, run on the largest request, and read back with
   ``executorch.devtools.Inspector`` (with the bundle's ``model.etrecord`` when present):
   top operators by time per call, each marked ``delegate`` (a lowered XNNPACK
   subgraph) or ``portable`` (an ExecuTorch CPU kernel), plus the operators inside
   the delegates. Best effort: when it cannot be done ``operators`` is null and
   ``operators_note`` says why.

JSON schema (``--json``; ``schema`` is ``"kdaliens-profile/1"``; times in ms or us as
named, memory in MB of 2**20 bytes)::

    bundle, target, quantization, backend, threads, runtime {name, version},
    device {platform, machine, python, cpu_count}, created (ISO time),
    load_ms, verify_ms, backend_load_ms, cold, warm_load_ms,
    rss_method, rss_baseline_mb, rss_added_mb, rss_load_mb, rss_run_mb (null when the
        peak cannot be reset),
    model_file, model_bytes, bundle_bytes, files {name: bytes},
    history_len, history_slots, max_candidates, runs, warmup, requests (distinct
        synthetic requests cycled through), store, attributes,
    rows: [{candidates, chunks,
            sdk_p50_us, sdk_p90_us, sdk_p99_us, sdk_mean_us,
            model_p50_us, model_p90_us, model_p99_us, model_mean_us,
            encode_p50_us,           # encoding inside rerank (stores + features), from RankedList.meta
            encode_share}],          # sum(encode_us) / sum(SDK time): the part of the SDK path spent encoding
    operators: null | {candidates, runs, execute_p50_us, execute_mean_us, other_us,
                       method_init_us, etrecord,
                       top: [{name, kind ("delegate"|"portable"), backend, kernel, calls, total_us, share,
                              ops}],
                       inside_delegates: [{name, backend, calls, total_us, share}]},
    operators_note: null | str,
    notes: [str]

``total_us`` of an operator is its mean time per model call summed over its ``calls``
instances in the graph; ``share`` is that over the mean ``Method::execute`` time.

Exit codes of the command: 0 done; 2 a bad bundle (the BundleError message), a
missing runtime (the message names the extra to install) or bad arguments; 1 when
``--plot`` could not be drawn (matplotlib missing): the table and the JSON are still
written.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailable, BundleError, InputError, KdaliensError
from .features import MultiField, NumericField, normalize_token
from .ranker import BACKEND_NAMES, Ranker

__all__ = ["PlotError", "format_profile", "main", "plot_profile", "plot_profiles", "profile_bundle"]

SCHEMA = "kdaliens-profile/1"
DEFAULT_CANDIDATES = (10, 100, 500)
DEFAULT_RUNS = 500
DEFAULT_WARMUP = 50
N_REQUESTS = 16  # distinct synthetic requests, cycled through
OPERATOR_RUNS = 200  # ETDump runs at most (after a few warm-up runs)
NOW = 1_700_000_000.0  # request time of the synthetic requests (seconds)
_MB = float(1 << 20)

# backend -> modules whose presence in sys.modules means its runtime was imported already
_RUNTIME_MODULES = {"executorch": ("executorch.runtime",), "onnxruntime": ("onnxruntime",),
                    "litert": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")}
_RUNTIME_DISTS = {"executorch": ("executorch",), "onnxruntime": ("onnxruntime",),
                  "litert": ("ai-edge-litert", "tflite-runtime")}


class PlotError(KdaliensError):
    """A plot cannot be drawn (matplotlib missing, nothing to plot)."""


# ---------------------------------------------------------------------------------- memory
class _Memory:
    """Resident memory of this process: current and peak (high-water mark), in MB."""

    def __init__(self) -> None:
        self.proc = self._status() is not None
        self.resettable = self.proc and self.reset()
        if self.proc:
            self.method = ("VmHWM/VmRSS from /proc/self/status, peak reset before each phase via "
                           "/proc/self/clear_refs" if self.resettable else
                           "VmHWM/VmRSS from /proc/self/status (process-wide peak: it cannot be reset here, so an "
                           "earlier higher peak hides what loading and running add)")
        else:
            self.method = self._rusage_method()

    @staticmethod
    def _status() -> dict[str, float] | None:
        try:
            with open("/proc/self/status") as f:
                out = {}
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        key, val = line.split(":", 1)
                        out[key] = float(val.split()[0]) * 1024 / _MB  # kB
                return out if len(out) == 2 else None
        except OSError:
            return None

    @staticmethod
    def _rusage_method() -> str:
        try:
            import resource  # noqa: F401  (Unix only)
        except ImportError:
            return "unavailable (no /proc/self/status, no resource module)"
        return ("resource.getrusage(RUSAGE_SELF).ru_maxrss before/after (process-wide peak; "
                "an earlier higher peak hides what loading and running add)")

    def reset(self) -> bool:
        """Reset the peak to the current RSS (Linux >= 4.0); False where not allowed."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def current(self) -> float | None:
        s = self._status()
        return s["VmRSS"] if s else None

    def peak(self) -> float | None:
        s = self._status()
        if s:
            return s["VmHWM"]
        try:
            import resource
        except ImportError:
            return None
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / _MB if sys.platform == "darwin" else r * 1024 / _MB  # bytes on macOS, kB elsewhere


# -------------------------------------------------------------------------------- progress
class _Progress:
    """tqdm when it imports and stderr is a terminal, else a line every quarter of the work."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.total, self.done, self.enabled, self.desc = max(1, total), 0, enabled, desc
        self._bar = None
        self._next = 0.25
        if not enabled:
            return
        try:
            isatty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            isatty = False
        if isatty:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit="run", leave=False, file=sys.stderr)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def update(self, n: int = 1) -> None:
        if not self.enabled:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.done / self.total >= self._next:
            print(f"[kdaliens-profile] {self.desc}: {100 * self.done // self.total}% "
                  f"({self.done}/{self.total} runs)", file=sys.stderr, flush=True)
            while self._next <= self.done / self.total:
                self._next += 0.25

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------- synthetic requests
class _MemoryCache:
    """The read side of :class:`~kdaliens.sdk.stores.ItemCache`, in a dict."""

    def __init__(self, attrs: Mapping[str, Mapping[str, Any]]):
        self._attrs = attrs

    def get_many(self, item_ids: Iterable[Any]) -> dict[str, dict[str, Any]]:
        a = self._attrs  # no copies: rerank only reads them
        return {i: a[i] for i in item_ids if i in a}


class _MemoryLog:
    """The read side of :class:`~kdaliens.sdk.stores.BehaviorLog`, in a dict."""

    def __init__(self, events: Mapping[str, list[dict[str, Any]]]):
        self._events = events

    def events(self, user_id: Any, before: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        ev = self._events.get(normalize_token(user_id) or "", [])
        if before is not None:
            ev = [e for e in ev if e["ts"] < before]
        return ev[-limit:] if limit else ev


def _value(field: Any, rng: np.random.Generator) -> Any:
    """A plausible raw value for one field of the spec."""
    if isinstance(field, NumericField):
        b = field.boundaries
        if not b:
            return round(float(rng.normal()), 3)
        lo, hi = b[0], b[-1]
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        return round(float(rng.uniform(lo - pad, hi + pad)), 3)
    if isinstance(field, MultiField):
        k = int(rng.integers(1, min(3, field.max_len) + 1))
        if field.vocab:
            picks = rng.choice(len(field.vocab), size=min(k, len(field.vocab)), replace=False)
            return [field.vocab[int(i)] for i in picks]
        return [f"t{int(x)}" for x in rng.integers(0, 1000, size=k)]
    if field.vocab:
        return field.vocab[int(rng.integers(len(field.vocab)))]
    return f"v{int(rng.integers(0, 100_000))}"


class _World:
    """Synthetic users, events, items and attributes drawn from a bundle's FeatureSpec."""

    def __init__(self, spec: Any, history_len: int, max_candidates: int, attributes: bool, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.spec = spec
        idf = spec.item_id_field
        vocab = getattr(spec.item_field(idf), "vocab", None)
        self.vocab_ids: list[str] = list(vocab) if vocab else [f"item{i}" for i in range(10_000)]
        self.from_vocab = bool(vocab)
        n_items = len(self.vocab_ids)
        self.candidates: list[list[str]] = []
        self.users: list[tuple[str, dict[str, Any]]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        kinds = list(spec.event_vocab) or ["click"]
        for u in range(N_REQUESTS):
            uid = f"profile-user-{u}"
            feats = {f.name: _value(f, rng) for f in spec.user_fields}
            self.users.append((uid, feats))
            items = rng.integers(0, n_items, size=history_len)
            # Spread over about 90 days before the request, oldest first.
            ts = np.sort(NOW - rng.uniform(60.0, 90 * 86400.0, size=history_len))
            self.events[uid] = [{"item_id": self.vocab_ids[int(i)], "event": kinds[int(rng.integers(len(kinds)))],
                                 "ts": float(t)} for i, t in zip(items, ts)]
        self._rng = rng
        self.item_fields = [f for f in spec.item_fields if f.name != idf]
        self.attributes = attributes
        self.attrs: dict[str, dict[str, Any]] = {}
        if attributes:
            for i in self.vocab_ids:
                self._add_item(i)

    def _add_item(self, item_id: str) -> None:
        if self.attributes and item_id not in self.attrs:
            row = {f.name: _value(f, self._rng) for f in self.item_fields}
            row[self.spec.item_id_field] = item_id
            self.attrs[item_id] = row

    def candidate_lists(self, n: int) -> list[list[str]]:
        """N_REQUESTS lists of n distinct ids: vocabulary items, then new ids past it."""
        out = []
        n_vocab = len(self.vocab_ids)
        for r in range(N_REQUESTS):
            take = min(n, n_vocab)
            picks = [self.vocab_ids[int(i)] for i in self._rng.choice(n_vocab, size=take, replace=False)]
            for j in range(n - take):
                new = f"new-item-{r}-{j}"
                self._add_item(new)
                picks.append(new)
            out.append(picks)
        return out


class _SqliteStores:
    """The SDK's own SQLite stores, filled with the synthetic world in a temporary folder."""

    def __init__(self, world: _World):
        from .stores import BehaviorLog, ItemCache

        self._dir = tempfile.TemporaryDirectory(prefix="kdaliens-profile-")
        db = os.path.join(self._dir.name, "device.db")
        self.cache = ItemCache(db, max_items=None) if world.attributes else None
        self.log = BehaviorLog(db)
        if self.cache is not None:
            self.cache.upsert(world.attrs.values())
        self.log.extend({"user_id": u, **e} for u, evs in world.events.items() for e in evs)

    def add_items(self, world: _World, ids: Iterable[str]) -> None:
        if self.cache is not None:
            self.cache.upsert(world.attrs[i] for i in ids if i in world.attrs)

    def close(self) -> None:
        for s in (self.cache, self.log):
            if s is not None:
                s.close()
        self._dir.cleanup()


# ---------------------------------------------------------------------------------- helpers
def _pct(a: np.ndarray) -> tuple[float, float, float, float]:
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return float(p50), float(p90), float(p99), float(a.mean())


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _runtime_version(backend: str) -> str | None:
    from importlib import metadata

    for dist in _RUNTIME_DISTS.get(backend, ()):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _candidates_arg(candidates: Any) -> tuple[int, ...]:
    if isinstance(candidates, (int, np.integer)) and not isinstance(candidates, bool):
        candidates = (candidates,)
    try:
        counts = tuple(candidates)
    except TypeError as e:
        raise InputError(f"candidates must be a list of positive ints, got {candidates!r}") from e
    if not counts or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in counts):
        raise InputError(f"candidates must be a non-empty list of positive ints, got {candidates!r}")
    return tuple(int(c) for c in counts)


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _chunks(ranker: Ranker, inputs: Mapping[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    """The model calls rerank makes for n candidates: chunks of at most max_candidates."""
    step = ranker.max_candidates
    return [{k: (v[:, s:s + step] if k.startswith("cand_") else v) for k, v in inputs.items()}
            for s in range(0, n, step)]


# ---------------------------------------------------------------------- operator breakdown
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


def _operator_breakdown(ranker: Ranker, chunk: Mapping[str, np.ndarray], n_cand: int, runs: int,
                        warmup: int, progress: _Progress) -> tuple[dict[str, Any] | None, str | None]:
    """Per-operator times of an ExecuTorch model through ETDump + Inspector (best effort)."""
    bundle = ranker.bundle
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
    etrecord = bundle.path / "model.etrecord"
    has_etrecord = etrecord.is_file() and "model.etrecord" in bundle.manifest.get("artifacts", {})
    method_name = bundle.manifest["signature"].get("method", "forward")
    backend = ranker.backend
    tensors = [torch.from_numpy(np.ascontiguousarray(chunk[n], dtype=backend.input_dtypes[n]))
               for n in backend.input_names]
    with tempfile.TemporaryDirectory(prefix="kdaliens-etdump-") as tmp:
        try:
            program = Runtime.get().load_program(str(bundle.model_path), enable_etdump=True, debug_buffer_size=0)
            method = program.load_method(method_name)
            for _ in range(warmup):
                method.execute(tensors)
            for _ in range(runs):
                method.execute(tensors)
                progress.update()
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
    execute: list[float] = []
    init_us = None
    top: dict[str, dict[str, Any]] = {}
    inside: dict[tuple[str, str], dict[str, Any]] = {}
    n_delegate = 0
    for block in inspector.event_blocks:
        kernel = None
        for ev in block.events:
            name = ev.name or ""
            if name == "Method::execute":
                raw = list(ev.perf_data.raw) if ev.perf_data is not None else []
                execute = [1000.0 * x for x in (raw[warmup:] if len(raw) == runs + warmup else raw)]
                continue
            if name == "Method::init":
                init_us = _event_us(ev, 0, 1)
                continue
            if name.startswith("native_call_"):
                kernel = name[len("native_call_"):]
                continue
            us = _event_us(ev, warmup, runs)
            if ev.is_delegated_op:
                key = (ev.delegate_backend_name or "delegate", _base_name(name))
                row = inside.setdefault(key, {"name": key[1], "backend": key[0], "calls": 0, "total_us": 0.0})
                row["calls"] += 1
                row["total_us"] += us
            elif name == "DELEGATE_CALL":
                n_delegate += 1
                be = ev.delegate_backend_name or "delegate"
                ops: list[str] = []
                for op in ev.op_types or []:
                    s = _short_op(op)
                    if s not in ops:
                        ops.append(s)
                top[f"{be} #{n_delegate}"] = {"name": f"{be} #{n_delegate}", "kind": "delegate", "backend": be,
                                              "kernel": None, "calls": 1, "total_us": us, "ops": ops}
            elif name == "OPERATOR_CALL":
                op = _short_op(ev.op_types[0]) if ev.op_types else (kernel or "operator")
                row = top.setdefault(op, {"name": op, "kind": "portable", "backend": None, "kernel": kernel,
                                          "calls": 0, "total_us": 0.0, "ops": []})
                row["calls"] += 1
                row["total_us"] += us
                kernel = None
    if not top:
        return None, "per-operator breakdown unavailable: the ETDump holds no operator events"
    exec_mean = float(np.mean(execute)) if execute else sum(r["total_us"] for r in top.values())
    exec_p50 = float(np.median(execute)) if execute else None
    rows = sorted(top.values(), key=lambda r: -r["total_us"])
    for r in rows:
        r["total_us"] = _r(r["total_us"])
        r["share"] = _r(r["total_us"] / exec_mean, 4) if exec_mean > 0 else None
    inner = sorted(inside.values(), key=lambda r: -r["total_us"])
    for r in inner:
        r["total_us"] = _r(r["total_us"])
        r["share"] = _r(r["total_us"] / exec_mean, 4) if exec_mean > 0 else None
    other = exec_mean - sum(r["total_us"] for r in rows)
    result = {"candidates": n_cand, "runs": runs, "execute_p50_us": _r(exec_p50), "execute_mean_us": _r(exec_mean),
              "other_us": _r(max(other, 0.0)), "method_init_us": _r(init_us), "etrecord": has_etrecord,
              "top": rows, "inside_delegates": inner}
    note = None if has_etrecord else ("no model.etrecord in the bundle: operators are named by their kernels "
                                      "and delegates list no source operators")
    return result, note


# ----------------------------------------------------------------------------- the profile
def profile_bundle(bundle_dir: str | Path, backend: str = "auto", candidates: Sequence[int] = DEFAULT_CANDIDATES,
                   history_len: int | None = None, threads: int = 1, runs: int = DEFAULT_RUNS,
                   warmup: int = DEFAULT_WARMUP, operators: bool = True, store: str = "memory",
                   attributes: bool = True, progress: bool = False, seed: int = 0) -> dict[str, Any]:
    """Profile one bundle in this process; see the module docstring for what and how.

    Args:
        bundle_dir: the bundle folder.
        backend: ``"auto"`` (the bundle's own runtime) or a backend name.
        candidates: candidate counts to time, one row each.
        history_len: events in each synthetic user's history (default: 3 x the bundle's
            history length, so the long-term sampler has work to do); 0 is a cold-start user.
        threads: runtime threads.
        runs: timed runs per candidate count (each runs the SDK path and the bare model).
        warmup: untimed runs before them.
        operators: per-operator breakdown for ExecuTorch bundles (ETDump).
        store: ``"memory"`` (dict-backed stores: encoding without I/O) or ``"sqlite"``
            (the SDK's ItemCache and BehaviorLog in a temporary file).
        attributes: give items attributes (False: candidates and history by id alone).
        progress: report progress on stderr (tqdm on a terminal, else a line per quarter).
        seed: seed of the synthetic requests.

    Returns:
        The profile, a JSON-ready dict (schema in the module docstring).

    Raises:
        BundleError: the bundle is missing, corrupt or tampered with.
        BackendUnavailable: the runtime is not installed (the message names the extra).
        InputError: bad arguments, or a backend that cannot run the bundle.
        RuntimeError: the model fails on the synthetic requests.
    """
    counts = _candidates_arg(candidates)
    threads = _int_arg("threads", threads, 1)
    runs = _int_arg("runs", runs, 1)
    warmup = _int_arg("warmup", warmup, 0)
    if history_len is not None:
        history_len = _int_arg("history_len", history_len, 0)
    if backend not in BACKEND_NAMES:
        raise InputError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    if store not in ("memory", "sqlite"):
        raise InputError(f"store must be 'memory' or 'sqlite', got {store!r}")
    bundle_dir = Path(bundle_dir)
    notes: list[str] = []

    # 1. Cold load (the first Ranker.load of this process is the one an app pays at start-up).
    gc.collect()
    mem = _Memory()
    mem.reset()
    base_rss = mem.current() if mem.proc else mem.peak()
    t0 = time.perf_counter()
    bundle = Bundle.load(bundle_dir)
    t1 = time.perf_counter()
    from .backends import backend_for_target

    name = backend_for_target(bundle.target) if backend == "auto" else backend
    cold = not any(m in sys.modules for m in _RUNTIME_MODULES.get(name, ()))
    ranker = Ranker.load(bundle, backend=backend, threads=threads)
    t2 = time.perf_counter()
    peak_load = mem.peak()
    name = ranker.backend.name
    if name == "executorch" and cold:
        notes.append("the cold load includes importing the ExecuTorch Python bindings, which import torch; "
                     "the Android/C++ runtime does not")
    if not cold:
        notes.append(f"the {name} runtime was imported before this load: load_ms excludes its import")

    # 2. Synthetic requests, encoded once for the bare model calls.
    spec = bundle.spec
    hist_len = spec.history.length * 3 if history_len is None else history_len
    world = _World(spec, hist_len, ranker.max_candidates, attributes, seed)
    per_count = {n: world.candidate_lists(n) for n in counts}
    sqlite = _SqliteStores(world) if store == "sqlite" else None
    if sqlite is not None:
        cache, log = sqlite.cache, sqlite.log
        for lists in per_count.values():
            sqlite.add_items(world, (i for ids in lists for i in ids))
    else:
        cache = _MemoryCache(world.attrs) if attributes else None
        log = _MemoryLog(world.events)
    if not world.from_vocab:
        notes.append("the item id field hashes its ids (no vocabulary): synthetic ids item0..item9999")
    encoded: dict[int, list[list[dict[str, np.ndarray]]]] = {}
    enc = ranker.encoder
    for n, lists in per_count.items():
        encoded[n] = []
        for (uid, feats), ids in zip(world.users, lists):
            events = log.events(uid, before=NOW)
            attrs = cache.get_many(set(ids) | {e["item_id"] for e in events}) if cache is not None else {}
            hist = enc.encode_history(events, now=NOW, item_attributes=attrs)
            user = enc.encode_user(feats)
            items = enc.encode_items([{**attrs.get(i, {}), spec.item_id_field: i} for i in ids])
            encoded[n].append(_chunks(ranker, ranker.encode_request(hist, user, items), n))

    # 3. Latency: SDK path, then the bare model on the same request, alternately.
    gc.collect()
    if mem.resettable:
        mem.reset()
    setup_rss = mem.current()
    op_runs = min(runs, OPERATOR_RUNS)
    op_count = max(n for n in counts)
    do_ops = operators and name == "executorch"
    total = len(counts) * (warmup + runs) + (op_runs if do_ops else 0)
    bar = _Progress(total, progress, f"{bundle_dir.name}")
    rows = []
    try:
        for n in counts:
            bar.set_description(f"{bundle_dir.name}: {n} candidates")
            lists, reqs = per_count[n], encoded[n]
            run_model = ranker.backend.run
            sdk_us = np.empty(runs)
            model_us = np.empty(runs)
            enc_us = np.empty(runs)
            for i in range(warmup + runs):
                r = i % N_REQUESTS
                uid, feats = world.users[r]
                a = time.perf_counter_ns()
                res = ranker.rerank(uid, lists[r], cache=cache, log=log, user_features=feats, now=NOW)
                b = time.perf_counter_ns()
                for chunk in reqs[r]:
                    run_model(chunk)
                c = time.perf_counter_ns()
                if res.meta.get("fallback"):
                    raise RuntimeError(f"the model failed on a synthetic request of {n} candidates: "
                                       f"{res.meta.get('error')}")
                if i >= warmup:
                    j = i - warmup
                    sdk_us[j] = (b - a) / 1e3
                    model_us[j] = (c - b) / 1e3
                    enc_us[j] = res.meta["encode_us"]
                bar.update()
            s50, s90, s99, smean = _pct(sdk_us)
            m50, m90, m99, mmean = _pct(model_us)
            rows.append({"candidates": n, "chunks": len(reqs[0]),
                         "sdk_p50_us": _r(s50), "sdk_p90_us": _r(s90), "sdk_p99_us": _r(s99), "sdk_mean_us": _r(smean),
                         "model_p50_us": _r(m50), "model_p90_us": _r(m90), "model_p99_us": _r(m99),
                         "model_mean_us": _r(mmean), "encode_p50_us": _r(float(np.median(enc_us))),
                         "encode_share": _r(float(enc_us.sum() / sdk_us.sum()), 4)})
        peak_run = mem.peak()

        # 4. Per operator (after the memory reading: the Inspector is heavy).
        ops, ops_note = None, None
        if not operators:
            ops_note = "per-operator breakdown skipped (operators=False)"
        elif name != "executorch":
            ops_note = (f"per-operator breakdown is for ExecuTorch bundles (ETDump); not done for {name} "
                        "(onnxruntime and LiteRT have their own profilers)")
        else:
            bar.set_description(f"{bundle_dir.name}: ETDump, {op_count} candidates")
            first_chunk = encoded[op_count][0][0]
            n_first = int(next(v for k, v in first_chunk.items() if k.startswith("cand_")).shape[1])
            ops, ops_note = _operator_breakdown(ranker, first_chunk, n_first, op_runs, min(warmup, 10), bar)
    finally:
        bar.close()
        if sqlite is not None:
            sqlite.close()

    # 5. A warm reload, now that the runtime is imported.
    t3 = time.perf_counter()
    again = Ranker.load(bundle_dir, backend=backend, threads=threads)
    warm_ms = (time.perf_counter() - t3) * 1e3
    del again

    files = {p.name: p.stat().st_size for p in sorted(bundle.path.iterdir()) if p.is_file()}
    if "model.etrecord" in files:
        notes.append("model.etrecord is for profiling only: a device needs the manifest and the model file")
    if base_rss is not None and peak_load is not None:
        rss_load = peak_load - base_rss
        rss_added = max(peak_load, peak_run or peak_load) - base_rss
    else:
        rss_load = rss_added = None
    rss_run = (peak_run - setup_rss) if (mem.resettable and peak_run is not None and setup_rss is not None) else None
    return {
        "schema": SCHEMA,
        "bundle": str(bundle.path),
        "target": bundle.target,
        "quantization": bundle.quantization,
        "backend": name,
        "threads": threads,
        "runtime": {"name": name, "version": _runtime_version(name)},
        "device": {"platform": platform.platform(), "machine": platform.machine(),
                   "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_ms": _r((t2 - t0) * 1e3),
        "verify_ms": _r((t1 - t0) * 1e3),
        "backend_load_ms": _r((t2 - t1) * 1e3),
        "cold": cold,
        "warm_load_ms": _r(warm_ms),
        "rss_method": mem.method,
        "rss_baseline_mb": _r(base_rss),
        "rss_added_mb": _r(rss_added),
        "rss_load_mb": _r(rss_load),
        "rss_run_mb": _r(rss_run),
        "model_file": bundle.model_path.name,
        "model_bytes": bundle.model_path.stat().st_size,
        "bundle_bytes": int(sum(files.values())),
        "files": files,
        "history_len": hist_len,
        "history_slots": spec.history.length,
        "max_candidates": ranker.max_candidates,
        "runs": runs,
        "warmup": warmup,
        "requests": N_REQUESTS,
        "store": store,
        "attributes": attributes,
        "rows": rows,
        "operators": ops,
        "operators_note": ops_note,
        "notes": notes,
    }


# ---------------------------------------------------------------------------------- output
def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1 << 20 else f"{n / _MB:.2f} MB"


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f} MB"


def format_profile(p: Mapping[str, Any], top: int = 12) -> str:
    """The profile as a readable table."""
    out = []
    th = "thread" if p["threads"] == 1 else "threads"
    rt = p["runtime"].get("version")
    out.append(f"kdaliens-profile  {p['bundle']}")
    out.append(f"  backend   {p['backend']}{f' {rt}' if rt else ''}, {p['target']} {p['quantization']}, "
               f"{p['threads']} {th}, {p['device']['machine']} ({p['device']['cpu_count']} CPUs)")
    extra = [f"{k} {_kb(v)}" for k, v in p["files"].items() if k != p["model_file"]]
    out.append(f"  size      {p['model_file']} {_kb(p['model_bytes'])}; bundle {_kb(p['bundle_bytes'])}"
               + (f" ({', '.join(extra)})" if extra else ""))
    out.append(f"  load      {p['load_ms']:.1f} ms {'cold' if p['cold'] else 'runtime already imported'} "
               f"(verify {p['verify_ms']:.1f} ms + backend {p['backend_load_ms']:.1f} ms); "
               f"warm reload {p['warm_load_ms']:.1f} ms")
    run_part = f", running {_mb(p['rss_run_mb'])}" if p.get("rss_run_mb") is not None else ""
    out.append(f"  memory    peak RSS {_mb(p['rss_added_mb'])} (loading {_mb(p['rss_load_mb'])}{run_part})")
    out.append(f"            [{p['rss_method']}]")
    out.append(f"  requests  {p['history_len']} history events -> {p['history_slots']} slots, "
               f"{'with' if p['attributes'] else 'without'} item attributes, {p['store']} stores; "
               f"{p['runs']} runs after {p['warmup']} warm-up per row")
    out.append("")
    out.append("  latency in us      ---------- SDK rerank ----------   ---------- bare model ----------   encode")
    out.append(f"  {'candidates':>10} {'chunks':>6}   {'p50':>9} {'p90':>9} {'p99':>9}   "
               f"{'p50':>9} {'p90':>9} {'p99':>9}   {'share':>6}")
    for r in p["rows"]:
        out.append(f"  {r['candidates']:>10} {r['chunks']:>6}   {r['sdk_p50_us']:>9.1f} {r['sdk_p90_us']:>9.1f} "
                   f"{r['sdk_p99_us']:>9.1f}   {r['model_p50_us']:>9.1f} {r['model_p90_us']:>9.1f} "
                   f"{r['model_p99_us']:>9.1f}   {100 * r['encode_share']:>5.1f}%")
    ops = p.get("operators")
    if ops:
        out.append("")
        out.append(f"  per operator (ETDump, {ops['candidates']} candidates, {ops['runs']} runs): Method::execute "
                   f"p50 {ops['execute_p50_us']} us, mean {ops['execute_mean_us']} us")
        out.append(f"  {'operator':<34} {'kind':<9} {'calls':>5} {'us/call':>9} {'share':>7}")
        for r in ops["top"][:top]:
            label = r["name"] if r["kind"] == "portable" else f"{r['name']}"
            out.append(f"  {label[:34]:<34} {r['kind']:<9} {r['calls']:>5} {r['total_us']:>9.2f} "
                       f"{100 * (r['share'] or 0):>6.1f}%")
            if r["kind"] == "delegate" and r["ops"]:
                out.append(f"      lowered: {', '.join(r['ops'][:8])}{' ...' if len(r['ops']) > 8 else ''}")
        if len(ops["top"]) > top:
            rest = sum(r["total_us"] for r in ops["top"][top:])
            more = f"({len(ops['top']) - top} more)"
            out.append(f"  {more:<34} {'':<9} {'':>5} {rest:>9.2f}")
        out.append(f"  {'(between operators)':<34} {'runtime':<9} {'':>5} {ops['other_us']:>9.2f}")
        if ops["inside_delegates"]:
            out.append("  inside the delegates:")
            for r in ops["inside_delegates"][:8]:
                out.append(f"    {r['name'][:40]:<40} {r['backend'][:14]:<14} {r['calls']:>5} {r['total_us']:>9.2f} "
                           f"{100 * (r['share'] or 0):>6.1f}%")
    if p.get("operators_note"):
        out.append("")
        out.append(f"  note: {p['operators_note']}")
    for n in p.get("notes", []):
        out.append(f"  note: {n}")
    return "\n".join(out)


def plot_profiles(results: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Latency against candidates for one or more profiles on one figure (PNG, SVG, ... by suffix).

    Per profile: the SDK path (solid) and the bare model (dashed), p50 as a line and the
    p90-p99 range as a band.

    Raises:
        PlotError: matplotlib is not installed, or there is nothing to plot.
    """
    results = list(results)
    if not results or not any(r.get("rows") for r in results):
        raise PlotError("nothing to plot: no profile has rows")
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotError(f"plotting needs matplotlib, which does not import here ({e}): pip install matplotlib "
                        "(profiling itself does not need it)") from e
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    ax = fig.add_subplot()
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for k, p in enumerate(results):
        rows = sorted(p["rows"], key=lambda r: r["candidates"])
        x = [r["candidates"] for r in rows]
        color = colors[k % len(colors)]
        label = f"{p['backend']} {p.get('quantization', '')}".strip()
        if len(results) > 1:
            label += f" ({Path(p['bundle']).name})"
        for part, style, marker in (("sdk", "-", "o"), ("model", "--", "s")):
            ax.plot(x, [r[f"{part}_p50_us"] for r in rows], style, marker=marker, color=color, markersize=4,
                    label=f"{label}: {'SDK rerank' if part == 'sdk' else 'bare model'} p50")
            ax.fill_between(x, [r[f"{part}_p90_us"] for r in rows], [r[f"{part}_p99_us"] for r in rows],
                            color=color, alpha=0.12 if part == "sdk" else 0.08, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({r["candidates"] for p in results for r in p["rows"]})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("candidates per request")
    ax.set_ylabel("latency (us); band: p90 to p99")
    threads = sorted({p["threads"] for p in results})
    th = "thread" if threads == [1] else "threads"
    ax.set_title(title or f"kdaliens-profile: {', '.join(map(str, threads))} {th}, {results[0]['device']['machine']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_profile(result: Mapping[str, Any], path: str | Path) -> Path:
    """:func:`plot_profiles` for one profile."""
    return plot_profiles([result], path)


# ------------------------------------------------------------------------------------- CLI
def _parse_candidates(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}")
    return counts


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kdaliens-profile",
        description="Latency (SDK rerank and bare model, p50/p90/p99), cold load time, peak memory, size and, "
                    "for ExecuTorch, a per-operator breakdown of a kdaliens bundle on this device.")
    ap.add_argument("bundle", type=Path, metavar="BUNDLE_DIR", help="a bundle folder written by kdaliens-export")
    ap.add_argument("--backend", default="auto", choices=BACKEND_NAMES, help="runtime (default: the bundle's own)")
    ap.add_argument("--candidates", type=_parse_candidates, default=DEFAULT_CANDIDATES,
                    help="candidate counts, comma-separated (default: 10,100,500)")
    ap.add_argument("--history-len", type=int, default=None,
                    help="events in each synthetic history (default: 3 x the bundle's history length)")
    ap.add_argument("--threads", type=int, default=1, help="runtime threads (default: 1)")
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per row (default: {DEFAULT_RUNS})")
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                    help=f"untimed runs before them (default: {DEFAULT_WARMUP})")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every number as JSON")
    ap.add_argument("--plot", type=Path, metavar="FILE.png", help="latency against candidates (needs matplotlib)")
    return ap


def _writable(path: Path | None) -> str | None:
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"{path}: folder {parent} does not exist"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``kdaliens-profile`` command; returns the exit code."""
    ap = _build_parser()
    args = ap.parse_args(argv)
    for what, p in (("--json", args.json), ("--plot", args.plot)):
        problem = _writable(p)
        if problem:
            print(f"kdaliens-profile: {what} {problem}", file=sys.stderr)
            return 2
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        print("kdaliens-profile: warning: --plot needs matplotlib, which is not installed (pip install matplotlib); "
              "profiling anyway", file=sys.stderr)
    try:
        result = profile_bundle(args.bundle, backend=args.backend, candidates=args.candidates,
                                history_len=args.history_len, threads=args.threads, runs=args.runs,
                                warmup=args.warmup, progress=True)
    except (BundleError, BackendUnavailable, InputError) as e:
        print(f"kdaliens-profile: error: {e}", file=sys.stderr)
        return 2
    print(format_profile(result), flush=True)
    code = 0
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    if args.plot is not None:
        try:
            plot_profile(result, args.plot)
            print(f"wrote {args.plot}")
        except PlotError as e:
            print(f"kdaliens-profile: --plot skipped: {e}", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
