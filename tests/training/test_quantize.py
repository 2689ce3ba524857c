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
    recipe = QuantConfig(large_table_bits=4)
    done = snap_embeddings(model, recipe)
    assert done == [("0", 4, "float16"), ("1", 8, "float32")]
    big = model[0].weight
    assert not big.requires_grad
    # At most 15 distinct values per row on the 4-bit grid.
    assert max(len(torch.unique(r)) for r in big) <= 15
    assert size_bytes(model, int8=True, recipe=recipe) == table_bytes(1000, 16, 4, "float16") + table_bytes(
        20, 16, 8, "float32") == 1000 * (8 + 2) + 20 * (16 + 4)


def test_quant_config_rejects_bad_values_and_round_trips():
    with pytest.raises(InputError, match="4 or 8"):
        QuantConfig(large_table_bits=2)
    with pytest.raises(InputError, match="float16"):
        RunConfig.from_dict({"quant": {"large_table_scale_dtype": "bfloat16"}})
    assert QuantConfig().table(255) == (8, "float32") and QuantConfig().table(256) == (4, "float16")
    cfg = RunConfig()
    cfg.quant = QuantConfig(large_table_bits=8)
    assert config_of({"config": cfg.to_dict()}).quant == QuantConfig(large_table_bits=8)


_QAT_WITHOUT_RUNTIMES = """
import sys
for name in ("executorch", "onnxruntime", "onnx", "ai_edge_litert", "ai_edge_quantizer", "litert_torch"):
    sys.modules[name] = None  # as if `pip install kdaliens[train]`: no runtime, no export tooling
import torch
from kdaliens.sdk.features import CategoricalField, FeatureSpec, MultiField
from kdaliens.sdk.history import HistorySpec
from kdaliens.training.config import QuantConfig, StudentConfig
from kdaliens.training.models.student import StudentRanker
from kdaliens.training.quantize import convert_qat_graph, example_inputs, prepare_qat_graph

spec = FeatureSpec(user_fields=(CategoricalField("age", vocab=("a", "b")),),
                   item_fields=(CategoricalField("item_id", vocab=tuple(str(i) for i in range(300))),
                                MultiField("genres", max_len=3, vocab=("x", "y", "z"))),
                   history=HistorySpec(short_len=3, long_len=2), event_vocab=("click",))
torch.manual_seed(0)
student = StudentRanker(spec, StudentConfig(dim=8, short_len=3, long_len=2, mlp=(16, 8)))
prepared, names = prepare_qat_graph(student, QuantConfig())
opt = torch.optim.Adam(prepared.parameters(), lr=1e-2)
x = example_inputs(spec, B=4, N=5)
for _ in range(3):
    inter, click, _ = prepared(*x)
    loss = inter.pow(2).mean() + click.pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
fq = sum("FakeQuantize" in type(m).__name__ for m in prepared.modules())
quantized = convert_qat_graph(prepared)
inter, _, _ = quantized(*x)
assert inter.shape == (4, 5) and torch.isfinite(inter).all()
assert not any(m.startswith("executorch") for m in sys.modules if sys.modules[m] is not None)
print("ok", fq)
"""


def test_int8_qat_needs_no_runtime():
    # Training fakes the runtime-neutral Int8Grid through torchao alone.
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _QAT_WITHOUT_RUNTIMES], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ok, n_fake_quant = r.stdout.split()[-2:]
    # Three hidden linear layers (user projection, two head layers): input, weight and output each.
    assert ok == "ok" and int(n_fake_quant) >= 6, r.stdout


