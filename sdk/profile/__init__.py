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

from .measure import DEFAULT_CANDIDATES, DEFAULT_RUNS, DEFAULT_WARMUP, SCHEMA, profile_bundle
from .plot import PlotError, plot_profile, plot_profiles
from .report import format_profile


def main(argv=None) -> int:
    """The ``kdaliens-profile`` command (:mod:`kdaliens.sdk.profile.cli`); returns the exit code."""
    from .cli import main as _main

    return _main(argv)


__all__ = ["DEFAULT_CANDIDATES", "DEFAULT_RUNS", "DEFAULT_WARMUP", "SCHEMA", "PlotError", "format_profile", "main",
           "plot_profile", "plot_profiles", "profile_bundle"]
