"""Shared test set-up: a private preprocessing cache and seeded RNGs per test."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    # Keep the user's ~/.cache untouched and make cache behaviour testable.
    os.environ["KDALIENS_CACHE"] = str(tmp_path_factory.mktemp("kdaliens-cache"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained run on the real MovieLens-100K (about 30 s), shared by all tests."""
    from kdaliens.training.config import tiny_config
    from kdaliens.training.pipeline import run

    out = tmp_path_factory.mktemp("tiny-run")
    metrics = run("movielens-100k", out, tiny_config(), log=lambda s: None)
    return out, metrics


@pytest.fixture(scope="session")
def et_bundle(tiny_run, tmp_path_factory):
    """An fp32 ExecuTorch bundle of the tiny run (parity on 200 requests), with its
    ETRecord in ``executorch.debug/`` beside it."""
    from kdaliens.export.api import export_bundle

    run_dir, _ = tiny_run
    out = tmp_path_factory.mktemp("bundles") / "executorch"
    export_bundle(run_dir, "executorch", out, quantize="none", parity_limit=200, log=lambda s: None, debug=True)
    return out


@pytest.fixture(scope="session")
def onnx_bundle(tiny_run, tmp_path_factory):
    """An int8 ONNX bundle of the tiny run."""
    from kdaliens.export.api import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "onnx"
    export_bundle(tiny_run[0], "onnx", out, parity_limit=200, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def tflite_bundle(tiny_run, tmp_path_factory):
    """An int8 LiteRT bundle of the tiny run; two small buckets keep conversion quick
    (100 candidates then run in two chunks)."""
    from kdaliens.export.api import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tflite"
    export_bundle(tiny_run[0], "tflite", out, max_candidates=64, buckets=(16, 64), parity_limit=200,
                  log=lambda s: None)
    return out
