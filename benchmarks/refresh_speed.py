"""One injection of a 50-item profile: incremental refresh against a full recompute.

On a scenario (the real target) or a synthetic preset (``ml20m``: MovieLens-20M scale),
with the victim's default configuration (``--victim``, PinSage by default; the cost does
not depend on trained weights, so the model is freshly initialised unless ``--artifact``
is given). Prints JSON: median seconds of each, their ratio, and the process's peak RSS
(for LightGCN also the rows an injection reaches: the holders of its items and their
items).

    python benchmarks/refresh_speed.py --scenario DIR
    python benchmarks/refresh_speed.py --synthetic ml20m [--victim lightgcn]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recsys_server.artifact import ModelArtifact
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, LightGCNConfig
from recsys_server.pinsage.model import PinSage, PinSageConfig
from recsys_server.victims.base import Victim
from recsys_server.victims.lightgcn import LightGCNVictim
from recsys_server.victims.pinsage import PinSageVictim
from shared.datasets.pair import load_pair
from shared.machine import machine
from shared.scenario import ScenarioConfig, build_scenario, load_scenario

PROFILE_LENGTH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", type=Path)
    source.add_argument("--synthetic", help="synthetic preset, e.g. ml20m")
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--victim", choices=("pinsage", "lightgcn"), default="pinsage")
    parser.add_argument(
        "--degree-steps", type=int, default=PinSageConfig.degree_steps_per_octave,
        help="degree feature rounding (0: continuous)",
    )  # fmt: skip
    parser.add_argument("--injections", type=int, default=5)
    parser.add_argument("--full-repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()
    if args.scenario:
        scenario = load_scenario(args.scenario)
    else:
        name = f"synthetic:{args.synthetic}"
        scenario = build_scenario(*load_pair(name, name, Path(".")), ScenarioConfig())
    data = TargetData.from_scenario(scenario)
    setup_seconds = time.perf_counter() - started
    victim: Victim
    if args.artifact:
        victim = ModelArtifact.load(args.artifact, scenario.fingerprint).victim
    elif args.victim == "lightgcn":
        victim = LightGCNVictim(LightGCN(LightGCNConfig(), data.n_users, data.n_items))
    else:
        config = PinSageConfig(degree_steps_per_octave=args.degree_steps)
        victim = PinSageVictim(PinSage(config, data.content.shape[1], data.n_items))
    graph = InteractionGraph(data.train, data.n_users, data.n_items)

    full = []
    for _ in range(args.full_repeats):
        started = time.perf_counter()
        state = victim.serving_state(data, graph)
        full.append(time.perf_counter() - started)

    lengths = np.diff(scenario.source_indptr)
    long_profiles = np.flatnonzero(lengths >= PROFILE_LENGTH)
    rng = np.random.default_rng(0)
    add, remove, reach = [], [], []
    for index in rng.choice(long_profiles, args.injections, replace=False).tolist():
        profile = scenario.source_profile(index)[:PROFILE_LENGTH]
        holders = np.unique(graph.holders_of(profile)[1])
        reach.append([len(holders), len(np.unique(graph.profiles_of(holders)[1]))])
        started = time.perf_counter()
        user = state.add_user(profile)
        add.append(time.perf_counter() - started)
        started = time.perf_counter()
        state.remove_user(user)
        remove.append(time.perf_counter() - started)

    full_median, add_median = statistics.median(full), statistics.median(add)
    print(
        json.dumps(
            {
                "data": str(args.scenario or f"synthetic:{args.synthetic}"),
                "users": data.n_users,
                "items": data.n_items,
                "train_interactions": len(data.train),
                "profile_length": PROFILE_LENGTH,
                "victim": victim.name,
                "config": victim.config_dict(),
                "full_recompute_seconds_median": round(full_median, 4),
                "incremental_add_seconds_median": round(add_median, 5),
                "incremental_remove_seconds_median": round(statistics.median(remove), 5),
                "speedup_full_over_incremental": round(full_median / add_median, 1),
                "add_seconds_all": [round(t, 5) for t in add],
                # LightGCN recomputes these: holders of the profile (user layers 1..L-1)
                # and their items (item layers 2..L)
                "holders_and_their_items": reach if victim.name == "lightgcn" else None,
                "setup_seconds": round(setup_seconds, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
