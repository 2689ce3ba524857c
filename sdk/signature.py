"""The model's input and output signature, derived once from a :class:`FeatureSpec`.

Training, every exporter, the golden-vector writer and the :class:`~kdaliens.sdk.Ranker`
read names, roles, shapes and cardinalities from here; nothing else parses input-name
prefixes. One request is one user and N candidates:

* ``user_<field>``: (1,) or (1, W), role ``user``;
* ``hist_<history item field>``: (1, L) or (1, L, W); ``hist_event``, ``hist_time_gap``:
  (1, L); ``hist_mask``: (1, L) float32 1/0; role ``history``;
* ``cand_<item field>``: (1, N) or (1, N, W), role ``candidate``.

W is a multi field's ``max_len``, L the history length (``feature_spec.history``: the
manifest states it there only, and writes ``"history"`` in shapes), N the number of
candidates (``"n_cand"``). Ids are int64, or int32 where a runtime wants it (LiteRT).

Example:
    >>> sig = ModelSignature.from_spec(spec)                      # doctest: +SKIP
    >>> sig.candidate_names                                        # doctest: +SKIP
    ['cand_item_id', 'cand_year', 'cand_genres']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any

import numpy as np

from .errors import BundleError
from .features import FeatureSpec

N_CAND = "n_cand"
HISTORY = "history"
OUTPUT_NAMES = ("score", "click")
ID_DTYPES = ("int64", "int32")


class Role(str, Enum):
    """What a model input carries."""

    USER = "user"
    HISTORY = "history"
    CANDIDATE = "candidate"


_PREFIX = {Role.USER: "user_", Role.HISTORY: "hist_", Role.CANDIDATE: "cand_"}


@dataclass(frozen=True)
class InputSpec:
    """One model input.

    Attributes:
        name: the input's name in every exported program.
        role: user, history or candidate.
        key: where the encoder puts it: a user or item field name, or a ``hist_*`` key.
        is_id: int ids (dtype chosen per target); else float32 (only ``hist_mask``).
        width: ids per row (a multi field's ``max_len``), or None for one id.
        cardinality: ids run over ``[0, cardinality)``; None for the mask.
    """

    name: str
    role: Role
    key: str
    is_id: bool
    width: int | None
    cardinality: int | None

    def dims(self) -> tuple[Any, ...]:
        """Symbolic shape: 1 for the request, ``"history"``, ``"n_cand"``, then the width."""
        middle = {Role.USER: (), Role.HISTORY: (HISTORY,), Role.CANDIDATE: (N_CAND,)}[self.role]
        return (1, *middle) + ((self.width,) if self.width else ())

    def shape(self, history: int, n_cand: int | str = N_CAND, batch: int = 1) -> tuple[Any, ...]:
        """The shape with the history length filled in (``n_cand`` may stay symbolic)."""
        sizes = {HISTORY: history, N_CAND: n_cand}
        return (batch,) + tuple(sizes.get(d, d) for d in self.dims()[1:])

    def dtype(self, id_dtype: str = "int64") -> str:
        return id_dtype if self.is_id else "float32"


@dataclass(frozen=True)
class ModelSignature:
    """The ordered inputs and the outputs of a ranking model for one feature spec."""

    inputs: tuple[InputSpec, ...]
    history_len: int
    outputs: tuple[str, ...] = OUTPUT_NAMES

    @classmethod
    def from_spec(cls, spec: FeatureSpec) -> ModelSignature:
        """User fields, history item fields, event, time gap, mask, candidate fields: in that order."""

        def field_input(role: Role, f) -> InputSpec:
            width = f.width if f.kind == "multi" else None
            return InputSpec(_PREFIX[role] + f.name, role, f.name if role != Role.HISTORY else "hist_" + f.name,
                             True, width, f.cardinality)

        inputs = [field_input(Role.USER, f) for f in spec.user_fields]
        inputs += [field_input(Role.HISTORY, spec.item_field(n)) for n in spec.history_item_fields or ()]
        inputs.append(InputSpec("hist_event", Role.HISTORY, "hist_event", True, None, spec.event_field.cardinality))
        inputs.append(InputSpec("hist_time_gap", Role.HISTORY, "hist_time_gap", True, None,
                                spec.time_gap_field.cardinality))
        inputs.append(InputSpec("hist_mask", Role.HISTORY, "hist_mask", False, None, None))
        inputs += [field_input(Role.CANDIDATE, f) for f in spec.item_fields]
        return cls(tuple(inputs), spec.history.length)

    # ------------------------------------------------------------------ lookup
    @cached_property
    def names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @cached_property
    def candidate_names(self) -> list[str]:
        return [i.name for i in self.inputs if i.role == Role.CANDIDATE]

    @cached_property
    def _candidate_set(self) -> frozenset[str]:
        return frozenset(self.candidate_names)

    def input_for(self, role: Role, key: str) -> InputSpec:
        """The input of ``role`` read from encoder key ``key`` (a field name or ``hist_*`` key)."""
        for i in self.inputs:
            if i.role == role and i.key == key:
                return i
        raise KeyError(f"{role.value} input {key!r}")

    def __getitem__(self, name: str) -> InputSpec:
        for i in self.inputs:
            if i.name == name:
                return i
        raise KeyError(name)

    def shapes(self, n_cand: int | str = N_CAND, batch: int = 1) -> list[tuple[Any, ...]]:
        return [i.shape(self.history_len, n_cand, batch) for i in self.inputs]

    # ------------------------------------------------------------------ requests
    def request(self, history: Mapping[str, np.ndarray], user: Mapping[str, np.ndarray],
                cands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model inputs (1, ...) from the encoder's history, user and candidate outputs."""
        out: dict[str, np.ndarray] = {}
        for i in self.inputs:
            if i.role == Role.USER:
                out[i.name] = user[i.key]
            elif i.role == Role.CANDIDATE:
                out[i.name] = cands[i.key][None]
            else:
                out[i.name] = history[i.key][None]
        return out

    def slice_candidates(self, inputs: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
        """The same request over candidates ``[start, stop)`` (other inputs are shared)."""
        cand = self._candidate_set  # computed once: the Ranker slices every chunk of every call
        return {n: (v[:, start:stop] if n in cand else v) for n, v in inputs.items()}

    def n_candidates(self, inputs: Mapping[str, Any]) -> int:
        return int(inputs[self.candidate_names[0]].shape[1])

    # ------------------------------------------------------------------ manifest
    def to_manifest(self, id_dtype: str, max_candidates: int, method: str = "forward",
                    **extra: Any) -> dict[str, Any]:
        """The manifest's ``signature`` block (the history length stays in ``feature_spec``)."""
        if id_dtype not in ID_DTYPES:
            raise ValueError(f"id_dtype must be one of {ID_DTYPES}, got {id_dtype!r}")
        return {
            "inputs": [{"name": i.name, "role": i.role.value, "dtype": i.dtype(id_dtype), "shape": list(i.dims())}
                       for i in self.inputs],
            "outputs": [{"name": n, "dtype": "float32", "shape": [1, N_CAND]} for n in self.outputs],
            "max_candidates": int(max_candidates),
            "method": method,
            **extra,
        }

    def check_manifest(self, sig: Mapping[str, Any], where: str = "manifest") -> None:
        """Raise :class:`BundleError` unless a manifest's signature is this one."""
        names = [i.get("name") for i in sig.get("inputs", ()) if isinstance(i, Mapping)]
        if names != self.names:
            raise BundleError(f"{where}: signature inputs {names} do not match the feature spec's {self.names}")
        dtypes = {i["name"]: i.get("dtype") for i in sig["inputs"]}
        for i in self.inputs:
            ok = dtypes[i.name] in ID_DTYPES if i.is_id else dtypes[i.name] == "float32"
            if not ok:
                raise BundleError(f"{where}: signature input {i.name!r} has dtype {dtypes[i.name]!r}")