@pytest.mark.parametrize("qat_lr, target", [(0.0, "task"), (1e-3, "task"), (1e-3, "fp32")])
def test_int8_step_calibrates_or_fine_tunes(tiny_run, qat_lr, target):
    """qat_lr 0 keeps the distilled weights (only the activation grid is calibrated);
    a positive rate moves them, on the task losses or toward the fp32 student."""
    from kdaliens.training.checkpoint import load_model
    from kdaliens.training.data import load_prepared
    from kdaliens.training.distill import TeacherSignals
    from kdaliens.training.loop import Context, DistEnv
    from kdaliens.training.student_loop import StudentTrainer, evaluate_student

    out, _ = tiny_run
    teacher, cfg, _, _ = load_model(out / "teacher.pt")
    kd, _, _, _ = load_model(out / "student_kd.pt")
    cfg.train.qat_lr, cfg.train.qat_target = qat_lr, target
    ctx = Context(load_prepared("movielens-100k", cfg.data, cfg.split), cfg)
    lines: list[str] = []
    res = StudentTrainer(ctx, DistEnv(), lines.append, TeacherSignals(teacher, ctx)).quantize(kd)
    head = kd.head[0].weight.detach()
    qat_head = next(v for k, v in res.qat_state.items() if k.endswith("head_0_weight") or k.endswith("head.0.weight"))
    moved = float((qat_head - head).abs().max())
    assert (moved == 0.0) if qat_lr == 0 else (moved > 0.0)
    assert any(("calibrating" in s) if qat_lr == 0 else (f"on the {target} targets" in s) for s in lines), lines
    m = evaluate_student(res.model, ctx, "val")
    assert 0.5 < m["ctr"]["auc"] <= 1 and 0 < m["ranking"]["hr@10"] <= 1


def test_fake_quantized_tables_pass_gradients_and_swap_back():
    from kdaliens.training.distill import EmbeddingPerturbation
    from kdaliens.training.quantize import FakeQuantEmbedding, fake_quantize_embeddings, plain_embeddings

    model = nn.Sequential(nn.Embedding(300, 16, padding_idx=0), nn.Embedding(20, 16))
    recipe = QuantConfig(large_table_bits=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fake_quantize_embeddings(model, recipe)
    assert all(isinstance(m, FakeQuantEmbedding) for m in model)
    assert len(EmbeddingPerturbation(model, 0.1).modules) == 2  # LRC's perturbation still sees the tables
    ids = torch.tensor([[1, 2, 3]])
    out = model[0](ids)
    q, s = quantize_table(model[0].weight, 4, "float16")
    assert torch.equal(out[0], dequantize_table(q, s)[ids[0]])  # the forward reads the grid
    out.pow(2).sum().backward()
    assert model[0].weight.grad[1:4].abs().sum() > 0  # straight-through: the latent rows learn
    assert plain_embeddings(model) == 2
    assert all(type(m) is nn.Embedding for m in model) and model[0].padding_idx == 0
    assert model.state_dict().keys() == before.keys()  # checkpoints load into the plain model


def test_train_on_grid_gives_a_student_already_on_the_int8_grid(tiny_run):
    """quant.train_on_grid: the distilled student trains through its tables' fake
    quantization and comes back holding them on the grid, so the int8 step's snap
    changes nothing."""
    from kdaliens.training.checkpoint import load_model
    from kdaliens.training.data import load_prepared
    from kdaliens.training.distill import TeacherSignals
    from kdaliens.training.loop import Context, DistEnv
    from kdaliens.training.student_loop import StudentTrainer

    out, _ = tiny_run
    teacher, cfg, _, _ = load_model(out / "teacher.pt")
    cfg.train.epochs, cfg.quant.train_on_grid = 1, True
    ctx = Context(load_prepared("movielens-100k", cfg.data, cfg.split), cfg)
    lines: list[str] = []
    res = StudentTrainer(ctx, DistEnv(), lines.append, TeacherSignals(teacher, ctx)).train("student_kd", on_grid=True)
    assert any("train on the int8 step's grid" in s and "4-bit" in s for s in lines), lines
    tables = [m for m in res.model.modules() if isinstance(m, nn.Embedding)]
    assert tables and all(type(m) is nn.Embedding for m in tables)
    for m in tables:
        w = m.weight.detach().clone()
        snap_embeddings(m, cfg.quant, freeze=False)
        assert torch.equal(m.weight, w)  # already on its grid
    assert any(m.num_embeddings >= cfg.quant.large_table_rows for m in tables)
