"""A seeded synthetic interaction log in SASRec format, for scale and long-history work.

    python -m kdaliens.training.data.synthetic OUT.txt [--users 20000] [--items 20000]
        [--mean-len 12] [--max-len 1000] [--seed 0]

Nothing is downloaded: the log is drawn from a small generative model with the two
kinds of signal sequential recommenders exploit.

* **Long-term interest.** Items belong to topics; each user has a sparse preference
  over topics (Dirichlet, a few topics each). A user's topics only show up over many
  events, so a model with a longer history estimates them better.
* **Short-term dynamics.** Within a topic, items form series: after an item, its next
  few items in the series are likely (think episodes, sequels, accessories). The user
  stays in the current topic for a while, then switches to another of their topics.

Popularity is Zipf-like within each topic; history lengths are geometric above a
minimum of 5 (mean ``mean_len``) and capped at ``max_len``. The output has one
``user item`` line per interaction, each user's lines in time order: the format
:func:`~kdaliens.training.data.load_dataset` reads as implicit feedback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generative model (defaults: ~20k users x 20k items, ~240k events)."""

    users: int = 20_000
    items: int = 20_000
    mean_len: float = 12.0
    min_len: int = 5
    max_len: int = 1000
    topics: int = 200
    topics_per_user: float = 0.05  # Dirichlet concentration: small = few topics each
    stay: float = 0.75  # probability of staying in the current topic
    series: float = 0.6  # probability, when staying, of taking one of the next items in the series
    series_window: int = 3
    zipf: float = 1.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < self.topics or self.topics < 1:
            raise ValueError("need users >= 1 and items >= topics >= 1")
        if not (self.min_len >= 1 and self.max_len >= self.min_len and self.mean_len >= self.min_len):
            raise ValueError("need 1 <= min_len <= mean_len and min_len <= max_len")


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) arrays of every interaction, grouped by user, time-ordered (0-based ids)."""
    rng = np.random.default_rng(cfg.seed)
    # Items: a topic each; within a topic, a series order and a Zipf popularity over it.
    topic_of = rng.permutation(np.arange(cfg.items) % cfg.topics)
    order = np.argsort(topic_of, kind="stable")  # items grouped by topic, series order within
    t_start = np.searchsorted(topic_of[order], np.arange(cfg.topics))
    t_size = np.bincount(topic_of, minlength=cfg.topics)
    rank_in_topic = np.empty(cfg.items, dtype=np.int64)
    rank_in_topic[order] = np.arange(cfg.items) - t_start[topic_of[order]]
    pop_perm = np.concatenate([rng.permutation(n) for n in t_size])  # popularity rank within topic
    # Users: topic preferences and lengths.
    prefs = rng.dirichlet(np.full(cfg.topics, cfg.topics_per_user), size=cfg.users)
    pref_cdf = np.cumsum(prefs, axis=1)
    extra = rng.geometric(1.0 / max(1.0, cfg.mean_len - cfg.min_len + 1), size=cfg.users) - 1
    lengths = np.minimum(cfg.min_len + extra, cfg.max_len)

    def draw_topic(users: np.ndarray) -> np.ndarray:
        u = rng.random(len(users))[:, None]
        return np.minimum((pref_cdf[users] < u).sum(1), cfg.topics - 1)

    def popular_in(topics: np.ndarray) -> np.ndarray:
        n = t_size[topics]
        # Zipf-like rank: floor(n ** U) - 1 spreads mass over ranks ~ 1 / rank.
        r = np.minimum(np.floor(n.astype(np.float64) ** (rng.random(len(topics)) ** cfg.zipf)).astype(np.int64) - 1,
                       n - 1)
        return order[t_start[topics] + pop_perm[t_start[topics] + r]]

    total = int(lengths.sum())
    out_u = np.repeat(np.arange(cfg.users), lengths)
    out_i = np.empty(total, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    active = np.arange(cfg.users)
    cur_topic = draw_topic(active)
    cur_item = popular_in(cur_topic)
    out_i[offsets[:-1]] = cur_item
    for step in range(1, int(lengths.max())):
        keep = lengths[active] > step
        active, cur_topic, cur_item = active[keep], cur_topic[keep], cur_item[keep]
        stay = rng.random(len(active)) < cfg.stay
        topic = np.where(stay, cur_topic, draw_topic(active))
        nxt = popular_in(topic)
        series = stay & (rng.random(len(active)) < cfg.series)
        step_ahead = rng.integers(1, cfg.series_window + 1, size=len(active))
        pos = (rank_in_topic[cur_item] + step_ahead) % t_size[cur_topic]
        nxt = np.where(series, order[t_start[cur_topic] + pos], nxt)
        out_i[offsets[active] + step] = nxt
        cur_topic, cur_item = topic, nxt
    return out_u, out_i


def write_sasrec(path: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> dict[str, int]:
    """Write the log as ``user item`` lines (1-based ids, as SASRec's files have them)."""
    users, items = generate(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for i in range(0, len(users), 200_000):
            u, it = users[i:i + 200_000] + 1, items[i:i + 200_000] + 1
            f.write("".join(f"{a} {b}\n" for a, b in zip(u.tolist(), it.tolist())))
    tmp.replace(path)
    return {"interactions": int(len(users)), "users": int(cfg.users), "items_seen": int(len(np.unique(items)))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdaliens.training.data.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="file to write (SASRec format)")
    d = SyntheticConfig()
    p.add_argument("--users", type=int, default=d.users)
    p.add_argument("--items", type=int, default=d.items)
    p.add_argument("--mean-len", type=float, default=d.mean_len)
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--topics", type=int, default=d.topics)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    try:
        cfg = SyntheticConfig(users=a.users, items=a.items, mean_len=a.mean_len, max_len=a.max_len, topics=a.topics,
                              seed=a.seed)
    except ValueError as e:
        print(f"synthetic: error: {e}", file=sys.stderr)
        return 2
    stats = write_sasrec(a.out, cfg)
    print(f"wrote {a.out}: {stats['interactions']:,} interactions, {stats['users']:,} users, "
          f"{stats['items_seen']:,} distinct items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
