"""Training the KD-ALIENS teacher on causal windows of each user's events.

One causal pass per window gives every position's user vector and attention bands
(:meth:`TeacherRanker.encode_windows`); each trained position then scores its target
and ``teacher_negatives`` items the user did not touch in the training period. The
objective per position:

* a softmax over the target and the sampled items, on the full interaction logit
  (what the ranking metrics measure);
* ``teacher_catalogue_weight`` x a softmax over the catalogue (or a shared sample of
  ``teacher_catalogue_items`` items) on the two-tower part ``u . v + bias``;
* BCE of the click head on the target, where it has a click label.

The ALIEN click head runs on the target only, not on the sampled items: field
interactions are paid for once per position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batches import HistoryMatches, NegativeSampler, band_ages, teacher_windows
from .evaluation import evaluate, teacher_scorer
from .loop import Context, DistEnv, FitResult, FitSpec, Log, Track, fit, set_seed
from .models.teacher import Teacher, TeacherRanker


class TeacherObjective(nn.Module):
    """The teacher's training losses in one forward (so DDP syncs every part)."""

    def __init__(self, teacher: TeacherRanker, ctx: Context):
        super().__init__()
        self.teacher = teacher
        self.ctx = ctx

    def forward(self, batch: dict[str, torch.Tensor], neg_rows: torch.Tensor, cat_rows: torch.Tensor | None,
                band_age: torch.Tensor, matches: tuple[torch.Tensor, ...] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.parts(batch, neg_rows, cat_rows, band_age, matches)
        return p["sampled"], p["catalogue"], p["click"]

    def parts(self, batch: dict[str, torch.Tensor], neg_rows: torch.Tensor, cat_rows: torch.Tensor | None,
              band_age: torch.Tensor, matches: tuple[torch.Tensor, ...] | None = None) -> dict[str, torch.Tensor]:
        """The three losses (``sampled``, ``catalogue``, ``click``), and the trained positions'
        interaction ``logits`` (P, 1 + K; the target first) and ``user`` vectors (P, D)."""
        m, ctx = self.teacher, self.ctx
        wp = m.encode_windows(batch)
        sel = batch["tgt_train"]  # (B, L) slots that train their target
        user = wp.user[sel]  # (P, D)
        tgt = batch["tgt_row"][sel]  # (P,)
        t_arrays, n_arrays = ctx.items_at(tgt, "c_"), ctx.items_at(neg_rows, "c_")
        tf, tv = m.item_vectors(t_arrays, "c_")  # (P, Fi, D), (P, D)
        _, nv = m.item_vectors(n_arrays, "c_")  # (P, K, D)
        cv = torch.cat([tv[:, None], nv], dim=1)  # (P, 1 + K, D), target first
        bias = torch.cat([m.item_logit_bias(t_arrays, "c_")[:, None], m.item_logit_bias(n_arrays, "c_")], dim=1)
        a_raw, a_ctx = m.attend(cv, wp.bands(band_age.shape[1], sel, band_age))
        match = m.match_vectors(*matches) if matches is not None else None
        logits = m.interaction_logits(cv, bias, user, a_raw, a_ctx, match)
        zeros = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        sampled = F.cross_entropy(logits, zeros)
        catalogue = self._catalogue_ce(user, tv, bias[:, 0], tgt, cat_rows)
        lab = batch["tgt_has_label"][sel]
        if lab.any():
            # index_select, not x[idx]: with repeated rows, indexing's backward (index_put_
            # with accumulate) adds in thread order on the CPU, and runs stop being repeatable.
            uf = wp.user_fields.index_select(0, sel.nonzero()[:, 0])[lab] if wp.user_fields is not None else None
            a_r, a_c = a_raw.unbind(1)[0], a_ctx.unbind(1)[0]  # the target's (unbind: no zero-filled grads)
            click = m.click_logits(tf[lab, None], uf, user[lab], a_r[lab, None], a_c[lab, None])[:, 0]
            click_loss = F.binary_cross_entropy_with_logits(click, batch["tgt_label"][sel][lab])
        else:
            click_loss = logits.sum() * 0.0
        return {"sampled": sampled, "catalogue": catalogue, "click": click_loss, "logits": logits, "user": user}

    def _catalogue_ce(self, user: torch.Tensor, v_tgt: torch.Tensor, b_tgt: torch.Tensor, tgt: torch.Tensor,
                      cat_rows: torch.Tensor | None) -> torch.Tensor:
        """Softmax of the two-tower logit over the catalogue (or a shared sample of it)."""
        m, ctx = self.teacher, self.ctx
        if cat_rows is None:
            return user.sum() * 0.0
        arrays = ctx.items_at(cat_rows, "s_")
        _, vec = m.item_vectors(arrays, "s_")  # (S, D)
        neg = user @ vec.T + m.item_logit_bias(arrays, "s_")  # (P, S)
        neg = neg.masked_fill(cat_rows[None, :] == tgt[:, None], float("-inf"))  # the target is column 0
        pos = (user * v_tgt).sum(-1) + b_tgt
        logits = torch.cat([pos[:, None], neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def train_teacher(ctx: Context, env: DistEnv, log: Log, deadline: float | None = None,
                  on_estimate: Callable[[float], None] | None = None) -> FitResult:
    """Train ``cfg.teacher.ensemble`` networks (or, with ``distill.method`` "emkd", the
    EMKD ensemble of ``distill.emkd_members``, together: :mod:`kdaliens.training.distill.emkd`),
    then ``cfg.teacher.click_members`` click-only ones; returns a :class:`Teacher` in ``res.model``.

    ``on_estimate`` gets the first member's seconds-per-epoch estimate after its first batches.
    """
    cfg = ctx.cfg
    extra = 0 if ctx.prep.implicit else cfg.teacher.click_members
    if cfg.teacher.click_members and ctx.prep.implicit:
        log("[teacher] implicit data has no click labels: teacher.click_members is ignored")
    emkd = "emkd" in cfg.distill.methods
    n = cfg.distill.emkd_members if emkd else max(1, int(cfg.teacher.ensemble))
    teacher = Teacher(ctx.t_spec, cfg.teacher, click_members=extra, members=n)
    results = []
    first = 0
    if emkd:  # the members train together (EMKD); the click-only networks after, as usual
        from .distill.emkd import train_ensemble

        res, rank_states, click_states = train_ensemble(ctx, env, log, deadline, on_estimate)
        for i in range(n):
            teacher.rank[i].load_state_dict(rank_states[i])
            teacher.click[i].load_state_dict(click_states[i])
        for row in res.history:
            row["member"] = "ensemble"
        results.append(res)
        first = n
    for i in range(first, n + extra):
        click_only = i >= n
        name = ("teacher" if n == 1 else f"teacher[{i}]") if not click_only else f"teacher_click[{i - n}]"
        res = _train_member(ctx, env, log, deadline, seed=cfg.train.seed + 1000 * i, name=name,
                            on_estimate=on_estimate if i == 0 and not emkd else None, click_only=click_only)
        if not click_only:
            teacher.rank[i].load_state_dict(res.best_states.get("rank", res.model.state_dict()))
        teacher.click[i].load_state_dict(res.best_states.get("click", res.model.state_dict()))
        for row in res.history:
            row["member"] = i
        results.append(res)
    teacher.to(ctx.device).eval()
    first = results[0]
    return FitResult(model=teacher, epochs=sum(r.epochs for r in results), best_epoch=first.best_epoch,
                     seconds=sum(r.seconds for r in results), history=[h for r in results for h in r.history],
                     best_epochs=first.best_epochs)


class TeacherBatches:
    """A teacher's training batches, seeded by ``seed``: windows of events
    (:func:`~kdaliens.training.batches.teacher_windows`) and, per trained position, its
    sampled unobserved items, the catalogue sample, the attention band's ages and (with
    ``teacher.match_history``) the history matches.

    Iterating gives ``(arrays, inputs)`` per batch: the window arrays (numpy) and the
    arguments of :meth:`TeacherObjective.forward` (tensors on the context's device).
    """

    def __init__(self, ctx: Context, env: DistEnv, seed: int, band: int):
        cfg, train_cfg = ctx.cfg, ctx.cfg.train
        self.ctx, self.env, self.band, self.train_cfg, self.L = ctx, env, band, train_cfg, cfg.teacher.history_len
        self.win = teacher_windows(ctx.prep, ctx.t_enc, cfg.teacher.history_len, ctx.train_end,
                                   overlap=min(cfg.teacher.attn_len, cfg.teacher.history_len // 2))
        self.rng = np.random.default_rng(seed)
        self.negs = NegativeSampler(ctx.prep, seed + 7 + env.rank, ctx.train_end)
        self.n_items = ctx.prep.n_items
        self.use_cat = train_cfg.teacher_catalogue_weight > 0
        self.finder = HistoryMatches(ctx.prep, ctx.t_spec.item_id_field) if cfg.teacher.match_history else None
        self.full_cat = (torch.arange(self.n_items, device=ctx.device)
                         if self.n_items <= train_cfg.teacher_catalogue_items else None)

    def __len__(self) -> int:
        return len(self.win.batches(self.train_cfg.teacher_batch, None, self.env.rank, self.env.world))

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], tuple]]:
        ctx, win, tc, dev = self.ctx, self.win, self.train_cfg, self.ctx.device
        for rows in win.batches(tc.teacher_batch, self.rng, rank=self.env.rank, world=self.env.world):
            arrays, tgt_ev = win.batch(rows)
            sel = arrays["tgt_train"]
            ages = band_ages(ctx.t_enc, ctx.prep.ev_ts, win.inputs(rows), sel, min(self.band, sel.shape[1]))
            users = np.repeat(win.users[rows], sel.sum(1))
            neg = self.negs.sample(users, tc.teacher_negatives)
            cat = None
            if self.use_cat:
                cat = self.full_cat if self.full_cat is not None else torch.from_numpy(
                    self.rng.choice(self.n_items, size=tc.teacher_catalogue_items, replace=False)).to(dev)
            matches = None
            if self.finder is not None:  # the target and the sampled items, in the whole history before the target
                cands = np.concatenate([arrays["tgt_row"][sel][:, None], neg], axis=1)
                matches = tuple(torch.from_numpy(a).to(dev) for a in self.finder.lookup(tgt_ev[sel], cands, self.L))
            yield arrays, (ctx.tensors(arrays), torch.from_numpy(neg).to(dev), cat, torch.from_numpy(ages).to(dev),
                           matches)


def _train_member(ctx: Context, env: DistEnv, log: Log, deadline: float | None, seed: int, name: str,
                  on_estimate: Callable[[float], None] | None = None, click_only: bool = False) -> FitResult:
    cfg, train_cfg = ctx.cfg, ctx.cfg.train
    set_seed(seed)
    model = TeacherRanker(ctx.t_spec, cfg.teacher).to(ctx.device)
    objective = TeacherObjective(model, ctx)
    batches = TeacherBatches(ctx, env, seed, model.k)

    def steps(wrapped: nn.Module, epoch: int) -> Iterator[tuple[torch.Tensor, dict]]:
        for _arrays, inputs in batches:
            sampled, catalogue, click = wrapped(*inputs)
            loss = (train_cfg.hard_interaction_weight * (sampled + train_cfg.teacher_catalogue_weight * catalogue)
                    + train_cfg.hard_click_weight * click)
            yield loss, {"inter": sampled.detach(), "cat": catalogue.detach(), "click": click.detach()}

    n = len(batches)
    tracks = [] if click_only else [Track("rank", lambda v: v["ranking"]["ndcg@10"])]
    if not ctx.prep.implicit:
        tracks.append(Track("click", lambda v: v["ctr"]["auc"]))
    spec = FitSpec(name=name, epochs=train_cfg.epochs, patience=train_cfg.teacher_patience, lr=train_cfg.teacher_lr,
                   weight_decay=train_cfg.weight_decay, n_batches=n,
                   evaluate=lambda m: evaluate(teacher_scorer(m.teacher, ctx), ctx, "val"), tracks=tracks,
                   deadline=deadline, ema_decay=train_cfg.teacher_ema, on_estimate=on_estimate)
    res = fit(objective, spec, steps, env, log)
    res.best_states = {k: {n[len("teacher."):]: v for n, v in s.items() if n.startswith("teacher.")}
                       for k, s in res.best_states.items()}
    res.model = model
    return res


def evaluate_teacher(model: nn.Module, ctx: Context, split: str, full: bool = False) -> dict[str, dict]:
    """Metrics of a teacher (a :class:`Teacher` or one network) on ``split``."""
    return evaluate(teacher_scorer(model, ctx), ctx, split, full=full)
