"""kdaliens-train's flags: presets, --set, --device, --max-minutes, and the synthetic log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdaliens.sdk import InputError
from kdaliens.training.cli import build_parser, config_from_args, main
from kdaliens.training.config import RunConfig, merge, preset, tiny_config
from kdaliens.training.data import load_dataset
from kdaliens.training.data.synthetic import SyntheticConfig, generate, write_sasrec


def _cfg(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["--data", "x", "--out", "y", *argv]))


def test_presets_and_overrides_compose_in_order(tmp_path: Path):
    assert _cfg() == RunConfig()
    assert _cfg("--preset", "tiny") == tiny_config() == _cfg("--tiny")
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"teacher": {"dim": 32}, "train": {"epochs": 4}}))
    cfg = _cfg("--preset", "tiny", "--config", str(f), "--set", "teacher.dim=48", "--set", "teacher.mlp=[8,4]",
               "--set", "distill.method=default", "--epochs", "2", "--seed", "5", "--device", "cpu")
    assert cfg.teacher.dim == 48 and cfg.teacher.mlp == (8, 4) and cfg.teacher.history_len == 20  # tiny kept
    assert cfg.train.epochs == 2 and cfg.train.seed == 5 and cfg.train.device == "cpu"
    assert cfg.train.max_minutes is None
    assert _cfg("--max-minutes", "7.5").train.max_minutes == 7.5
    # Values that are not JSON stay strings; the dataclass then checks them.
    assert merge(preset("default"), None, ["train.device=cpu"]).train.device == "cpu"
    # How the log is read and split are typed sections too; column maps stay free-form.
    cfg = merge(preset("default"), {"data": {"implicit": True}}, ["split.rank_negatives=50", "data.columns.user_id=uid"])
    assert cfg.split.rank_negatives == 50 and cfg.data.columns == {"user_id": "uid"} and cfg.data.implicit is True
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    # Renamed keys keep their old names (old checkpoints and config files still load).
    old = merge(preset("default"), {"train": {"interaction_weight": 0.5}}, ["train.click_weight=0.25"])
    assert (old.train.hard_interaction_weight, old.train.hard_click_weight) == (0.5, 0.25)


@pytest.mark.parametrize("item, message", [
    ("teacher.dimm=3", "unknown key 'dimm'"),
    ("teachr.dim=3", "unknown config section 'teachr'"),
    ("teacher.dim=abc", "expected int"),
    ("teacher=3", "expected section.key=value"),
    ("train.device=tpu", "train.device must be one of"),
    ("train.max_minutes=0", "max_minutes must be > 0"),
    ("distill.method=nope", "distill.method 'nope': use one of default, spnn, lrc, emkd"),
    ("split.foo=1", "unknown key 'foo' in split"),
    ("split.seed=a", "run.split.seed: expected int"),
    ("data.implicit=3", "run.data.implicit: expected true, false or null"),
    ("data.columns=3", "run.data.columns: expected an object of strings"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(InputError, match=message):
        merge(preset("default"), None, [item])


def test_cli_reports_bad_flags_without_a_traceback(capsys, tmp_path: Path):
    assert main(["--data", "movielens-100k", "--out", str(tmp_path / "r"), "--set", "teacher.dimm=3"]) == 2
    err = capsys.readouterr().err
    assert "kdaliens-train: error:" in err and "dimm" in err and "Traceback" not in err


def test_tiny_pipeline_on_the_cpu_with_a_time_budget(tmp_path: Path, tiny_run):
    """The command line end to end: --device cpu, an opt-in budget recorded in config.json.

    The budget is far from binding, so the run must give the same models as the session's
    in-process tiny run (same preset and seed, one thread): the same seed, the same metrics.
    """
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "kdaliens.training", "--data", "movielens-100k", "--out", str(out),
                        "--preset", "tiny", "--device", "cpu", "--max-minutes", "30", "--set", "train.threads=1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "time budget 30.0 min" in r.stderr
    assert json.loads((out / "config.json").read_text())["train"]["max_minutes"] == 30.0
    assert json.loads((out / "run.json").read_text())["device"] == "cpu"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "student_plain", "student_kd", "student_kd_int8"}
    assert all("ranking_full" in m for m in metrics.values())
    _, reference = tiny_run
    for name, m in metrics.items():
        for block in ("ctr", "ranking", "ranking_full"):
            for key, value in m[block].items():
                assert value == pytest.approx(reference[name][block][key], abs=1e-6), (name, block, key)


def test_synthetic_log_is_seeded_and_readable(tmp_path: Path):
    cfg = SyntheticConfig(users=300, items=400, topics=20, mean_len=10, seed=3)
    u1, i1 = generate(cfg)
    u2, i2 = generate(cfg)
    np.testing.assert_array_equal(i1, i2)
    assert not np.array_equal(i1, generate(SyntheticConfig(users=300, items=400, topics=20, mean_len=10, seed=4))[1])
    counts = np.bincount(u1)
    assert len(counts) == 300 and counts.min() >= cfg.min_len and 7 < counts.mean() < 13
    assert i1.min() >= 0 and i1.max() < 400
    path = tmp_path / "synth.txt"
    stats = write_sasrec(path, cfg)
    ds = load_dataset(path)
    assert ds.implicit and len(ds.interactions) == stats["interactions"] == len(i1)
    assert ds.interactions["user_id"].nunique() == 300


# ------------------------------------------------------------------------------ own data
ROOT = Path(__file__).resolve().parents[2]


def _readme_block(heading: str, lang: str, contains: str) -> str:
    """The first ``lang`` code block under the README's ``heading`` that contains ``contains``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = section.split(f"```{lang}\n")[1:]
    return next(b.split("```", 1)[0] for b in blocks if contains in b)


