"""``kdaliens-export --out`` never deletes what kdaliens did not write."""

from __future__ import annotations

import json
import shutil

import pytest

from kdaliens.export.api import export_bundle
from kdaliens.export.bundle import check_out, write_bundle, write_debug
from kdaliens.export.cli import main as export_main
from kdaliens.sdk import Bundle, InputError


def _precious(tmp_path, et_bundle):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("years of work")
    shutil.copytree(et_bundle, out / "other-bundle")
    return out


def _staged(et_bundle, tmp_path, name="staging"):
    """A staging folder holding a real model file, and its manifest."""
    staging = tmp_path / name
    staging.mkdir()
    m = json.loads((et_bundle / "manifest.json").read_text())
    for f in m["artifacts"]:
        shutil.copy(et_bundle / f, staging / f)
    return staging, m


def test_cli_refuses_a_folder_it_did_not_write(tiny_run, et_bundle, tmp_path, capsys):
    out = _precious(tmp_path, et_bundle)
    rc = export_main(["--target", "onnx", "--run", str(tiny_run[0]), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "did not write (notes.txt, other-bundle/)" in err and "--force" in err
    assert (out / "notes.txt").read_text() == "years of work"
    assert Bundle.load(out / "other-bundle").target == "executorch"
    with pytest.raises(InputError, match="did not write"):
        export_bundle(tiny_run[0], "onnx", out)
    with pytest.raises(InputError, match="not a folder kdaliens wrote"):
        check_out(out / "notes.txt")


def test_a_bundle_is_replaced_but_not_one_holding_other_files(et_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(et_bundle, out)
    staging, m = _staged(et_bundle, tmp_path)
    write_bundle(out, staging, m)  # a bundle and nothing else: replaced
    assert Bundle.load(out).target == "executorch"
    (out / "mine.txt").write_text("x")
    staging, m = _staged(et_bundle, tmp_path, "staging2")
    with pytest.raises(InputError, match=r"did not write \(mine.txt\)"):
        write_bundle(out, staging, m)
    assert (out / "mine.txt").exists()
    write_bundle(out, staging, m, force=True)  # the user said so
    assert not (out / "mine.txt").exists() and Bundle.load(out).target == "executorch"


def test_a_users_debug_folder_is_left_alone(et_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(et_bundle, out)
    mine = tmp_path / "b.debug"
    mine.mkdir()
    (mine / "diary.txt").write_text("keep")
    write_debug(out, None, "0" * 64)  # an export without --debug clears only its own debug folder
    assert (mine / "diary.txt").read_text() == "keep"
    with pytest.raises(InputError, match="b.debug holds files kdaliens did not write"):
        check_out(out)
