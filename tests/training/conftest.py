"""A tiny trained run on the real MovieLens-100K, shared by the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from kdaliens.training.config import tiny_config
    from kdaliens.training.pipeline import run

    out = tmp_path_factory.mktemp("tiny-run")
    metrics = run("movielens-100k", out, tiny_config(), log=lambda s: None)
    return out, metrics