def test_readme_own_data_example_trains_and_reports_its_columns(tmp_path: Path):
    """The README's "Bring your own data" command, verbatim but for its output folder."""
    import shlex

    cmd = shlex.split(_readme_block("## Bring your own data", "bash", "kdaliens-train").replace("\\\n", " "))
    assert cmd[0] == "kdaliens-train"
    out = tmp_path / "shop"
    args = cmd[1:]
    args[args.index("--out") + 1] = str(out)
    r = subprocess.run([sys.executable, "-m", "kdaliens.training", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("[data] columns"))
    assert "user_id=customer, item_id=sku, timestamp=time, rating=stars" in line
    assert "user attributes region, age; item attributes category; ignored: price" in line
    assert "3,941 rows read, 3,941 interactions kept" in line
    cfg = json.loads((out / "config.json").read_text())["data"]
    assert cfg["user_columns"] == ["region", "age"] and cfg["item_columns"] == ["category"]
    spec = json.loads((out / "spec.json").read_text())
    assert {f["name"] for f in spec["user_fields"]} == {"region", "age"}
    assert {f["name"] for f in spec["item_fields"]} == {"item_id", "category"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student_kd_int8"]["ranking"]["hr@10"] > 0  # it ranked something


def test_readme_yaml_config_equals_the_flags(tmp_path: Path):
    yaml_cfg = tmp_path / "shop.yaml"
    yaml_cfg.write_text(_readme_block("## Bring your own data", "yaml", "columns"))
    toml_cfg = tmp_path / "shop.toml"
    toml_cfg.write_text('[data]\ncolumns = {user_id = "customer", item_id = "sku", timestamp = "time", '
                        'rating = "stars"}\nuser_columns = ["region", "age"]\nitem_columns = ["category"]\n')
    flags = _cfg("--columns", "user_id=customer,item_id=sku,timestamp=time,rating=stars",
                 "--user-cols", "region,age", "--item-cols", "category")
    assert _cfg("--config", str(yaml_cfg)) == flags == _cfg("--config", str(toml_cfg))
    assert flags.data.columns == {"user_id": "customer", "item_id": "sku", "timestamp": "time", "rating": "stars"}
    # Flags combine with --preset and --set, and win over the file.
    cfg = _cfg("--preset", "tiny", "--config", str(yaml_cfg), "--set", "teacher.dim=24", "--columns", "item_id=code")
    assert cfg.teacher.dim == 24 and cfg.student.dim == tiny_config().student.dim
    assert cfg.data.columns["item_id"] == "code" and cfg.data.columns["user_id"] == "customer"


@pytest.mark.parametrize("argv, match", [
    (["--columns", "user=uid"], "is not one of"),
    (["--columns", "user_id"], "is not OURS=YOURS"),
    (["--columns", ","], "--columns is empty"),
    (["--user-cols", " , "], "--user-cols is empty"),
])
def test_bad_column_flags_are_one_line_errors(argv, match):
    with pytest.raises(InputError, match=match):
        _cfg(*argv)


def test_bad_config_files_are_one_line_errors(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(InputError, match="not a valid yaml config"):
        _cfg("--config", str(bad))
    lst = tmp_path / "list.toml"
    lst.write_text("x = 1\n")
    with pytest.raises(InputError, match="unknown"):
        _cfg("--config", str(lst))
    with pytest.raises(InputError, match="cannot read"):
        _cfg("--config", str(tmp_path / "missing.json"))


def test_event_column_becomes_the_event_kinds(tmp_path: Path):
    """A log's own event column (--columns event=...) gives the kinds a device logs."""
    from kdaliens.training.data import load_prepared

    rng = np.random.default_rng(0)
    n = 600
    rows = ["uid,sku,ts,action"] + [f"u{rng.integers(0, 20)},i{rng.integers(0, 400)},{k},"
                                    f"{['view', 'cart', 'buy'][k % 3] if k % 7 else ''}" for k in range(n)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg("--columns", "user_id=uid,item_id=sku,timestamp=ts,event=action")
    prep = load_prepared(tmp_path / "log.csv", cfg.data, cfg.split, use_cache=False)
    assert set(prep.spec.event_vocab) == {"buy", "cart", "view", "interact"}  # a missing kind: "interact"
    assert prep.spec.default_event in {"view", "cart", "buy"} and prep.implicit  # the most common kind
    kinds = [prep.spec.event_vocab[i - 2] for i in prep.ev_event]
    assert kinds.count("interact") == sum(1 for k in range(n) if k % 7 == 0)


def test_quiet_prints_results_and_failures_only(capsys, monkeypatch):
    from kdaliens.training.quiet import tool_log

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert tool_log(False) is print
    log = tool_log(True, keep=("[export] wrote",))
    for line in ("[data] movielens-100k: 100,000 interactions", "[teacher] epoch 1: loss 6.1", "model   AUC",
                 "teacher 0.8279", "[export] wrote bundles/onnx", "[quickstart] export onnx FAILED: ParityError"):
        log(line)
    assert capsys.readouterr().out.splitlines() == ["model   AUC", "teacher 0.8279", "[export] wrote bundles/onnx",
                                                    "[quickstart] export onnx FAILED: ParityError"]
    import os

    assert os.environ["TQDM_DISABLE"] == "1"  # no bars either
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "x", "--out", "y", "--quiet", "--verbose"])
