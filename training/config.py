"""Typed configs for training, kept apart from the modules. Each round-trips to JSON.

A run's full config (:class:`RunConfig`) goes into every checkpoint and into
``RUN_DIR/config.json``; ``kdaliens-train --config FILE`` reads a JSON file with any
subset of its keys, for example ``{"teacher": {"dim": 32}, "train": {"epochs": 5}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

from kdaliens.sdk.errors import InputError

T = TypeVar("T")

#: Keys renamed since 0.1.0, per config section: the old name still works (old checkpoints, files, --set).
RENAMED: dict[str, dict[str, str]] = {
    "train": {"interaction_weight": "hard_interaction_weight", "click_weight": "hard_click_weight"},
}


def _from_dict(cls: type[T], d: Mapping[str, Any], where: str) -> T:
    if not isinstance(d, Mapping):
        raise InputError(f"config {where}: expected an object, got {type(d).__name__}")
    renamed = RENAMED.get(where.rsplit(".", 1)[-1], {})
    d = {renamed.get(k, k): v for k, v in d.items()}
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - set(known)
    if unknown:
        raise InputError(f"config {where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    kw = {}
    defaults = cls()  # type: ignore[call-arg]
    for k, v in d.items():
        default = getattr(defaults, k)
        if is_dataclass(default) and hasattr(default, "from_dict"):  # a section that reads itself (DataConfig)
            kw[k] = type(default).from_dict(v)
        elif is_dataclass(default) and isinstance(v, Mapping):
            kw[k] = _from_dict(type(default), v, f"{where}.{k}")
        elif isinstance(default, tuple) and isinstance(v, (list, tuple)):
            kw[k] = tuple(v)
        else:
            kw[k] = _check_type(v, default, f"{where}.{k}")
    return cls(**kw)  # type: ignore[call-arg]


def _check_type(v: Any, default: Any, where: str) -> Any:
    """The value if it has the default's type (ints pass for floats); else InputError."""
    if isinstance(default, bool):
        ok = isinstance(v, bool)
    elif isinstance(default, int):
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif isinstance(default, float) or (default is None and not isinstance(v, (str, Mapping, list))):
        ok = v is None and default is None or isinstance(v, (int, float)) and not isinstance(v, bool)
    elif isinstance(default, str):
        ok = isinstance(v, str)
    else:
        ok = True
    if not ok:
        raise InputError(f"config {where}: expected {type(default).__name__ if default is not None else 'a number'}"
                         f", got {v!r}")
    return float(v) if isinstance(default, float) else v


#: What ``DataConfig.columns`` (and ``kdaliens-train --columns``) maps to a file's column names.
COLUMN_ROLES = ("user_id", "item_id", "timestamp", "rating", "label", "event")


