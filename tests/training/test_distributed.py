"""Two-process DistributedDataParallel training on CPU (gloo) via torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_torchrun_two_processes(tmp_path: Path):
    # A small implicit log keeps the two processes quick.
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}" for u in range(1, 61) for i in rng.choice(np.arange(1, 120), size=15, replace=False)]
    data = tmp_path / "tiny.txt"
    data.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"epochs": 2, "qat_epochs": 1, "threads": 1}, "split": {"rank_negatives": 20}}))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", env["MASTER_PORT"],
           "-m", "kdaliens.training", "--data", str(data), "--out", str(out), "--tiny", "--config", str(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "student_plain", "student_kd", "student_kd_int8"}
    for m in metrics.values():
        assert set(m["ctr"]) == {"auc", "gauc", "logloss"} and set(m["ranking"]) == {"hr@10", "ndcg@10"}
        assert 0.0 <= m["ranking"]["hr@10"] <= 1.0
