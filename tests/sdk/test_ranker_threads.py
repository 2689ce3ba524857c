"""One Ranker shared by threads, while other threads and processes write the item cache.

Every backend, real runtimes, real SQLite files: four threads rerank 1,000 requests in
all through one shared Ranker while a fifth thread and a second process keep upserting
items (the same attributes again, so the right answers do not change but every kept
item encoding is invalidated again and again). Each answer must equal the one a single
thread got before, item for item and score for score, and nothing may raise.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kdaliens.sdk import Ranker
from kdaliens.sdk.profile.synthetic import N_REQUESTS, NOW, SqliteStores, World
from kdaliens.sdk.stores import ItemCache

THREADS, CALLS = 4, 1000


def _writer_process(db: Path, ids: list[str], stop: Path) -> subprocess.Popen:
    """Another process that re-upserts the given items' current rows until ``stop`` exists."""
    code = textwrap.dedent(f"""
        import os, time
        from kdaliens.sdk.stores import ItemCache
        cache = ItemCache({str(db)!r}, max_items=None)
        ids = {ids!r}
        rows = [r for r in (cache.get_many(ids[i:i + 200]) for i in range(0, len(ids), 200))]
        rows = [dict(v) for part in rows for v in part.values()]
        print("ready", flush=True)
        i = 0
        while not os.path.exists({str(stop)!r}):
            cache.upsert(rows[i % len(rows):i % len(rows) + 5])
            i += 5
            time.sleep(0.001)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.parametrize("fixture", ["et_bundle", "onnx_bundle", "tflite_bundle"])
def test_shared_ranker_under_concurrent_upserts(fixture, request, tmp_path):
    bundle = request.getfixturevalue(fixture)
    ranker = Ranker.load(bundle)
    world = World(ranker.spec, history_len=3 * ranker.spec.history.length, max_candidates=ranker.max_candidates,
                  attributes=True, seed=3)
    lists = world.candidate_lists(100)
    stores = SqliteStores(world)
    try:
        cache, log = stores.cache, stores.log

        def call(r: int):
            uid, feats = world.users[r]
            res = ranker.rerank(uid, lists[r], cache=cache, log=log, user_features=feats, now=NOW)
            assert not res.meta["fallback"], res.meta["error"]
            return list(res)

        expected = [call(r) for r in range(N_REQUESTS)]
        stop = threading.Event()
        errors: list[BaseException] = []
        wrong: list[int] = []
        done = [0] * THREADS

        def worker(t: int) -> None:
            try:
                for i in range(t, CALLS, THREADS):
                    r = i % N_REQUESTS
                    if call(r) != expected[r]:
                        wrong.append(i)
                    done[t] += 1
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        rows = list(world.attrs.values())

        def upserter() -> None:
            own = ItemCache(cache.path, max_items=None)
            i = 0
            while not stop.is_set():
                own.upsert(rows[i % len(rows):i % len(rows) + 3])
                i += 3
                time.sleep(0.0005)
            own.close()

        stop_file = tmp_path / "stop"
        proc = _writer_process(Path(cache.path), [r[world.spec.item_id_field] for r in rows[:400]], stop_file)
        gen0 = cache.generation()
        side = threading.Thread(target=upserter)
        side.start()
        workers = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=600)
        stop.set()
        side.join(timeout=60)
        stop_file.touch()
        assert proc.wait(timeout=60) == 0
        assert not errors, repr(errors[:3])
        assert sum(done) == CALLS and not wrong, f"{len(wrong)} of {CALLS} rankings differ"
        assert cache.generation() != gen0  # the writers really wrote while the readers read
    finally:
        stores.close()