@dataclass
class DataConfig:
    """How to read a log. Every field has a default that fits the common formats.

    Args:
        columns: for CSV/Parquet, maps our names (``user_id``, ``item_id``,
            ``timestamp``, ``rating``, ``label``) to the file's column names. Missing
            entries are guessed from common spellings (``userId``, ``movieId``, ``ts``...).
        user_columns / item_columns: for CSV/Parquet, extra columns that are user or
            item attributes (the first value seen per user or item is kept).
        field_kinds: overrides the kind of an attribute: ``categorical``, ``numeric``,
            ``multi`` (separator-split tokens) or ``skip``.
        click_threshold: an explicit rating at or above this is a click (label 1).
        implicit: force implicit feedback (ignore ratings); None means decide from
            the data (no rating and no label column means implicit).
    """

    columns: dict[str, str] = field(default_factory=dict)
    user_columns: list[str] = field(default_factory=list)
    item_columns: list[str] = field(default_factory=list)
    field_kinds: dict[str, str] = field(default_factory=dict)
    click_threshold: float = 4.0
    implicit: bool | None = None

    def __post_init__(self) -> None:
        unknown = [k for k in self.columns if k not in COLUMN_ROLES]
        if unknown:
            raise InputError(f"config run.data.columns: {unknown[0]!r} is not one of {list(COLUMN_ROLES)} "
                             "(our names, each mapped to one of your columns)")

    def to_dict(self) -> dict:
        return {"columns": dict(self.columns), "user_columns": list(self.user_columns),
                "item_columns": list(self.item_columns), "field_kinds": dict(self.field_kinds),
                "click_threshold": self.click_threshold, "implicit": self.implicit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        if not isinstance(d, Mapping):
            raise InputError(f"config run.data: expected an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"config run.data: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        for k in ("columns", "field_kinds"):
            if k in d and not (isinstance(d[k], Mapping) and all(isinstance(x, str) for x in d[k].values())):
                raise InputError(f"config run.data.{k}: expected an object of strings, got {d[k]!r}")
        for k in ("user_columns", "item_columns"):
            if k in d and not (isinstance(d[k], (list, tuple)) and all(isinstance(x, str) for x in d[k])):
                raise InputError(f"config run.data.{k}: expected a list of strings, got {d[k]!r}")
        if d.get("implicit") not in (None, True, False):
            raise InputError(f"config run.data.implicit: expected true, false or null, got {d['implicit']!r}")
        kw = dict(d)
        if "click_threshold" in kw:
            kw["click_threshold"] = _check_type(kw["click_threshold"], 4.0, "run.data.click_threshold")
        return cls(**kw)


@dataclass
class SplitConfig:
    """Settings of preprocessing and the two evaluation protocols.

    Args:
        ctr_test_frac: share of each user's last interactions held out for CTR test.
        ctr_val_frac: share before those held out for validation.
        implicit_negatives: for implicit data, sampled negatives per positive (CTR).
        rank_negatives: unobserved items each leave-one-out target is ranked against.
        numeric_buckets: quantile buckets for numeric attributes.
        multi_max_len: cap on tokens per multi-valued attribute (genres).
        hash_threshold: categorical attributes with more distinct values than this
            are hashed (into this many buckets) instead of getting a vocabulary.
        seed: seed of the negative sampling.
    """

    ctr_test_frac: float = 0.1
    ctr_val_frac: float = 0.1
    implicit_negatives: int = 1
    rank_negatives: int = 100
    numeric_buckets: int = 10
    multi_max_len: int = 6
    hash_threshold: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.ctr_test_frac < 0.5 and 0 <= self.ctr_val_frac < 0.5):
            raise InputError("ctr_test_frac must be in (0, 0.5) and ctr_val_frac in [0, 0.5)")
        if self.rank_negatives < 1 or self.implicit_negatives < 1:
            raise InputError("rank_negatives and implicit_negatives must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeacherConfig:
    """KD-ALIENS teacher.

    Args:
        dim: embedding and model width.
        history_len: events of history the sequence encoder sees (a window).
        attn_len: the newest events each candidate attends to (raw and contextual).
        seq_encoder: registered sequence encoder ("transformer", "sam", "dumn", "spnn").
        seq_layers / seq_heads: encoder depth and heads over the history.
        interaction: registered interaction block ("alien").
        alien_layers / alien_heads: self-attention across field embeddings (click head).
        mlp: hidden sizes of the click head.
        rank_mlp: hidden sizes of the candidate-aware part of the interaction logit.
        dropout: dropout in the encoder and heads.
        ensemble: independently seeded teacher networks whose logits are averaged
            (1: a single KD-ALIENS teacher).
        click_members: extra independently seeded networks that serve only the click
            head. Each trains with the same objective but stops on its own validation
            AUC, which peaks long before the ranking (about a third of the epochs); the
            click logit is the mean over every click snapshot. Ignored on implicit data.
        purify: with ``seq_encoder="dumn"``, project the implicit-feedback summary
            orthogonally against the explicit-feedback one (feature purification);
            False turns it off (the ablation). Ignored by the other encoders and on data
            without explicit feedback.
        match_history: give each candidate what an exact search of the whole history
            finds about it (a hard search, as in SIM): how often it occurs among the
            ``history_len`` events, how many events back its newest occurrence is, and
            that occurrence's event token (its rating). O(log L) per candidate. Worth it on
            logs where items come back (re-consumption, long-range repeats); inert when
            they never do (ML-100K rates each movie once).
    """

    dim: int = 32
    history_len: int = 200
    attn_len: int = 50
    seq_encoder: str = "transformer"
    seq_layers: int = 2
    seq_heads: int = 2
    interaction: str = "alien"
    alien_layers: int = 2
    alien_heads: int = 2
    mlp: tuple[int, ...] = (128, 64)
    rank_mlp: tuple[int, ...] = (64,)
    dropout: float = 0.2
    ensemble: int = 1
    click_members: int = 1
    purify: bool = True
    match_history: bool = False

    def __post_init__(self) -> None:
        if self.dim < 1 or self.history_len < 1 or self.attn_len < 1 or self.ensemble < 1:
            raise InputError("teacher: dim, history_len, attn_len and ensemble must be >= 1")
        if self.click_members < 0:
            raise InputError(f"teacher.click_members must be >= 0, got {self.click_members}")


@dataclass
class StudentConfig:
    """KD-ALIENS student, built for the device.

    Args:
        dim: embedding width (small: the tables dominate the file size).
        short_len: the last k events always in the history.
        long_len: m events sampled from the older history.
        mlp: hidden sizes of the head.
    """

    dim: int = 16
    short_len: int = 20
    long_len: int = 10
    mlp: tuple[int, ...] = (64, 32)
    dropout: float = 0.1


@dataclass
class DistillConfig:
    """How the student learns from the teacher: composable losses (0 turns one off).

    Each distilled event's candidates are the event's item, the teacher's
    ``hard_negatives`` top-ranked items the user did not touch in the training period
    (its top-K at the end of that period), and the uniform negatives of plain training.
    The ground-truth softmax only sees the item and the uniform negatives: the
    teacher's top items are likely good ones, so they are only taught through the
    teacher's scores.

    ``method`` picks a recipe from the seed papers on top of these losses; several join
    with "+" where they compose (``"emkd+lrc"``: the EMKD ensemble teaches through the
    LRC-BERT schedule):

    * ``default``: the losses below alone;
    * ``spnn``: intermediate-layer distillation (SPNN): adaptors map the student's user
      vector, target attention and item vector to the teacher's widths, and a learned
      knowledge detector weights each layer's matching per sample;
    * ``lrc``: LRC-BERT: an angular-distance (1 - cos) contrastive loss on the same
      intermediate layers, alone for ``lrc_stage1_epochs`` epochs, then the soft and
      hard labels; and gradient perturbation of the embedding outputs;
    * ``emkd``: EMKD: the teacher is ``emkd_members`` networks trained together (KL
      between each and the others, contrastive learning on two augmented views of
      each sequence, within and across networks, and attribute prediction); the
      ensemble then teaches the student with the losses below.

    Args:
        method: "default", "spnn", "lrc", "emkd", or several of the last three joined by "+".
        temperature: softening of teacher and student logits for logit and click KD.
        logit_weight: KL between the teacher's and the student's softmax over all the
            candidates (listwise).
        rd_weight: ranking distillation (Tang & Wang, KDD 2018): the teacher's top
            items as soft positives, each ranked above the uniform negatives (a BPR
            term), weighted by ``exp(-rank / rd_decay)``.
        rd_decay: how fast those weights fall with the teacher's rank.
        click_weight: BCE of the student's click logits on the teacher's soft click
            labels, for the event's item and the teacher's top items.
        feature_weight: MSE between the adapted student user-interest vector and the
            teacher's (after attention, for the event's item), both L2-normalized.
        hard_weight: weight of the ground-truth losses next to the distillation ones.
        hard_negatives: teacher top-ranked unobserved items per event (0: none).
        init_items: start the student's item-id table from a projection (PCA) of the
            teacher's item vectors.
        spnn_weight: weight of SPNN's gated intermediate-layer matching.
        spnn_gate: False matches every sample and layer with weight 1 (the ablation
            without the knowledge detector).
        lrc_weight: weight of LRC-BERT's contrastive loss.
        lrc_temperature: its softmax temperature over cosine similarities.
        lrc_negatives: 0 contrasts each sample with the teacher's representations of the
            other samples in the batch; N > 0 with N drawn from a memory bank of every
            training event's teacher representations.
        lrc_stage1_epochs: epochs of contrastive-only training before the soft and hard
            labels take over (0: one stage, contrastive and labels together).
        lrc_perturb: size of the gradient perturbation of the student's embedding outputs,
            relative to each output's norm (0: off). Each step then runs the student twice.
        emkd_members: networks in the EMKD ensemble (1: one network, no mutual KL).
        emkd_kl_weight: KL between each network's softmax and the others' mean.
        emkd_cl_weight: contrastive loss on two augmented views of each sequence (within
            each network and across networks).
        emkd_attr_weight: predicting, from the user vector at each trained position, the
            attributes of the item that comes next (every item field but the id).
        emkd_mask: share of events hidden in an augmented view.
        emkd_crop: events in an augmented view (crops ending at trained positions).
    """

    method: str = "default"
    temperature: float = 2.0
    logit_weight: float = 0.5
    rd_weight: float = 0.0
    rd_decay: float = 4.0
    click_weight: float = 0.5
    feature_weight: float = 0.1
    hard_weight: float = 1.0
    hard_negatives: int = 8
    init_items: bool = False
    spnn_weight: float = 1.0
    spnn_gate: bool = True
    lrc_weight: float = 1.0
    lrc_temperature: float = 0.1
    lrc_negatives: int = 0
    lrc_stage1_epochs: int = 2
    lrc_perturb: float = 0.05
    emkd_members: int = 3
    emkd_kl_weight: float = 1.0
    emkd_cl_weight: float = 0.1
    emkd_attr_weight: float = 0.1
    emkd_mask: float = 0.2
    emkd_crop: int = 24

    def __post_init__(self) -> None:
        self.methods  # noqa: B018  (validates ``method``)
        if self.temperature <= 0 or self.hard_negatives < 0 or self.rd_decay <= 0:
            raise InputError("distill: temperature and rd_decay must be > 0, hard_negatives >= 0")
        if self.lrc_temperature <= 0 or self.lrc_negatives < 0 or self.lrc_stage1_epochs < 0 or self.lrc_perturb < 0:
            raise InputError("distill: lrc_temperature must be > 0; lrc_negatives, lrc_stage1_epochs and "
                             "lrc_perturb >= 0")
        if self.emkd_members < 1 or not 0 <= self.emkd_mask < 1 or self.emkd_crop < 2:
            raise InputError("distill: emkd_members must be >= 1, emkd_mask in [0, 1), emkd_crop >= 2")

    @property
    def methods(self) -> tuple[str, ...]:
        """The recipes ``method`` names, in canonical order (empty for "default")."""
        parts = [p.strip() for p in str(self.method).split("+")]
        unknown = [p for p in parts if p not in DISTILL_METHODS]
        if unknown or not parts or ("default" in parts and len(parts) > 1) or len(set(parts)) < len(parts):
            raise InputError(f"distill.method {self.method!r}: use one of {', '.join(DISTILL_METHODS)}, or several "
                             f"of {', '.join(DISTILL_METHODS[1:])} joined by '+' (e.g. 'emkd+lrc')")
        return tuple(m for m in DISTILL_METHODS[1:] if m in parts)


#: Distillation recipes (``distill.method``); all but "default" compose with "+".
DISTILL_METHODS = ("default", "spnn", "lrc", "emkd")


@dataclass
class QuantConfig:
    """How the int8 student stores its embedding tables (QAT trains on this grid and
    every exporter reads it, so what ships is what was measured).

    Linear layers are always int8 (per-channel weights, int8 activations). Tables are
    weight-only, symmetric, one scale per row.

    Args:
        table_bits: bits per weight of ordinary tables (8).
        large_table_rows: tables with at least this many rows count as large (in the
            default student only the item-id table, 1,619 x 16 on ML-100K).
        large_table_bits: bits per weight of large tables: 4 (the default) or 8. 4 halves
            the biggest part of the file (13 KB less on ML-100K, an ExecuTorch bundle 0.35x
            the fp32 one instead of 0.42x); trained on its grid (``train_on_grid``) it cost
            nothing measurable on validation over five seeds, and about 0.003 test HR@10
            and NDCG@10 in the mean (README, what a run writes).
        large_table_scale_dtype: "float16" or "float32" for the per-row scales of large
            tables (with 16-wide rows an fp32 scale is half the size of a 4-bit row).
        train_on_grid: the distilled student's tables train on this grid from its first
            step (per-row fake quantization, straight-through gradients), not only in the
            int8 step; its fp32 checkpoint then holds tables already on the grid. On by
            default: snapping a student trained in fp32 to 4 bits cost 0.003 validation
            HR@10; trained on the grid, none.
    """

    table_bits: int = 8
    large_table_rows: int = 256
    large_table_bits: int = 4
    large_table_scale_dtype: str = "float16"
    train_on_grid: bool = True

    def __post_init__(self) -> None:
        if self.table_bits not in (4, 8) or self.large_table_bits not in (4, 8):
            raise InputError(f"quant: table bits must be 4 or 8, got {self.table_bits}/{self.large_table_bits}")
        if self.large_table_scale_dtype not in ("float16", "float32"):
            raise InputError(f"quant.large_table_scale_dtype must be 'float16' or 'float32', "
                             f"got {self.large_table_scale_dtype!r}")

    def table(self, rows: int) -> tuple[int, str]:
        """(bits, scale dtype) of a table with ``rows`` rows."""
        if rows >= self.large_table_rows:
            return self.large_table_bits, self.large_table_scale_dtype
        return self.table_bits, "float32"


DEVICES = ("auto", "cpu", "cuda")
QAT_TARGETS = ("fp32", "task")


@dataclass
class TrainConfig:
    """Optimization. Each model trains up to ``epochs`` with early stopping on validation.

    Training is epoch-based: how far a model gets never depends on how busy the machine
    is. The same data, config and seed give the same model (see ``deterministic``).

    Args:
        epochs: maximum epochs per model (teacher, plain student, distilled student).
        qat_epochs: epochs of the int8 step (fake quantization on the PT2E graph).
        qat_lr: learning rate of those epochs. 0 (the default) calibrates the int8
            activation grid on the training batches and keeps the distilled weights:
            on ML-100K validation (3 seeds) every fine-tuning rate tried (1e-5 to 3e-4,
            either target) ranked worse than calibration alone, by up to 0.015 HR@10.
        qat_target: what fine-tuning (``qat_lr`` > 0) learns from: ``"task"``, the
            distilled student's own losses; or ``"fp32"``, the outputs of the fp32
            student it starts from (a softmax over the same candidates, and its click
            probabilities).
        patience: epochs without validation improvement before stopping (students).
        teacher_patience: the same for the teacher (its ranking and click snapshots each
            need ``teacher_patience`` epochs without improvement).
        lr / weight_decay: AdamW.
        teacher_lr: the teacher's learning rate.
        batch_size: student samples per step; teacher_batch: history windows per step
            (of full length; a batch of shorter windows holds as many slots).
        negatives: sampled unobserved items per positive for the interaction objective.
        teacher_negatives: the same for the teacher, per history position.
        teacher_catalogue_weight: weight of the teacher's softmax over the catalogue
            (its two-tower term; over a shared sample of ``teacher_catalogue_items``
            items when the catalogue is larger) next to the sampled-candidate softmax.
        teacher_catalogue_items: catalogue size up to which that softmax is exact.
        teacher_ema: decay of an exponential moving average of the teacher's weights,
            which is what validation sees and what the teacher keeps (0: off).
        hard_interaction_weight / hard_click_weight: the two ground-truth objectives of
            teacher and students (ESMM-style: interaction with sampled unobserved
            negatives, and click given interaction); the teacher's terms are in
            ``distill``. Old names: ``interaction_weight`` / ``click_weight``.
        unknown_share: share of the students' training event kinds and item ids
            replaced by the out-of-vocabulary id (per history slot and candidate; and
            the share of requests with every kind replaced), so that a kind or item a
            bundle never saw reads as "some event" or "some item" on a device (0: off).
        seed: everything random.
        threads: torch intra-op threads (0 = torch's default).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        deterministic: ask torch for deterministic algorithms (bit-exact reruns with
            the same thread count; slower on CUDA).
        max_minutes: an opt-in wall-time budget of the training loops (None: none).
            When set, the teacher gets 62% of it, each fp32 student 12%, the int8
            fine-tune the rest, and a model stops early when its share runs out, so
            the result then depends on the machine's speed.
    """

    epochs: int = 30
    qat_epochs: int = 1
    qat_lr: float = 0.0
    qat_target: str = "task"
    patience: int = 3
    teacher_patience: int = 3
    lr: float = 3e-3
    teacher_lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    teacher_batch: int = 4
    negatives: int = 32
    teacher_negatives: int = 32
    teacher_catalogue_weight: float = 0.5
    teacher_catalogue_items: int = 4096
    teacher_ema: float = 0.995
    hard_interaction_weight: float = 1.0
    hard_click_weight: float = 1.0
    unknown_share: float = 0.05
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    deterministic: bool = False
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InputError(f"train.device must be one of {DEVICES}, got {self.device!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"train.max_minutes must be > 0 or null, got {self.max_minutes}")
        if not 0.0 <= self.unknown_share < 1.0:
            raise InputError(f"train.unknown_share must be in [0, 1), got {self.unknown_share}")
        if self.qat_lr < 0:
            raise InputError(f"train.qat_lr must be >= 0, got {self.qat_lr}")
        if self.qat_target not in QAT_TARGETS:
            raise InputError(f"train.qat_target must be one of {list(QAT_TARGETS)}, got {self.qat_target!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.teacher_batch < 1:
            raise InputError("train.epochs, batch_size and teacher_batch must be >= 1")


@dataclass
class RunConfig:
    """Everything a run needs: the models, distillation, training, int8 grid, and how the
    log is read (``data``) and split (``split``)."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if "emkd" in self.distill.methods and self.teacher.ensemble != 1:
            raise InputError(f"distill.method {self.distill.method!r} trains its own ensemble of "
                             f"distill.emkd_members networks: leave teacher.ensemble at 1 (got {self.teacher.ensemble})")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        return _from_dict(cls, d, "run")


def tiny_config(**train_overrides: Any) -> RunConfig:
    """A config small enough for tests and smoke runs (seconds on a laptop)."""
    cfg = RunConfig(
        teacher=TeacherConfig(dim=16, history_len=20, attn_len=8, seq_layers=1, seq_heads=2, alien_layers=1,
                              alien_heads=2, mlp=(16,), rank_mlp=(16,), dropout=0.0, click_members=0),
        student=StudentConfig(dim=8, short_len=4, long_len=2, mlp=(16,), dropout=0.0),
        train=TrainConfig(epochs=1, qat_epochs=1, patience=1, batch_size=256, teacher_batch=32, negatives=4,
                          teacher_negatives=4, teacher_ema=0.0, threads=1),
        # The default 4-bit item table: the tests cover every exporter's 4-bit path.
        quant=QuantConfig(),
    )
    for k, v in train_overrides.items():
        setattr(cfg.train, k, v)
    return cfg


#: ``kdaliens-train --preset NAME``: ``tiny`` is what the tests train; ``default`` the full models.
PRESETS = {"tiny": tiny_config, "default": RunConfig}


def preset(name: str) -> RunConfig:
    """A fresh config of the named preset (``tiny`` or ``default``)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"section.key=value"`` -> (["section", "key"], value), the value parsed as JSON
    where it parses (``128``, ``0.5``, ``true``, ``null``, ``[64, 32]``) and kept as a
    string otherwise (``lrc``)."""
    key, sep, raw = text.partition("=")
    path = [p.strip() for p in key.split(".")]
    if not sep or len(path) < 2 or not all(path):
        raise InputError(f"--set {text!r}: expected section.key=value, for example teacher.dim=128")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def merge(base: RunConfig, overrides: Mapping[str, Any] | None = None, sets: list[str] | tuple[str, ...] = ()
          ) -> RunConfig:
    """``base`` with a (partial) config dict merged section by section, then ``--set`` items.

    Unknown sections or keys raise :class:`InputError` naming the known ones.
    """
    d = base.to_dict()
    for k, v in (overrides or {}).items():
        d[k] = {**d[k], **v} if isinstance(d.get(k), dict) and isinstance(v, Mapping) else v
    for item in sets:
        path, value = parse_override(item)
        if len(path) == 2:
            path[1] = RENAMED.get(path[0], {}).get(path[1], path[1])
        node = d
        for p in path[:-1]:
            if p not in node:
                raise InputError(f"--set {item!r}: unknown config section {p!r} (known: {sorted(node)})")
            if not isinstance(node[p], dict):
                raise InputError(f"--set {item!r}: {p!r} is a value, not a section")
            node = node[p]
        free_form = path[0] == "data" and len(path) > 2  # inside data.columns / data.field_kinds
        if not free_form and path[-1] not in node:
            raise InputError(f"--set {item!r}: unknown key {path[-1]!r} in {'.'.join(path[:-1])} "
                             f"(known: {sorted(node)})")
        node[path[-1]] = value
    try:
        return RunConfig.from_dict(d)
    except TypeError as e:  # a dataclass rejected a value's type
        raise InputError(f"config: {e}") from e
