"""Item-kNN's scheduled retrain: its grid search over N and the shrinkage, timed two
ways in the same run, alternately, on the artifact's own graph and grid.

``shared``: what ``tune`` does since 2026-12-01: one count table, and one sort of the
similarities per shrinkage at the grid's widest lists, each N's lists cut from it.
``per_point``: what it did before: every grid point builds its own counts and sort. Both
validate every point the same way; the run checks they score every point alike. Prints
JSON: medians and their ratio.

    python benchmarks/itemknn_retrain_speed.py --artifact artifacts/paper_itemknn/model.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from recsys_server.artifact import ModelArtifact
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.victims.itemknn import ItemKNNConfig, NeighbourState, tune
from shared.machine import machine


def per_point(data: TargetData, graph: InteractionGraph, grid: ItemKNNConfig) -> dict[str, float]:
    return {
        f"N {n}, shrink {s:g}": data.validation_hr10(NeighbourState(graph, n, s).scores)
        for n, s in grid.grid()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True, help="an item-kNN model")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    artifact = ModelArtifact.load(args.artifact)
    data = artifact.data
    if data is None or artifact.victim.name != "itemknn":
        sys.exit(f"{args.artifact} is not an item-kNN artifact with serving data")
    state = artifact.victim.serving_state(data)
    grid = state.retrain_config
    seconds: dict[str, list[float]] = {"shared": [], "per_point": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        shared_scores = tune(data, state.graph, grid, progress=False)[2]
        seconds["shared"].append(time.perf_counter() - started)
        started = time.perf_counter()
        own_scores = per_point(data, state.graph, grid)
        seconds["per_point"].append(time.perf_counter() - started)
        if shared_scores != own_scores:
            sys.exit(f"the two ways disagree: {shared_scores} against {own_scores}")
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    print(json.dumps({
        "machine": machine(),
        "items": data.n_items,
        "users": data.n_users,
        "grid_points": len(grid.grid()),
        "repeats": args.repeats,
        "median_seconds": {name: round(value, 2) for name, value in medians.items()},
        "per_point_over_shared": round(medians["per_point"] / medians["shared"], 2),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
