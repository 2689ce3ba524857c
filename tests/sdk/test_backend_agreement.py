"""The three bundles of one run agree on the same requests, allowing for int8 noise."""

from __future__ import annotations

import numpy as np

from kdaliens.sdk import BehaviorLog, ItemCache, Ranker
from kdaliens.training.data import load_dataset


def test_three_backends_give_the_same_top10(et_bundle, onnx_bundle, tflite_bundle, tmp_path):
    ds = load_dataset("movielens-100k")
    db = tmp_path / "device.db"
    cache = ItemCache(db)
    cache.upsert(ds.items.to_dict("records"))
    log = BehaviorLog(db)
    users = [str(u) for u in range(1, 21)]
    inter = ds.interactions[ds.interactions.user_id.isin(users)]
    log.extend({"user_id": r.user_id, "item_id": r.item_id, "event": str(int(r.rating)), "ts": float(r.timestamp)}
               for r in inter.itertuples())
    rankers = {b: Ranker.load(b) for b in (et_bundle, onnx_bundle, tflite_bundle)}
    assert {r.backend.name for r in rankers.values()} == {"executorch", "onnxruntime", "litert"}
    runtimes = {r.backend.name: r.backend.runtime for r in rankers.values()}
    assert runtimes["litert"].startswith("ai-edge-litert ")  # auto: the cheaper LiteRT runtime
    assert runtimes["onnxruntime"].startswith("onnxruntime ") and runtimes["executorch"].startswith("executorch ")
    rng = np.random.default_rng(0)
    items = list(ds.items.item_id)
    overlaps, corrs = [], []
    for u in users:
        cands = list(rng.choice(items, size=100, replace=False))
        ranked = {b: r.rerank(u, cands, cache=cache, log=log, now=2e9) for b, r in rankers.items()}
        ref = ranked[et_bundle]  # fp32
        ref_scores = dict(ref)
        for b in (onnx_bundle, tflite_bundle):
            top = {i for i, _ in ranked[b][:10]}
            overlaps.append(len(top & {i for i, _ in ref[:10]}))
            other = dict(ranked[b])
            a = np.array([ref_scores[c] for c in cands])
            o = np.array([other[c] for c in cands])
            corrs.append(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(o)))[0, 1])
    assert np.mean(overlaps) >= 8.5, overlaps
    assert min(overlaps) >= 6, overlaps
    assert min(corrs) > 0.97, corrs
