"""The device SDK must import with numpy and the standard library only."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_sdk_imports_with_heavy_modules_blocked():
    code = textwrap.dedent("""
        import sys
        for name in ("torch", "onnxruntime", "executorch", "ai_edge_litert", "tflite_runtime", "pandas",
                     "onnx", "litert_torch"):
            sys.modules[name] = None  # any import of these now raises ImportError
        import kdaliens.sdk as sdk
        spec = sdk.FeatureSpec(user_fields=(), item_fields=(sdk.CategoricalField("item_id", vocab=("1",)),))
        enc = sdk.FeatureEncoder(spec)
        enc.encode_history([{"item_id": 1, "ts": 1.0}], now=2.0)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("torch", "onnxruntime", "executorch", "pandas") and sys.modules[m] is not None)
        assert not heavy, heavy
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
