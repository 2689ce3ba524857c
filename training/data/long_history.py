"""A seeded SYNTHETIC log of users with long histories, in RecBole atomic format.

    python -m kdaliens.training.data.long_history OUT_DIR [--users 300] [--min-events 1000]
        [--max-events 5000] [--seed 0] [--check]

The data is synthetic: nothing is downloaded, and the same config (seed included)
writes the same bytes. Each user has 1,000 to 5,000 events (uniform; configurable),
drawn from a small generative model with the signals long-history models exploit and
short-window models cannot:

* **Interests that drift slowly.** Items belong to topics (``concentration`` sets how
  few topics a user likes). A user's topic preference is a mix of a stable core
  (weight ``core_weight``) and a drifting part that moves a fraction ``drift_rate``
  per event toward a fresh Dirichlet draw, redrawn every ``drift_period`` events. With
  probability ``stay`` an interest event stays in the topic of the previous one.
  Within a topic, items are drawn by a Zipf-like popularity (exponent ``zipf``).
* **Long-range repeats.** With probability ``repeat_rate`` an event re-consumes the
  item the user had ``L`` events earlier, ``L`` being the user's own re-consumption
  cycle (uniform in ``repeat_min_lag..repeat_max_lag``, 500..1000 by default) give or
  take ``repeat_jitter``: an item from 800 events ago comes back. A model that sees the
  whole history can learn the cycle and recall the item; one that sees only the last
  50 events cannot. (If the event ``L`` back was a noise click, an interest event is
  drawn instead, so the realized repeat share is a little below ``repeat_rate``.)
* **Noisy implicit clicks with explicit ratings.** Every event is an interaction with
  a 1..5 rating. Interest events and repeats are rated by ``interest_ratings`` (mostly
  4-5, some 3); a share ``noise_rate`` are accidental clicks on random items of topics
  outside the user's current interests, rated by ``noise_ratings`` (1-2). Explicit
  feedback can thus purify the implicit log (as DUMN does).
* **Timestamps** in Unix seconds, strictly increasing per user: sessions of about
  ``session_events`` events, ``in_session_gap_s`` apart on average, separated by
  breaks of about ``session_break_s``.

:func:`write_recbole` writes ``<name>.inter`` (``user_id item_id rating timestamp``),
``<name>.item`` (``item_id topic pop_bucket``; bucket 0 holds the most popular fifth
of items) and ``<name>.json`` (the config, marked synthetic) into a folder that
:func:`~kdaliens.training.data.load_dataset` reads. :func:`long_history_check` (CLI
``--check``) measures the property the data is for: next-item HR@10 of a predictor that
sees the whole history against the same predictor limited to the last 50 events.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from kdaliens.sdk.errors import InputError

INTEREST, REPEAT, NOISE = 0, 1, 2
KIND_NAMES = ("interest", "repeat", "noise")
POP_BUCKETS = 5


@dataclass(frozen=True)
class LongHistoryConfig:
    """Parameters of the generative model. Defaults: 300 users x 1,000-5,000 events
    (~900k events), 5,000 items in 50 topics; see the module docstring for the model.

    Raises :class:`~kdaliens.sdk.errors.InputError` (a ValueError) naming the field
    when a value is out of range.
    """

    users: int = 300
    min_events: int = 1000  # events per user: uniform in [min_events, max_events]
    max_events: int = 5000
    items: int = 5000
    topics: int = 50
    concentration: float = 0.1  # Dirichlet concentration per topic: small = few topics per user
    core_weight: float = 0.5  # share of the stable (never drifting) part of the preference
    drift_period: int = 300  # events between fresh drift targets (each user has its own phase)
    drift_rate: float = 0.01  # per event, the drifting part moves this fraction toward its target
    stay: float = 0.3  # probability that an interest event stays in the previous interest topic
    zipf: float = 0.8  # popularity exponent within a topic (weight ~ 1 / rank ** zipf)
    repeat_rate: float = 0.15  # probability that an event re-consumes the item L events back
    repeat_min_lag: int = 500  # each user's cycle L is uniform in [repeat_min_lag, repeat_max_lag]
    repeat_max_lag: int = 1000
    repeat_jitter: int = 2  # the lag of one repeat is L + uniform[-jitter, jitter]
    noise_rate: float = 0.15  # probability of an accidental click outside the user's interests
    interest_ratings: tuple[float, ...] = (0.0, 0.0, 0.15, 0.40, 0.45)  # P(rating 1..5), interest/repeat
    noise_ratings: tuple[float, ...] = (0.60, 0.40, 0.0, 0.0, 0.0)  # P(rating 1..5), noise clicks
    session_events: float = 20.0  # mean events per session
    in_session_gap_s: float = 90.0  # mean gap between events of a session (plus 1 s)
    session_break_s: float = 86_400.0  # mean gap between sessions (plus 30 min)
    start: int = 1_577_836_800  # 2020-01-01 UTC; each user starts within 90 days of it
    seed: int = 0
    name: str = "long-history"  # file stem: <name>.inter, <name>.item, <name>.json

    def __post_init__(self) -> None:
        def bad(field: str, need: str) -> InputError:
            return InputError(f"LongHistoryConfig.{field}: need {need}, got {getattr(self, field)!r}")

        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise bad(f.name, "an integer")
            if f.type == "float":
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                        or not math.isfinite(v):
                    raise bad(f.name, "a finite number")
        ints = {"users": 1, "min_events": 1, "items": 2, "topics": 2, "drift_period": 1, "repeat_min_lag": 1,
                "repeat_jitter": 0, "seed": 0, "start": 0}
        for name, low in ints.items():
            if getattr(self, name) < low:
                raise bad(name, f">= {low}")
        if self.max_events < self.min_events:
            raise bad("max_events", f">= min_events ({self.min_events})")
        if self.items < self.topics:
            raise bad("items", f">= topics ({self.topics})")
        if self.repeat_max_lag < self.repeat_min_lag:
            raise bad("repeat_max_lag", f">= repeat_min_lag ({self.repeat_min_lag})")
        if self.repeat_jitter >= self.repeat_min_lag:
            raise bad("repeat_jitter", f"< repeat_min_lag ({self.repeat_min_lag})")
        for name in ("concentration", "session_events", "in_session_gap_s", "session_break_s"):
            if getattr(self, name) <= 0:
                raise bad(name, "> 0")
        if self.session_events < 1:
            raise bad("session_events", ">= 1")
        if self.zipf < 0:
            raise bad("zipf", ">= 0")
        for name in ("core_weight", "drift_rate", "stay", "repeat_rate", "noise_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "a probability in [0, 1]")
        if self.repeat_rate + self.noise_rate > 1.0:
            raise bad("noise_rate", f"repeat_rate + noise_rate <= 1 (repeat_rate is {self.repeat_rate})")
        for name in ("interest_ratings", "noise_ratings"):
            v = getattr(self, name)
            try:
                probs = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise bad(name, "5 probabilities of ratings 1..5") from None
            if len(probs) != 5 or not all(math.isfinite(p) and p >= 0 for p in probs) \
                    or abs(sum(probs) - 1.0) > 1e-6:
                raise bad(name, "5 non-negative probabilities of ratings 1..5 summing to 1")
            object.__setattr__(self, name, probs)
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "/\\\t\n\r ") \
                or self.name.startswith("."):
            raise bad("name", "a file stem without spaces or path separators")


@dataclass
class LongHistoryLog:
    """A generated log: one entry per event, grouped by user, time-ordered within a user.

    ``user``/``item`` are 0-based ids; ``kind`` is ``INTEREST``, ``REPEAT`` or ``NOISE``
    (ground truth, not written by default); ``offsets[u]:offsets[u + 1]`` are user
    ``u``'s events; ``item_topic``/``item_pop_bucket`` describe items; ``user_lag`` is
    each user's re-consumption cycle.
    """

    config: LongHistoryConfig
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    kind: np.ndarray
    offsets: np.ndarray
    item_topic: np.ndarray
    item_pop_bucket: np.ndarray
    user_lag: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _dirichlet(rng: np.random.Generator, alpha: float, topics: int, n: int) -> np.ndarray:
    p = rng.dirichlet(np.full(topics, alpha), size=n)
    broken = ~np.isfinite(p).all(1) | (p.sum(1) <= 0)  # tiny concentrations can underflow
    if broken.any():
        p[broken] = np.eye(topics)[rng.integers(0, topics, int(broken.sum()))]
    return p


def generate(cfg: LongHistoryConfig = LongHistoryConfig(),
             progress: Callable[[str], None] | None = None) -> LongHistoryLog:
    """Draw the log. ``progress`` (e.g. ``print``) hears about runs that take over 3 s."""
    t0 = time.monotonic()
    rng = np.random.default_rng(cfg.seed)
    n_items, n_topics, n_users = cfg.items, cfg.topics, cfg.users
    # Items: a topic each, a Zipf-like popularity rank within the topic.
    topic_of = rng.permutation(np.arange(n_items) % n_topics)
    order = np.argsort(topic_of, kind="stable")  # items grouped by topic
    t_start = np.searchsorted(topic_of[order], np.arange(n_topics))
    t_size = np.bincount(topic_of, minlength=n_topics)
    rank = np.concatenate([rng.permutation(n) for n in t_size])  # popularity rank within topic, by `order`
    w = 1.0 / (1.0 + rank) ** cfg.zipf
    cum = np.cumsum(w)
    before = np.concatenate([[0.0], cum])[t_start]  # weight before each topic's block
    total = cum[t_start + t_size - 1] - before
    tsorted = topic_of[order]
    within = (cum - before[tsorted]) / total[tsorted]
    within[t_start + t_size - 1] = 1.0
    grid = tsorted + within  # topic k's items cover (k, k + 1]
    pop_share = np.empty(n_items)
    pop_share[order] = w / total[tsorted] / n_topics  # marginal share of an item under uniform topics
    pop_rank = np.empty(n_items, dtype=np.int64)
    pop_rank[np.argsort(-pop_share, kind="stable")] = np.arange(n_items)
    pop_bucket = pop_rank * POP_BUCKETS // n_items  # 0 = the most popular fifth

    def popular_in(topics: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(grid, topics + rng.random(len(topics)), side="right")
        return order[np.clip(idx, t_start[topics], t_start[topics] + t_size[topics] - 1)]

    # Users: lengths, preferences, re-consumption cycles. Internally users are sorted by
    # length, longest first, so the users still active at step t are a prefix.
    lengths = rng.integers(cfg.min_events, cfg.max_events + 1, size=n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    by_len = np.argsort(-lengths, kind="stable")
    off = offsets[:-1][by_len]
    n_active = np.searchsorted(-lengths[by_len], -np.arange(int(lengths.max())), side="left")
    core = _dirichlet(rng, cfg.concentration, n_topics, n_users)
    drift = _dirichlet(rng, cfg.concentration, n_topics, n_users)
    target = _dirichlet(rng, cfg.concentration, n_topics, n_users)
    phase = rng.integers(0, cfg.drift_period, size=n_users)
    cycle = rng.integers(cfg.repeat_min_lag, cfg.repeat_max_lag + 1, size=n_users)
    last_topic = np.full(n_users, -1)
    n_total = int(offsets[-1])
    out_item = np.zeros(n_total, dtype=np.int64)
    out_kind = np.zeros(n_total, dtype=np.int8)
    outside = 1.0 / n_topics  # a topic below this preference is outside the user's interests
    told = False
    for t in range(len(n_active)):
        m = int(n_active[t])
        redraw = np.flatnonzero((t + phase[:m]) % cfg.drift_period == 0)
        if len(redraw):
            target[redraw] = _dirichlet(rng, cfg.concentration, n_topics, len(redraw))
        drift[:m] += cfg.drift_rate * (target[:m] - drift[:m])
        pref = cfg.core_weight * core[:m] + (1.0 - cfg.core_weight) * drift[:m]
        u = rng.random(m)
        kind = np.where(u < cfg.repeat_rate, REPEAT, np.where(u < cfg.repeat_rate + cfg.noise_rate, NOISE, INTEREST))
        src = t - (cycle[:m] + rng.integers(-cfg.repeat_jitter, cfg.repeat_jitter + 1, size=m))
        src_pos = off[:m] + np.maximum(src, 0)
        repeat = (kind == REPEAT) & (src >= 0)
        repeat &= out_kind[src_pos] != NOISE
        kind[(kind == REPEAT) & ~repeat] = INTEREST
        # Interest: stay in the last interest topic, or draw one from the preference.
        drawn = np.minimum((np.cumsum(pref, axis=1) < rng.random(m)[:, None]).sum(1), n_topics - 1)
        stay = (rng.random(m) < cfg.stay) & (last_topic[:m] >= 0)
        topic = np.where(stay, last_topic[:m], drawn)
        item = popular_in(topic)
        # Noise: a uniform item of a topic outside the user's interests (a few tries).
        ntopic = rng.integers(0, n_topics, size=m)
        for _ in range(4):
            inside = pref[np.arange(m), ntopic] >= outside
            ntopic = np.where(inside, rng.integers(0, n_topics, size=m), ntopic)
        nitem = order[t_start[ntopic] + (rng.random(m) * t_size[ntopic]).astype(np.int64)]
        item = np.where(kind == NOISE, nitem, item)
        item = np.where(repeat, out_item[src_pos], item)
        out_item[off[:m] + t] = item
        out_kind[off[:m] + t] = kind
        last_topic[:m] = np.where(kind == INTEREST, topic, last_topic[:m])
        if progress is not None and t % 500 == 499 and time.monotonic() - t0 > 3.0:
            progress(f"long_history: step {t + 1:,}/{len(n_active):,} ({time.monotonic() - t0:.0f} s)")
            told = True
    # Back to user order: internal position j holds user by_len[j]; the flat arrays
    # were written at the users' own offsets, so only per-user vectors need mapping.
    user_lag = np.empty(n_users, dtype=np.int64)
    user_lag[by_len] = cycle
    user = np.repeat(np.arange(n_users), lengths)
    # Ratings by kind.
    u = rng.random(n_total)
    cdf_i = np.cumsum(cfg.interest_ratings)
    cdf_n = np.cumsum(cfg.noise_ratings)
    r_int = np.searchsorted(cdf_i, u * cdf_i[-1], side="right")
    r_noise = np.searchsorted(cdf_n, u * cdf_n[-1], side="right")
    rating = (np.minimum(np.where(out_kind == NOISE, r_noise, r_int), 4) + 1).astype(np.int8)
    # Timestamps: sessions.
    brk = rng.random(n_total) < 1.0 / cfg.session_events
    gap = np.where(brk, 1800.0 + rng.exponential(cfg.session_break_s, n_total),
                   1.0 + rng.exponential(cfg.in_session_gap_s, n_total))
    gap = np.ceil(gap).astype(np.int64)
    gap[offsets[:-1]] = 0
    start = cfg.start + rng.integers(0, 90 * 86_400, size=n_users)
    cs = np.cumsum(gap)
    timestamp = cs - cs[offsets[:-1]][user] + start[user]
    if told and progress is not None:
        progress(f"long_history: generated {n_total:,} events in {time.monotonic() - t0:.1f} s")
    return LongHistoryLog(config=cfg, user=user, item=out_item, rating=rating, timestamp=timestamp, kind=out_kind,
                          offsets=offsets, item_topic=topic_of, item_pop_bucket=pop_bucket, user_lag=user_lag)


def _write_atomic(path: Path, header: str, columns: list[np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for i in range(0, len(columns[0]), 200_000):
            chunk = [c[i:i + 200_000].tolist() for c in columns]
            f.write("".join("\t".join(map(str, row)) + "\n" for row in zip(*chunk)))
    tmp.replace(path)


def write_recbole(out_dir: str | Path, cfg: LongHistoryConfig = LongHistoryConfig(), *, with_kind: bool = False,
                  progress: Callable[[str], None] | None = None,
                  log: LongHistoryLog | None = None) -> dict[str, int | float | str]:
    """Generate (or take ``log``) and write ``<name>.inter``, ``<name>.item`` and ``<name>.json``.

    Ids are 1-based. ``with_kind`` adds a ``kind:token`` column (interest/repeat/noise,
    the ground truth; loaders ignore it). Returns counts for a report.
    """
    if log is None:
        log = generate(cfg, progress)
    cfg = log.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = [log.user + 1, log.item + 1, log.rating, log.timestamp]
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    if with_kind:
        cols.append(np.asarray(KIND_NAMES, dtype=object)[log.kind])
        header += "\tkind:token"
    _write_atomic(out / f"{cfg.name}.inter", header, cols)
    _write_atomic(out / f"{cfg.name}.item", "item_id:token\ttopic:token\tpop_bucket:token",
                  [np.arange(1, cfg.items + 1), log.item_topic, log.item_pop_bucket])
    meta = {"synthetic": True, "generator": "kdaliens.training.data.long_history", "config": asdict(cfg)}
    (out / f"{cfg.name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    counts = np.bincount(log.kind, minlength=3)
    return {"interactions": len(log), "users": cfg.users, "items_seen": int(len(np.unique(log.item))),
            "inter": str(out / f"{cfg.name}.inter"),
            **{f"{k}_share": round(float(c) / len(log), 4) for k, c in zip(KIND_NAMES, counts)}}


def data_folder(users: int, max_events: int, root: str | Path = "runs/long_history_data") -> Path:
    """The folder of the seed-0 log with ``users`` users and up to ``max_events`` events
    each (other settings default), under ``root``; written on first use."""
    out = Path(root) / f"u{users}_m{max_events}"
    cfg = LongHistoryConfig(users=users, max_events=max_events, seed=0)
    if not (out / f"{cfg.name}.json").exists():  # the .json is written last
        write_recbole(out, cfg)
    return out


# ----------------------------------------------------------------------------- the check
def _lag_counts(log: LongHistoryLog, n_train: np.ndarray) -> np.ndarray:
    """counts[u, d]: events j < n_train[u] of user u with the same item at j - d."""
    width = int(n_train.max())
    keep = (np.arange(len(log)) - log.offsets[log.user]) < n_train[log.user]
    user, item = log.user[keep], log.item[keep]
    pos = np.arange(len(log))[keep] - log.offsets[user]
    key = user * log.config.items + item
    srt = np.lexsort((pos, key))
    key, pos, user = key[srt], pos[srt], user[srt]
    counts = np.zeros(log.config.users * width, dtype=np.int64)
    cand = np.flatnonzero(key[1:] == key[:-1])  # i with a later event of the same user and item
    k = 1
    while len(cand):
        lag = pos[cand + k] - pos[cand]
        counts += np.bincount(user[cand] * width + lag, minlength=len(counts))
        k += 1
        cand = cand[cand + k < len(key)]
        cand = cand[key[cand + k] == key[cand]]
    return counts.reshape(log.config.users, width)


def _excess(counts: np.ndarray, n: int, max_lag: int, z: float = 3.0, half: int = 50) -> np.ndarray:
    """Per lag d (index d), how much likelier than nearby lags a recurrence at lag d is
    (0 where not significant at ``z`` sigmas). Only lags 1..max_lag are considered."""
    top = min(max_lag, n - 1)
    out = np.zeros(top + 1)
    if top < 1:
        return out
    d = np.arange(1, top + 1)
    rate = counts[1:top + 1] / (n - d)
    c = np.concatenate([[0.0], np.cumsum(rate)])
    lo, hi = np.maximum(d - half, 1) - 1, np.minimum(d + half, top)
    base = (c[hi] - c[lo]) / (hi - lo)
    ex = rate - base
    sig = ex > z * np.sqrt(np.maximum(base, 1e-4) / (n - d))
    out[1:] = np.where(sig, ex, 0.0)
    return out


def long_history_check(log: LongHistoryLog, *, window: int = 50, k: int = 10, targets: int = 1,
                       half_life: float = 150.0, recent_weight: float = 0.5, stay: float = 0.3,
                       liked: float = 3.0) -> dict[str, float]:
    """Next-item HR@k over the full catalogue of two non-neural predictors that differ only
    in how much of the history they see at prediction time.

    The last ``targets`` events of each user are predicted, each from the events before it
    (leave-last-out when ``targets`` is 1); item popularity and each user's lag profile
    are fitted on the events before the first target. Both predictors score an item by

        (1 - R) * theta[topic(i)] * P(i | topic) + sum_d excess(d) * [item d events back == i]

    where ``theta`` is the user's topic mix from liked events (rating >= ``liked``) with a
    bonus ``stay`` for the last liked topic, ``P(i | topic)`` is popularity, ``excess(d)``
    is how much likelier than chance (from the user's own history) it is that the item
    ``d`` events back recurs, and ``R`` is the sum of the excesses.

    * ``last_window``: sees only the last ``window`` events: ``theta`` from their topics,
      lags up to ``window``;
    * ``full``: sees the whole history: ``theta`` mixes an exponentially decayed
      (``half_life`` events) and an all-time topic count, lags up to the whole history;
    * ``full_topics_only``: ``full`` without the long lags (recall limited to ``window``),
      which shows how much of the gain comes from the drifting/long-term topic mix.

    Cost: a few seconds for the default config; memory holds a users x longest-history
    table of lag counts (int64): 300 users x 5,000 events is 12 MB.

    Returns the three HR@k values, ``random`` (k / items), ``targets`` (how many), and
    per kind of target event (interest, repeat, noise) its count ``<kind>_targets`` and
    the HR@k ``<predictor>@<kind>``.
    """
    cfg = log.config
    lengths = log.lengths
    if targets < 1 or int(lengths.min()) <= targets + 1:
        raise InputError(f"targets: need 1 <= targets < shortest history - 1, got {targets}")
    n_train = lengths - targets
    pos_in_user = np.arange(len(log)) - log.offsets[log.user]
    train = pos_in_user < n_train[log.user]
    pop = np.bincount(log.item[train], minlength=cfg.items) + 1.0
    topic_tot = np.bincount(log.item_topic, weights=pop, minlength=cfg.topics)
    p_in_topic = pop / topic_tot[log.item_topic]
    global_topic = topic_tot / topic_tot.sum()
    counts = _lag_counts(log, n_train)
    item_topic = log.item_topic
    names = ("last_window", "full", "full_topics_only")
    hits = np.zeros((len(names), 3))  # predictor x kind of the target event
    per_kind = np.zeros(3)
    for u in range(cfg.users):
        seq = log.item[log.offsets[u]:log.offsets[u + 1]]
        rat = log.rating[log.offsets[u]:log.offsets[u + 1]]
        kinds = log.kind[log.offsets[u]:log.offsets[u + 1]]
        n = int(n_train[u])
        ex_short = _excess(counts[u], n, window)
        ex_long = _excess(counts[u], n, n)
        for t in range(n, len(seq)):
            tp = item_topic[seq[:t]]
            good = rat[:t] >= liked
            last_good = np.flatnonzero(good)
            last_topic = tp[last_good[-1]] if len(last_good) else -1
            lo = max(0, t - window)
            th_short = np.bincount(tp[lo:t][good[lo:t]], minlength=cfg.topics) + global_topic
            age = (t - 1 - np.arange(t))[good]
            th_dec = np.bincount(tp[good], weights=0.5 ** (age / half_life), minlength=cfg.topics)
            th_all = np.bincount(tp[good], minlength=cfg.topics).astype(float)
            th_long = recent_weight * th_dec / max(th_dec.sum(), 1e-12) + \
                (1 - recent_weight) * th_all / max(th_all.sum(), 1e-12) + global_topic / max(t, 1)
            for j, (theta, ex) in enumerate(((th_short, ex_short), (th_long, ex_long), (th_long, ex_short))):
                theta = theta / theta.sum()
                if last_topic >= 0:
                    theta = (1 - stay) * theta
                    theta[last_topic] += stay
                lags = np.flatnonzero(ex[:t + 1])
                recall = min(float(ex[lags].sum()), 0.9)
                score = (1 - recall) * theta[item_topic] * p_in_topic
                np.add.at(score, seq[t - lags], ex[lags])
                top = np.argpartition(-score, k)[:k]
                hits[j, kinds[t]] += seq[t] in top
            per_kind[kinds[t]] += 1
    out: dict[str, float] = {name: float(hits[j].sum() / per_kind.sum()) for j, name in enumerate(names)}
    out["random"] = k / cfg.items
    out["targets"] = float(per_kind.sum())
    for c, kind in enumerate(KIND_NAMES):
        out[f"{kind}_targets"] = float(per_kind[c])
        for j, name in enumerate(names):
            out[f"{name}@{kind}"] = float(hits[j, c] / per_kind[c]) if per_kind[c] else float("nan")
    return out


# ----------------------------------------------------------------------------- CLI
class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main(argv: list[str] | None = None) -> int:
    d = LongHistoryConfig()
    p = argparse.ArgumentParser(prog="python -m kdaliens.training.data.long_history", description=__doc__,
                                formatter_class=_Help)
    p.add_argument("out", metavar="OUT_DIR", help="folder to write <name>.inter/.item/.json into")
    p.add_argument("--users", type=int, default=d.users, help="number of users")
    p.add_argument("--min-events", type=int, default=d.min_events, help="fewest events per user")
    p.add_argument("--max-events", type=int, default=d.max_events, help="most events per user")
    p.add_argument("--items", type=int, default=d.items, help="catalogue size")
    p.add_argument("--topics", type=int, default=d.topics, help="item topics")
    p.add_argument("--repeat-rate", type=float, default=d.repeat_rate, help="share of long-range repeats")
    p.add_argument("--repeat-min-lag", type=int, default=d.repeat_min_lag, help="shortest re-consumption cycle")
    p.add_argument("--repeat-max-lag", type=int, default=d.repeat_max_lag, help="longest re-consumption cycle")
    p.add_argument("--noise-rate", type=float, default=d.noise_rate, help="share of low-rated noise clicks")
    p.add_argument("--drift-period", type=int, default=d.drift_period, help="events between interest shifts")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same bytes)")
    p.add_argument("--name", default=d.name, help="file stem")
    p.add_argument("--with-kind", action="store_true", help="add the ground-truth kind:token column")
    p.add_argument("--check", action="store_true",
                   help="also print leave-last-out HR@10 of the full-history vs last-50 baselines")
    a = p.parse_args(argv)
    try:
        cfg = LongHistoryConfig(users=a.users, min_events=a.min_events, max_events=a.max_events, items=a.items,
                                topics=a.topics, repeat_rate=a.repeat_rate, repeat_min_lag=a.repeat_min_lag,
                                repeat_max_lag=a.repeat_max_lag, noise_rate=a.noise_rate,
                                drift_period=a.drift_period, seed=a.seed, name=a.name)
    except InputError as e:
        print(f"long_history: error: {e}", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log = generate(cfg, progress=say)
    stats = write_recbole(a.out, with_kind=a.with_kind, log=log)
    print(f"wrote {stats['inter']} (synthetic): {stats['interactions']:,} interactions, {stats['users']:,} users, "
          f"{stats['items_seen']:,} distinct items; interest {stats['interest_share']:.1%}, "
          f"repeat {stats['repeat_share']:.1%}, noise {stats['noise_share']:.1%}")
    if a.check:
        r = long_history_check(log)
        print(f"HR@10 leave-last-out over {int(r['targets'])} users: full history {r['full']:.3f}, "
              f"last 50 events {r['last_window']:.3f}, full topics + last-50 recall {r['full_topics_only']:.3f}, "
              f"random {r['random']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
