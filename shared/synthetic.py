"""Synthetic pair of movie platforms that share part of their catalogue.

Users have latent tastes (a mixture over topics), items a topic and a power-law
popularity; each interaction picks a topic from the user's mixture, then an item of that
topic by popularity (or, with a small probability, any item by popularity). Profiles are
chronological and topic runs are contiguous in time, as in real viewing histories, so a
window around one item keeps related items.

``domain_shift`` in [0, 1] sets how far the source platform's popularity and topic
prevalence differ from the target's: 0 is the same population, 1 unrelated ones.
Shared movies carry the same IMDb id on both sides, so the real alignment code applies.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from shared.datasets.types import Dataset, Movie, Ratings

_GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_EPOCH_2000 = 946_684_800
_CHUNK = 2_000_000  # interactions sampled per step: bounds peak memory at 20M scale


@dataclass(frozen=True)
class SyntheticConfig:
    n_target_users: int
    n_source_users: int
    n_shared_items: int
    n_target_only_items: int
    n_source_only_items: int
    target_mean_profile: float  # mean liked interactions per user
    source_mean_profile: float
    profile_sigma: float = 1.0  # lognormal spread of profile lengths
    n_topics: int = 20
    topic_concentration: float = 0.3  # Dirichlet alpha: small = focused tastes
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity
    off_topic: float = 0.15  # share of interactions drawn from the whole catalogue
    disliked_share: float = 0.2  # extra ratings below the like threshold
    domain_shift: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.domain_shift <= 1.0:
            raise ValueError(f"domain_shift must lie in [0, 1], got {self.domain_shift}")
        if self.n_shared_items < 1 or self.n_target_users < 1 or self.n_source_users < 1:
            raise ValueError("a synthetic pair needs users on both sides and shared items")


PRESETS: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(200, 150, 250, 50, 100, 12, 20, n_topics=8),
    # Focused tastes (topic_concentration 0.05) and few off-topic picks: with the
    # defaults (0.3, 0.15) popularity is nearly all there is to learn (a topic-aware
    # oracle beats MostPopular by 0.05 HR@10; benchmarks/synthetic_signal.py), so every
    # model, PinSage included, was level with MostPopular.
    "small": SyntheticConfig(
        2_000, 3_000, 1_200, 300, 600, 20, 40, topic_concentration=0.05, off_topic=0.05
    ),
    # Mirrors ML10M-FX (paper Table 1): ~19k target users, 7k items, 440k interactions;
    # ~94k source users with long profiles; low shift; tastes focused as in "small".
    "paper": SyntheticConfig(
        19_267,
        93_702,
        5_815,
        1_169,
        3_000,
        25.0,
        80.0,
        profile_sigma=1.1,
        topic_concentration=0.05,
        off_topic=0.05,
        domain_shift=0.1,
    ),
    # MovieLens-20M scale target (138k users, 27k items, ~20M ratings), for scale benchmarks.
    "ml20m": SyntheticConfig(
        138_493, 100_000, 20_000, 6_744, 5_000, 134.0, 40.0, n_topics=50, disliked_share=0.2
    ),
}


def preset(name: str) -> SyntheticConfig:
    """The named preset (``dataclasses.replace`` changes its fields, with their types)."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def generate_pair(config: SyntheticConfig, name: str = "synthetic") -> tuple[Dataset, Dataset]:
    """(target platform, source platform), deterministic in ``config``."""
    rng = np.random.default_rng(config.seed)
    n_items = config.n_shared_items + config.n_target_only_items + config.n_source_only_items
    topic = rng.integers(0, config.n_topics, size=n_items)
    # power-law popularity over a random ranking of the whole catalogue
    ranks = rng.permutation(n_items) + 1.0
    log_pop_target = -config.popularity_exponent * np.log(ranks)
    other = -config.popularity_exponent * np.log(rng.permutation(n_items) + 1.0)
    log_pop_source = (1 - config.domain_shift) * log_pop_target + config.domain_shift * other
    prevalence_target = rng.dirichlet(np.full(config.n_topics, 2.0))
    prevalence_source = (1 - config.domain_shift) * prevalence_target + (
        config.domain_shift * rng.dirichlet(np.full(config.n_topics, 2.0))
    )
    shared = np.arange(config.n_shared_items)
    target_items = np.concatenate(
        [shared, config.n_shared_items + np.arange(config.n_target_only_items)]
    )
    source_items = np.concatenate(
        [shared, config.n_shared_items + config.n_target_only_items
         + np.arange(config.n_source_only_items)]
    )  # fmt: skip
    years = rng.integers(1930, 2019, size=n_items)
    fingerprint = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()
    platforms = []
    for side, items, log_pop, prevalence, n_users, mean in (
        ("target", target_items, log_pop_target, prevalence_target,
         config.n_target_users, config.target_mean_profile),
        ("source", source_items, log_pop_source, prevalence_source,
         config.n_source_users, config.source_mean_profile),
    ):  # fmt: skip
        ratings = _platform_ratings(
            config, rng, items, topic[items], log_pop[items], prevalence, n_users, mean
        )
        movies = {
            int(raw): Movie(
                raw_id=int(raw),
                title=f"Synthetic Movie {int(g)}",
                year=int(years[g]),
                genres=(_GENRES[int(topic[g]) % len(_GENRES)],),
                imdb_id=1_000_000 + int(g),
            )
            for raw, g in zip(np.arange(1, len(items) + 1), items, strict=True)
        }
        platforms.append(
            Dataset(
                name=f"{name}/{side}",
                ratings=ratings,
                movies=movies,
                rating_max=5.0,
                like_threshold=4.0,
                fingerprint={f"{name}/config": fingerprint},
            )
        )
    return platforms[0], platforms[1]


