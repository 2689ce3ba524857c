"""Checkpoints: config, feature spec and weights, in a file ``torch.load(weights_only=True)`` reads.

No pickled code: the payload is plain dicts, lists, strings, numbers and tensors. A model
is rebuilt from its config and spec, then its weights are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdaliens.sdk.errors import InputError
from kdaliens.sdk.features import FeatureSpec
from kdaliens.sdk.fileio import atomic_write

from .config import RunConfig

FORMAT = "kdaliens-checkpoint"
VERSION = 1
KINDS = ("teacher", "student", "student_qat")


def save_checkpoint(path: Path, kind: str, cfg: RunConfig, spec: FeatureSpec, state_dict: dict[str, torch.Tensor],
                    extra: dict[str, Any] | None = None) -> None:
    """Write atomically (temporary file, then rename)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "config": cfg.to_dict(), "spec": spec.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "extra": extra or {}}
    atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such checkpoint") from e
    except Exception as e:  # torch raises several types for corrupt files
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a kdaliens checkpoint")
    if payload.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint version {payload.get('version')} is not supported (want {VERSION})")
    return payload


def config_of(payload: dict[str, Any]) -> RunConfig:
    """The run config of a checkpoint (keys it lacks take their defaults)."""
    return RunConfig.from_dict(payload["config"])


def load_model(path: Path) -> tuple[nn.Module, RunConfig, FeatureSpec, dict[str, Any]]:
    """Rebuild a model from a checkpoint. ``student_qat`` comes back converted to int8."""
    from .models.student import StudentRanker
    from .models.teacher import Teacher

    p = read_checkpoint(path)
    cfg = config_of(p)
    spec = FeatureSpec.from_dict(p["spec"])
    kind = p["kind"]
    if kind in ("teacher", "student"):
        if kind == "teacher":
            # Count the networks saved: click-only ones are skipped on implicit data, and an
            # EMKD teacher has distill.emkd_members ranking networks.
            n_click = len({k.split(".")[1] for k in p["state_dict"] if k.startswith("click.")})
            n_rank = len({k.split(".")[1] for k in p["state_dict"] if k.startswith("rank.")})
            model: nn.Module = Teacher(spec, cfg.teacher, click_members=max(0, n_click - n_rank), members=n_rank)
        else:
            model = StudentRanker(spec, cfg.student)
        try:
            model.load_state_dict(p["state_dict"])
        except RuntimeError as e:
            raise InputError(f"{path}: the {kind} weights do not fit this version's model "
                             f"(a checkpoint from another kdaliens version?): {str(e)[:300]}") from e
    else:
        from .quantize import convert_qat_graph, prepare_qat_graph

        prepared, _ = prepare_qat_graph(StudentRanker(spec, cfg.student).eval(), cfg.quant)
        prepared.load_state_dict(p["state_dict"])
        return convert_qat_graph(prepared), cfg, spec, p["extra"]  # already in eval mode
    model.eval()
    return model, cfg, spec, p["extra"]
