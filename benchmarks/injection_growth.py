"""Does an injection get slower as its world grows? The service's injection step (fork the
world's installed state, add one user to the fork: ``recsys_server.worlds.world.with_user``)
timed on a world of 1 injection and on a world of 100, in one run, on one compute thread
as the server's default.

A world is grown with random 50-item profiles; then ``--samples`` further injections are
each timed from that same state (every sample is the world's next injection, the state
does not grow while sampling), split into the fork and the refresh. Prints JSON: median
and p99 milliseconds of each at each world size, and the ratio of the p99s.

    python benchmarks/injection_growth.py --artifact artifacts/demo/primary/model.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys_server.artifact import ModelArtifact
from recsys_server.cli import limit_compute_threads
from recsys_server.victims.base import ServingState
from shared.machine import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100], help="injections")
    parser.add_argument("--samples", type=int, default=50, help="timed injections per size")
    parser.add_argument("--profile-length", type=int, default=50)
    args = parser.parse_args()
    limit_compute_threads(1)  # as the server's refresh thread runs (its default)

    artifact = ModelArtifact.load(args.artifact)
    assert artifact.data is not None, "the artifact carries no serving data"
    n_items = artifact.data.n_items
    rng = np.random.default_rng(0)

    def profile() -> np.ndarray:
        return rng.choice(n_items, size=args.profile_length, replace=False)

    world: ServingState = artifact.victim.serving_state(artifact.data).fork()
    grown = 0
    out: dict = {"victim": artifact.victim.name, "n_items": n_items, "sizes": {}}
    for size in sorted(args.sizes):
        for _ in range(size - grown):  # as the service does: fork, add, install the fork
            world = world.fork()
            world.add_user(profile())
        grown = size
        fork_ms, refresh_ms, total_ms = [], [], []
        for _ in range(args.samples):
            started = time.perf_counter()
            fork = world.fork()
            forked = time.perf_counter()
            fork.add_user(profile())
            done = time.perf_counter()
            fork_ms.append((forked - started) * 1000)
            refresh_ms.append((done - forked) * 1000)
            total_ms.append((done - started) * 1000)
        out["sizes"][str(size)] = {
            name: {
                "p50_ms": round(float(np.percentile(values, 50)), 3),
                "p99_ms": round(float(np.percentile(values, 99)), 3),
            }
            for name, values in (("fork", fork_ms), ("refresh", refresh_ms), ("total", total_ms))
        }
    first, last = (str(s) for s in (min(args.sizes), max(args.sizes)))
    out["p99_ratio_last_over_first"] = round(
        out["sizes"][last]["total"]["p99_ms"] / out["sizes"][first]["total"]["p99_ms"], 2
    )
    print(
        json.dumps(
            {
                "benchmark": "injection_growth",
                "machine": machine(),
                "samples": args.samples,
                "profile_length": args.profile_length,
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
