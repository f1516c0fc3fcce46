"""One injection of a 50-item profile: incremental refresh against a full recompute.

On a scenario (the real target) or a synthetic preset (``ml20m``: MovieLens-20M scale),
for a victim family (``--victim``, default PinSage). The cost does not depend on trained
weights, so the model is freshly initialised unless ``--artifact`` is given: PinSage in
its default configuration, MF (nothing to recompute: the full build only wraps the
tables) with BPR-MF's default size, LightGCN in its default configuration (with the rows
an injection reaches: the holders of its items and their items), item-kNN with
``--neighbours`` and ``--shrink`` (counts and lists depend on the graph only). The full
recompute is a new state, except for LightGCN: its propagation from scratch
(:func:`~recsys_server.lightgcn.refresh.full_layers`), without the weighted item
co-occurrence a LightGCN state builds once for its refresh (the state is built once,
its time reported beside). Prints JSON: median seconds of each, their ratio, what an
injection recomputed (item-kNN), and the process's peak RSS.

    python benchmarks/refresh_speed.py --scenario DIR
    python benchmarks/refresh_speed.py --synthetic ml20m [--victim itemknn|lightgcn|mf]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from recsys_server.artifact import ModelArtifact
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, LightGCNConfig
from recsys_server.lightgcn.refresh import LightGCNState, full_layers
from recsys_server.pinsage.model import PinSage, PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.reference_recommenders import BPRMF, BPRConfig
from recsys_server.victims.base import ServingState
from recsys_server.victims.itemknn import NeighbourState
from recsys_server.victims.lightgcn import LightGCNVictim
from recsys_server.victims.mf import MFState
from recsys_server.victims.registry import VICTIMS
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
    parser.add_argument("--victim", choices=sorted(VICTIMS), default="pinsage")
    parser.add_argument("--neighbours", type=int, default=100, help="item-kNN's list length")
    parser.add_argument("--shrink", type=float, default=10.0, help="item-kNN's shrinkage")
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
    graph = InteractionGraph(data.train, data.n_users, data.n_items)
    build = state_builder(args, data, scenario.fingerprint, graph)

    builds = []
    for _ in range(args.full_repeats):
        started = time.perf_counter()
        state = build()
        builds.append(time.perf_counter() - started)
        if isinstance(state, LightGCNState):  # its full recompute is the propagation alone
            break
    full = builds
    if isinstance(state, LightGCNState):
        lightgcn = state
        full = [seconds(lambda: full_layers(lightgcn.model, lightgcn.graph))
                for _ in range(args.full_repeats)]  # fmt: skip

    lengths = np.diff(scenario.source_indptr)
    long_profiles = np.flatnonzero(lengths >= PROFILE_LENGTH)
    rng = np.random.default_rng(0)
    add, remove, updates, reach = [], [], [], []
    for index in rng.choice(long_profiles, args.injections, replace=False).tolist():
        profile = scenario.source_profile(index)[:PROFILE_LENGTH]
        holders = np.unique(graph.holders_of(profile)[1])
        reach.append([len(holders), len(np.unique(graph.profiles_of(holders)[1]))])
        started = time.perf_counter()
        user = state.add_user(profile)
        add.append(time.perf_counter() - started)
        updates.append(dict(getattr(state, "last_update", {})))
        started = time.perf_counter()
        state.remove_user(user)
        remove.append(time.perf_counter() - started)

    full_median, add_median = statistics.median(full), statistics.median(add)
    print(
        json.dumps(
            {
                "data": str(args.scenario or f"synthetic:{args.synthetic}"),
                "victim": args.victim,
                "victim_settings": settings_of(state),
                "users": data.n_users,
                "items": data.n_items,
                "train_interactions": len(data.train),
                "profile_length": PROFILE_LENGTH,
                "full_recompute_seconds_median": round(full_median, 4),
                "incremental_add_seconds_median": round(add_median, 5),
                "incremental_remove_seconds_median": round(statistics.median(remove), 5),
                "speedup_full_over_incremental": round(full_median / add_median, 1),
                "add_seconds_all": [round(t, 5) for t in add],
                "full_seconds_all": [round(t, 3) for t in full],
                "state_build_seconds_all": [round(t, 3) for t in builds],
                "add_updates": updates,
                # LightGCN recomputes these: holders of the profile (user layers 1..L-1)
                # and their items (item layers 2..L)
                "holders_and_their_items": reach if args.victim == "lightgcn" else None,
                "setup_seconds": round(setup_seconds, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "machine": machine(),
            }
        )
    )


def seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def state_builder(
    args: argparse.Namespace, data: TargetData, fingerprint: str, graph: InteractionGraph
) -> Callable[[], ServingState]:
    """A full build of the victim's serving state on ``graph``."""
    if args.artifact:
        victim = ModelArtifact.load(args.artifact, fingerprint).victim
        return lambda: victim.serving_state(data, graph)
    if args.victim == "pinsage":
        config = PinSageConfig(degree_steps_per_octave=args.degree_steps)
        model = PinSage(config, data.content.shape[1], data.n_items)
        return lambda: EmbeddingState(model, graph, data.content)
    if args.victim == "itemknn":
        return lambda: NeighbourState(graph, args.neighbours, args.shrink)
    if args.victim == "lightgcn":
        lightgcn = LightGCNVictim(LightGCN(LightGCNConfig(), data.n_users, data.n_items))
        return lambda: lightgcn.serving_state(data, graph)
    bpr = BPRMF(data.n_users, data.n_items, BPRConfig())
    return lambda: MFState(bpr, graph)


def settings_of(state: ServingState) -> dict[str, object]:
    if isinstance(state, EmbeddingState):
        return {"degree_steps_per_octave": state.config.degree_steps_per_octave}
    if isinstance(state, NeighbourState):
        return {"neighbours": state.neighbours, "shrink": state.shrink}
    if isinstance(state, LightGCNState):
        return state.model.config.to_dict()
    return {}


if __name__ == "__main__":
    main()
