"""How much a synthetic platform rewards personalisation: a topic-aware oracle against
MostPopular, on the generator's own data, under both protocols.

The oracle knows what no model is told: each item's topic (the genre the generator gives
it) and each user's topic shares in the training split; it scores
P(topic | user) x the item's popularity within its topic. If even this oracle is barely
above MostPopular, no recommender can be, and a victim that is "level with MostPopular"
on that data says nothing about the victim. Liked interactions (rating >= 4) are split
90/10 at random with a fixed seed. Prints one JSON line per setting, then all as JSON.

    python benchmarks/synthetic_signal.py --preset paper
    python benchmarks/synthetic_signal.py --preset small --set topic_concentration=0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.machine import machine
from shared.metrics import known_items, metrics_from_ranks, ranks_of
from shared.synthetic import generate_pair, preset


def signal(preset_name: str, overrides: dict[str, float]) -> dict[str, object]:
    target, _ = generate_pair(replace(preset(preset_name), **overrides))
    movies = list(target.movies.values())
    index = {movie.raw_id: i for i, movie in enumerate(movies)}
    ratings = target.ratings
    liked = ratings.rating >= 4
    users = np.unique(ratings.user[liked], return_inverse=True)[1]
    items = np.array([index[raw] for raw in ratings.item[liked].tolist()])
    genres = sorted({movie.genres[0] for movie in movies})
    topic = np.array([genres.index(movie.genres[0]) for movie in movies])
    n_users, n_items = int(users.max()) + 1, len(movies)
    test = np.random.default_rng(0).random(len(users)) < 0.1
    train = np.stack([users[~test], items[~test]], axis=1)
    cases = np.stack([users[test], items[test]], axis=1)
    known = known_items(np.stack([users, items], axis=1), n_users, n_items)
    popularity = np.bincount(train[:, 1], minlength=n_items).astype(float)
    shares = np.zeros((n_users, len(genres)))
    np.add.at(shares, (train[:, 0], topic[train[:, 1]]), 1.0)
    shares = (shares + 0.1) / (shares.sum(axis=1, keepdims=True) + 0.1 * len(genres))
    within_topic = popularity / np.bincount(topic, weights=popularity, minlength=len(genres))[topic]
    scorers = {
        "topic_oracle": lambda u: shares[u][:, topic] * within_topic[None, :],
        "most_popular": lambda u: np.tile(popularity, (len(u), 1)),
    }
    out: dict[str, object] = {"preset": preset_name, "overrides": overrides}
    for name, score in scorers.items():
        ranks = ranks_of(score, cases[:, 0], cases[:, 1], known, seed=0)
        out[name] = {p: round(metrics_from_ranks(r)["HR@10"], 3) for p, r in ranks.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a generator override"
    )
    args = parser.parse_args()
    settings = [dict((kv.split("=")[0], float(kv.split("=")[1])) for kv in args.set)]
    if not args.set:  # the preset, then the diffuse tastes it had until 2026-11-28
        settings = [{}, {"topic_concentration": 0.3, "off_topic": 0.15}]
    results = []
    for overrides in settings:
        results.append(signal(args.preset, overrides))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"machine": machine(), "results": results}))


if __name__ == "__main__":
    main()