def _platform_ratings(
    config: SyntheticConfig,
    rng: np.random.Generator,
    items: np.ndarray,
    item_topic: np.ndarray,
    log_pop: np.ndarray,
    prevalence: np.ndarray,
    n_users: int,
    mean_profile: float,
) -> Ratings:
    """Ratings of one platform; item raw ids are 1 + position in ``items``."""
    n_items = len(items)
    mu = np.log(mean_profile) - config.profile_sigma**2 / 2
    lengths = np.clip(
        np.rint(rng.lognormal(mu, config.profile_sigma, size=n_users)), 1, n_items // 2
    ).astype(np.int64)
    tastes = rng.dirichlet(config.topic_concentration * config.n_topics * prevalence, n_users)
    taste_cdf = np.cumsum(tastes, axis=1)
    weights = np.exp(log_pop - log_pop.max())
    global_cdf = np.cumsum(weights) / weights.sum()
    by_topic = [np.flatnonzero(item_topic == t) for t in range(config.n_topics)]
    topic_cdfs = [np.cumsum(weights[m]) / weights[m].sum() if len(m) else m for m in by_topic]

    # Oversample by a fifth: repeated (user, item) draws are dropped below.
    draws = np.repeat(np.arange(n_users), np.ceil(lengths * 1.2).astype(np.int64))
    picked = np.empty(len(draws), dtype=np.int64)
    topics = np.empty(len(draws), dtype=np.int64)
    for start in range(0, len(draws), _CHUNK):
        users = draws[start : start + _CHUNK]
        u = rng.random(len(users))[:, None]
        z = np.minimum((taste_cdf[users] < u).sum(axis=1), config.n_topics - 1)
        chosen = np.searchsorted(global_cdf, rng.random(len(users)))
        on_topic = rng.random(len(users)) >= config.off_topic
        for t in range(config.n_topics):
            rows = np.flatnonzero(on_topic & (z == t))
            if len(rows) and len(by_topic[t]):
                position = np.searchsorted(topic_cdfs[t], rng.random(len(rows)))
                chosen[rows] = by_topic[t][np.minimum(position, len(by_topic[t]) - 1)]
        picked[start : start + len(users)] = np.minimum(chosen, n_items - 1)
        topics[start : start + len(users)] = item_topic[picked[start : start + len(users)]]

    # keep each user's first draws up to its length, without repeats
    order = np.lexsort((np.arange(len(draws)), picked, draws))
    fresh = np.ones(len(order), dtype=bool)
    fresh[1:] = (draws[order][1:] != draws[order][:-1]) | (picked[order][1:] != picked[order][:-1])
    keep = np.sort(order[fresh])
    users, picked, topics = draws[keep], picked[keep], topics[keep]
    rank_in_user = np.arange(len(users)) - np.searchsorted(users, users)
    within = rank_in_user < lengths[users]
    users, picked, topics = users[within], picked[within], topics[within]

    liked = rng.random(len(users)) < 0.5
    rating = np.where(liked, 5.0, 4.0)
    n_disliked = int(config.disliked_share * len(users))
    if n_disliked:
        extra_users = rng.integers(0, n_users, n_disliked)
        extra_items = np.searchsorted(global_cdf, rng.random(n_disliked)).clip(0, n_items - 1)
        users = np.concatenate([users, extra_users])
        picked = np.concatenate([picked, extra_items])
        topics = np.concatenate([topics, item_topic[extra_items]])
        rating = np.concatenate([rating, rng.integers(1, 4, n_disliked).astype(float)])
    timestamps = _timestamps(config, rng, users, topics, n_users)
    return Ratings(users + 1, picked + 1, rating, timestamps)


def _timestamps(
    config: SyntheticConfig,
    rng: np.random.Generator,
    users: np.ndarray,
    topics: np.ndarray,
    n_users: int,
) -> np.ndarray:
    """Per user: a start date, then one interaction every few hours to days, in an order
    where interactions of the same topic are close together (a user-specific topic order)."""
    topic_order = (topics * 7919 + users * 104_729) % config.n_topics
    key = topic_order + rng.random(len(users)) * 1.5
    order = np.lexsort((key, users))
    gaps = rng.exponential(86_400.0, size=len(users)).astype(np.int64) + 60
    sorted_users = users[order]
    elapsed = np.cumsum(gaps)
    first = np.searchsorted(sorted_users, sorted_users)
    elapsed = elapsed - elapsed[first] + gaps[first]
    start = _EPOCH_2000 + rng.integers(0, 15 * 365 * 86_400, size=n_users)
    stamps = np.empty(len(users), dtype=np.int64)
    stamps[order] = start[sorted_users] + elapsed
    return stamps
