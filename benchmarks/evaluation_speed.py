"""The admin evaluation of a world after a full attack: how much a world costs over the
clean model, with the two ways of scoring a copy-on-write item table.

A world after ``--profiles`` injected source profiles owns most item rows. Its
evaluation (every evaluation user, both protocols, one target) is timed three ways in
the same run: the clean state (no overlay: the floor), the world scored by patching the
private rows' columns into the base product (``columns``: what ``dot_rows`` did for every
batch until 2026-11-28), and by one product with a dense copy of the table (``dense``:
what it does now from ``BATCH`` vectors on). The sampled protocol alone (what a
budget-curve checkpoint asks) is timed both ways too: ranked from the catalogue product
(``sampled_catalogue``, until 2026-11-28) and from each case's 101 candidates only
(``sampled_pairs``, now). Any victim's artifact; the column-patching path is PinSage's
alone. Prints JSON: medians and their ratios.

    python benchmarks/evaluation_speed.py --artifact artifacts/demo/primary/model.pt \\
        --scenario artifacts/demo/primary/scenario
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsys_server.artifact import ModelArtifact
from recsys_server.pinsage import overlay
from recsys_server.victims.base import ServingState
from shared.machine import machine
from shared.metrics import N_SAMPLED, ranks_of, sample_negatives
from shared.scenario import load_attacker_view


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--scenario", type=Path, required=True, help="its attacker view")
    parser.add_argument("--profiles", type=int, default=30, help="injected before evaluating")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    artifact = ModelArtifact.load(args.artifact)
    data = artifact.data
    if data is None:
        sys.exit(f"{args.artifact} carries no serving data")
    view = load_attacker_view(args.scenario)
    clean = artifact.victim.serving_state(data)
    world = clean.fork()
    rng = np.random.default_rng(0)
    target = view.cold_targets[0]
    for _ in range(args.profiles):  # whole source profiles, as TargetAttack100 copies them
        world.add_user(view.source_profile(int(rng.integers(view.n_source_users))))
    users = np.setdiff1d(data.eval_users, data.train[data.train[:, 1] == target, 0])

    items = np.full(len(users), target)

    def evaluate(state: ServingState) -> Callable[[], object]:
        return lambda: ranks_of(state.scores, users, items, data.known)

    # drawn once, as the service keeps them per target
    negatives = sample_negatives(users, data.known, N_SAMPLED, seed=0)

    def sampled(pairs: bool) -> Callable[[], object]:
        pair_score = world.scores_of if pairs else None
        return lambda: ranks_of(
            world.scores,
            users,
            items,
            data.known,
            protocols=("sampled",),
            negatives=negatives,
            pair_score=pair_score,
        )

    seconds = {"clean": median_seconds(evaluate(clean), args.repeats)}
    seconds["dense"] = median_seconds(evaluate(world), args.repeats)
    seconds["sampled_catalogue"] = median_seconds(sampled(pairs=False), args.repeats)
    seconds["sampled_pairs"] = median_seconds(sampled(pairs=True), args.repeats)
    report = {
        "machine": machine(),
        "victim": artifact.victim.name,
        "evaluation_users": len(users),
        "items": data.n_items,
    }
    if hasattr(world, "item_vectors"):  # PinSage's item table: the column-patching path
        batch, overlay.BATCH = overlay.BATCH, sys.maxsize
        try:
            seconds["columns"] = median_seconds(evaluate(world), args.repeats)
        finally:
            overlay.BATCH = batch
        report["private_item_rows"] = len(world.item_vectors.private_rows())
        report["columns_over_dense"] = round(seconds["columns"] / seconds["dense"], 2)
    print(json.dumps({
        **report,
        "median_seconds": {name: round(value, 4) for name, value in seconds.items()},
        "dense_over_clean": round(seconds["dense"] / seconds["clean"], 2),
        "sampled_catalogue_over_pairs": round(
            seconds["sampled_catalogue"] / seconds["sampled_pairs"], 2
        ),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
