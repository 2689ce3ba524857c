"""The embedding-table quantization recipe QAT trains on and the exporters store."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.training.checkpoint import config_of
from kdaliens.training.config import QuantConfig, RunConfig
from kdaliens.training.pipeline import size_bytes
from kdaliens.training.quantize import dequantize_table, quantize_table, snap_embeddings, table_bytes


@pytest.mark.parametrize("bits,scale_dtype", [(8, "float32"), (8, "float16"), (4, "float32"), (4, "float16")])
def test_quantizing_a_snapped_table_is_exact(bits, scale_dtype):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(300, 16, generator=g) * torch.rand(300, 1, generator=g) * 3
    w[7] = 0.0  # an all-zero row (padding) must not divide by zero
    w[8] = 1e-9  # nor a row below fp16's range
    q, s = quantize_table(w, bits, scale_dtype)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and s.dtype == getattr(torch, scale_dtype)
    assert int(q.abs().max()) == qmax and int(q.min()) >= -qmax  # symmetric: -8 unused at 4 bits
    snapped = dequantize_table(q, s)
    assert torch.all(snapped[7] == 0)
    # Error bounded by half a step per row (plus rounding the row to fp16).
    rounding = w.abs() * 2.0 ** -10 if scale_dtype == "float16" else 0.0
    assert torch.all((snapped - w).abs() <= s.float()[:, None] / 2 + rounding + 1e-6)
    q2, s2 = quantize_table(snapped, bits, scale_dtype)
    assert torch.equal(q2, q) and torch.equal(s2, s)


def test_snap_embeddings_follows_the_recipe():
    model = nn.Sequential(nn.Embedding(1000, 16), nn.Embedding(20, 16))
    recipe = QuantConfig()
    done = snap_embeddings(model, recipe)
    assert done == [("0", 4, "float16"), ("1", 8, "float32")]
    big = model[0].weight
    assert not big.requires_grad
    # At most 15 distinct values per row on the 4-bit grid.
    assert max(len(torch.unique(r)) for r in big) <= 15
    assert size_bytes(model, int8=True, recipe=recipe) == table_bytes(1000, 16, 4, "float16") + table_bytes(
        20, 16, 8, "float32") == 1000 * (8 + 2) + 20 * (16 + 4)


def test_quant_config_rejects_bad_values_and_old_checkpoints_get_the_legacy_recipe():
    with pytest.raises(InputError, match="4 or 8"):
        QuantConfig(large_table_bits=2)
    with pytest.raises(InputError, match="float16"):
        RunConfig.from_dict({"quant": {"large_table_scale_dtype": "bfloat16"}})
    assert QuantConfig().table(255) == (8, "float32") and QuantConfig().table(256) == (4, "float16")
    cfg = RunConfig()
    legacy = cfg.to_dict()
    del legacy["quant"]
    assert config_of({"config": legacy}).quant == QuantConfig.legacy()
    assert config_of({"config": cfg.to_dict()}).quant == QuantConfig()
