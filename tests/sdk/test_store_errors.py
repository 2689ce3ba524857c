"""Locked, read-only and corrupt store files are three different StoreErrors, each saying which."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from kdaliens.sdk.stores import ItemCache, StoreError


@pytest.fixture
def db(tmp_path):
    p = tmp_path / "device.db"
    c = ItemCache(p)
    c.upsert([{"item_id": 1}])
    c.close()
    return p


def test_locked_store_says_locked(db):
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked: .*timed out after 0.2 s") as e:
            ItemCache(db, busy_timeout=0.2).upsert([{"item_id": 2}])
        assert "corrupt" not in str(e.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    ItemCache(db).upsert([{"item_id": 2}])  # usable again once the lock is gone


def test_read_only_store_says_read_only(db):
    # Tests run as root here, which ignores file modes: an immutable file is read-only for root too.
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        cache = ItemCache(db)
        assert cache.get("1") is not None  # reads still work
        with pytest.raises(StoreError, match="read-only: upsert cannot write") as e:
            cache.upsert([{"item_id": 3}])
        assert "corrupt" not in str(e.value)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_corrupt_store_says_corrupt(db):
    with open(db, "r+b") as f:
        f.write(b"garbage!" * 16)
    with pytest.raises(StoreError, match="not a SQLite database, or it is corrupt"):
        ItemCache(db)
