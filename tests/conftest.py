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
