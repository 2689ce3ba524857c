"""``profile_bundle``: load, memory, latency and size of one bundle, measured in this process.

The phases, in order (each a method of :class:`_Profile`): cold load, synthetic requests
encoded once, latency rows (the whole SDK path and the bare model call, alternately),
the backend's own per-operator breakdown where it has one (ExecuTorch), a warm reload,
then sizes. The package docstring (:mod:`kdaliens.sdk.profile`) describes each number.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import backend_for_target
from ..bundle import Bundle
from ..errors import InputError
from ..ranker import BACKEND_NAMES, Ranker
from ..readers import MemoryEvents, MemoryItems
from .synthetic import N_REQUESTS, NOW, SqliteStores, World

SCHEMA = "kdaliens-profile/1"
DEFAULT_CANDIDATES = (10, 100, 500)
DEFAULT_RUNS = 500
DEFAULT_WARMUP = 50
OPERATOR_RUNS = 200  # ETDump runs at most (after a few warm-up runs)
_MB = float(1 << 20)

# backend -> modules whose presence in sys.modules means its runtime was imported already
_RUNTIME_MODULES = {"executorch": ("executorch.runtime",), "onnxruntime": ("onnxruntime",),
                    "litert": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")}
_RUNTIME_DISTS = {"executorch": ("executorch",), "onnxruntime": ("onnxruntime",),
                  "litert": ("ai-edge-litert", "tflite-runtime")}

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
    return [ranker.signature.slice_candidates(inputs, s, s + step) for s in range(0, n, step)]


# ----------------------------------------------------------------------------- the profile
def profile_bundle(bundle_dir: str | Path, backend: str = "auto", candidates: Sequence[int] = DEFAULT_CANDIDATES,
                   history_len: int | None = None, threads: int = 1, runs: int = DEFAULT_RUNS,
                   warmup: int = DEFAULT_WARMUP, operators: bool = True, store: str = "memory",
                   attributes: bool = True, progress: bool = False, seed: int = 0) -> dict[str, Any]:
    """Profile one bundle in this process; see :mod:`kdaliens.sdk.profile` for what and how.

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
        The profile, a JSON-ready dict (schema in the package docstring).

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
    p = _Profile(Path(bundle_dir), backend, threads)
    p.load()
    p.requests(counts, history_len, attributes, store, seed)
    try:
        p.latency(counts, runs, warmup, operators, progress)
    finally:
        if p.sqlite is not None:
            p.sqlite.close()
    return p.result(counts, runs, warmup, store, attributes)


