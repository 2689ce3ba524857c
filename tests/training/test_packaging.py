"""The wheel carries the embedded dataset and maps the four folders onto kdaliens.*."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("kdaliens-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
        assert f"kdaliens/training/datasets/movielens-100k/{f}" in names
    assert "kdaliens/sdk/__init__.py" in names and "kdaliens/training/data/loaders.py" in names
    assert "kdaliens/export/__init__.py" in names and "kdaliens/__init__.py" in names
    for module in ("export/targets/litert.py", "export/recipes.py", "jobs/quickstart.py", "sdk/profile/cli.py",
                   "sdk/signature.py"):
        assert f"kdaliens/{module}" in names, module
    # Never the bare folder names, never tests or examples.
    assert not any(n.startswith(("sdk/", "training/", "export/", "jobs/", "tests/", "examples/", "kdaliens_root/"))
                   for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: numpy" in meta
    base = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert len(base) == 1, base  # numpy only
    # [train] trains the int8 student without a runtime: torchao, never ExecuTorch.
    train = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:") and "extra == \"train\"" in ln]
    assert any("torchao" in ln for ln in train), train
    assert not any(r in ln for ln in train for r in ("executorch", "onnxruntime", "ai-edge-litert")), train


def test_embedded_dataset_resolves_inside_the_package():
    from kdaliens.training.data.loaders import embedded_path

    p = embedded_path("movielens-100k")
    assert (p / "ml-100k.inter").exists()
    assert "shared" not in p.parts


def test_version_is_the_installed_metadata_and_imports_nothing():
    code = ("import sys, importlib.metadata, kdaliens; "
            "assert kdaliens.__version__ == importlib.metadata.version('kdaliens'), kdaliens.__version__; "
            "assert not any(m.startswith(('kdaliens.', 'numpy', 'torch')) for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith('kdaliens.'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