class _Profile:
    """One profile's state, phase by phase."""

    def __init__(self, bundle_dir: Path, backend: str, threads: int):
        self.bundle_dir, self.backend, self.threads = bundle_dir, backend, threads
        self.notes: list[str] = []
        self.sqlite: SqliteStores | None = None

    def load(self) -> None:
        """1. Cold load (the first Ranker.load of this process is the one an app pays at start-up)."""
        gc.collect()
        self.mem = mem = _Memory()
        mem.reset()
        self.base_rss = mem.current() if mem.proc else mem.peak()
        t0 = time.perf_counter()
        self.bundle = Bundle.load(self.bundle_dir)
        t1 = time.perf_counter()
        name = backend_for_target(self.bundle.target) if self.backend == "auto" else self.backend
        self.cold = not any(m in sys.modules for m in _RUNTIME_MODULES.get(name, ()))
        self.ranker = Ranker.load(self.bundle, backend=self.backend, threads=self.threads)
        t2 = time.perf_counter()
        self.peak_load = mem.peak()
        self.name = self.ranker.backend.name
        self.load_ms = {"load_ms": _r((t2 - t0) * 1e3), "verify_ms": _r((t1 - t0) * 1e3),
                        "backend_load_ms": _r((t2 - t1) * 1e3)}
        if self.name == "executorch" and self.cold:
            self.notes.append("the cold load includes importing the ExecuTorch Python bindings, which import torch; "
                              "the Android/C++ runtime does not")
        if not self.cold:
            self.notes.append(f"the {self.name} runtime was imported before this load: load_ms excludes its import")

    def requests(self, counts: tuple[int, ...], history_len: int | None, attributes: bool, store: str,
                 seed: int) -> None:
        """2. Synthetic requests, encoded once for the bare model calls."""
        spec, ranker = self.bundle.spec, self.ranker
        self.hist_len = spec.history.length * 3 if history_len is None else history_len
        self.world = world = World(spec, self.hist_len, ranker.max_candidates, attributes, seed)
        self.per_count = {n: world.candidate_lists(n) for n in counts}
        if store == "sqlite":
            self.sqlite = SqliteStores(world)
            self.cache, self.log = self.sqlite.cache, self.sqlite.log
            for lists in self.per_count.values():
                self.sqlite.add_items(world, (i for ids in lists for i in ids))
        else:
            self.cache = MemoryItems(world.attrs) if attributes else None
            self.log = MemoryEvents(world.events)
        if not world.from_vocab:
            self.notes.append("the item id field hashes its ids (no vocabulary): synthetic ids item0..item9999")
        enc = ranker.encoder
        self.encoded: dict[int, list[list[dict[str, np.ndarray]]]] = {}
        for n, lists in self.per_count.items():
            self.encoded[n] = []
            for (uid, feats), ids in zip(world.users, lists):
                events = self.log.events(uid, before=NOW)
                attrs = self.cache.get_many(set(ids) | {e["item_id"] for e in events}) if self.cache else {}
                hist = enc.encode_history(events, now=NOW, item_attributes=attrs)
                items = enc.encode_items([{**attrs.get(i, {}), spec.item_id_field: i} for i in ids])
                self.encoded[n].append(_chunks(ranker, ranker.encode_request(hist, enc.encode_user(feats), items), n))

    def latency(self, counts: tuple[int, ...], runs: int, warmup: int, operators: bool, progress: bool) -> None:
        """3. Latency rows, then 4. the per-operator breakdown (after the memory reading: it is heavy)."""
        gc.collect()
        mem = self.mem
        if mem.resettable:
            mem.reset()
        self.setup_rss = mem.current()
        op_runs = min(runs, OPERATOR_RUNS)
        do_ops = operators and self.name == "executorch"
        bar = _Progress(len(counts) * (warmup + runs) + (op_runs if do_ops else 0), progress, self.bundle_dir.name)
        try:
            self.rows = [self._row(n, runs, warmup, bar) for n in counts]
            self.peak_run = mem.peak()
            self.ops, self.ops_note = None, None
            if not operators:
                self.ops_note = "per-operator breakdown skipped (operators=False)"
            elif not do_ops:
                self.ops_note = (f"per-operator breakdown is for ExecuTorch bundles (ETDump); not done for "
                                 f"{self.name} (onnxruntime and LiteRT have their own profilers)")
            else:
                from ..backends.executorch import operator_breakdown

                n = max(counts)
                bar.set_description(f"{self.bundle_dir.name}: ETDump, {n} candidates")
                chunk = self.encoded[n][0][0]
                self.ops, self.ops_note = operator_breakdown(
                    self.ranker.backend, self.bundle.path, self.bundle.manifest, chunk,
                    self.ranker.signature.n_candidates(chunk), op_runs, min(warmup, 10), bar.update)
        finally:
            bar.close()

    def _row(self, n: int, runs: int, warmup: int, bar: _Progress) -> dict[str, Any]:
        """The SDK path, then the bare model on the same request, alternately."""
        bar.set_description(f"{self.bundle_dir.name}: {n} candidates")
        lists, reqs, world, ranker = self.per_count[n], self.encoded[n], self.world, self.ranker
        run_model = ranker.backend.run
        sdk_us, model_us, enc_us = np.empty(runs), np.empty(runs), np.empty(runs)
        for i in range(warmup + runs):
            r = i % N_REQUESTS
            uid, feats = world.users[r]
            a = time.perf_counter_ns()
            res = ranker.rerank(uid, lists[r], cache=self.cache, log=self.log, user_features=feats, now=NOW)
            b = time.perf_counter_ns()
            for chunk in reqs[r]:
                run_model(chunk)
            c = time.perf_counter_ns()
            if res.meta.get("fallback"):
                raise RuntimeError(f"the model failed on a synthetic request of {n} candidates: {res.meta.get('error')}")
            if i >= warmup:
                j = i - warmup
                sdk_us[j], model_us[j], enc_us[j] = (b - a) / 1e3, (c - b) / 1e3, res.meta["encode_us"]
            bar.update()
        s50, s90, s99, smean = _pct(sdk_us)
        m50, m90, m99, mmean = _pct(model_us)
        return {"candidates": n, "chunks": len(reqs[0]),
                "sdk_p50_us": _r(s50), "sdk_p90_us": _r(s90), "sdk_p99_us": _r(s99), "sdk_mean_us": _r(smean),
                "model_p50_us": _r(m50), "model_p90_us": _r(m90), "model_p99_us": _r(m99),
                "model_mean_us": _r(mmean), "encode_p50_us": _r(float(np.median(enc_us))),
                "encode_share": _r(float(enc_us.sum() / sdk_us.sum()), 4)}

    def result(self, counts: tuple[int, ...], runs: int, warmup: int, store: str, attributes: bool) -> dict[str, Any]:
        """5. A warm reload, now that the runtime is imported; then sizes and the JSON."""
        t3 = time.perf_counter()
        again = Ranker.load(self.bundle_dir, backend=self.backend, threads=self.threads)
        warm_ms = (time.perf_counter() - t3) * 1e3
        del again
        bundle, mem = self.bundle, self.mem
        files = {p.name: p.stat().st_size for p in sorted(bundle.path.iterdir()) if p.is_file()}
        if "model.etrecord" in files:  # bundles exported before debugging artifacts moved to <bundle>.debug/
            self.notes.append("model.etrecord is for profiling only: a device needs the manifest and the model file; "
                              "re-export to leave it out (kdaliens-export --debug puts it beside the bundle)")
        rss_load = rss_added = None
        if self.base_rss is not None and self.peak_load is not None:
            rss_load = self.peak_load - self.base_rss
            rss_added = max(self.peak_load, self.peak_run or self.peak_load) - self.base_rss
        rss_run = None
        if mem.resettable and self.peak_run is not None and self.setup_rss is not None:
            rss_run = self.peak_run - self.setup_rss
        return {
            "schema": SCHEMA, "bundle": str(bundle.path), "target": bundle.target.value,
            "quantization": bundle.quantization, "backend": self.name, "threads": self.threads,
            "runtime": {"name": self.name, "version": _runtime_version(self.name)},
            "device": {"platform": platform.platform(), "machine": platform.machine(),
                       "python": platform.python_version(), "cpu_count": os.cpu_count()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.load_ms, "cold": self.cold, "warm_load_ms": _r(warm_ms),
            "rss_method": mem.method, "rss_baseline_mb": _r(self.base_rss), "rss_added_mb": _r(rss_added),
            "rss_load_mb": _r(rss_load), "rss_run_mb": _r(rss_run),
            "model_file": bundle.model_path.name, "model_bytes": bundle.model_path.stat().st_size,
            "bundle_bytes": int(sum(files.values())), "files": files,
            "history_len": self.hist_len, "history_slots": bundle.spec.history.length,
            "max_candidates": self.ranker.max_candidates, "runs": runs, "warmup": warmup, "requests": N_REQUESTS,
            "store": store, "attributes": attributes, "rows": self.rows,
            "operators": self.ops, "operators_note": self.ops_note, "notes": self.notes,
        }
