"""What a Ray cluster adds to a run of ``copyattack experiment ... --ray``, measured.

    python benchmarks/ray_overhead.py --artifact A/model.pt --scenario A/scenario
        [--ray auto|ADDRESS] [--calls 200] [--cache-dir DIR] [--seed 0]

Prints one JSON object:

- ``call_ms``: the round trip of an empty call to an actor, awaited from the driver's
  event loop as the cells are (median and 90th percentile over ``--calls``): Ray's
  scheduling cost per cell;
- ``artifact``: its size, and the seconds from ``ray.put`` until an actor on every node
  has it and has checked its sha256 (what each replica's start costs on top of serving);
- ``experiment``: the pickled run (attacker view, source MF, trees) that every actor
  fetches once per run: its size and the seconds until every actor has unpickled it.

The source MF is trained unless ``--cache-dir`` holds it (a run's ``--out`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import pickle
import statistics
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from attacker_client.harness import Experiment, ExperimentConfig
from attacker_client.source_mf import SourceMFConfig, cached_source_mf
from shared.scenario import draw_targets, load_attacker_view


class Probe:
    """An actor that does nothing but answer, fetch and check."""

    def __init__(self) -> None:
        # imported ahead, as in a replica's actor: the load then measures the run alone
        import attacker_client.harness  # noqa: F401

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def echo(self) -> None:
        return None

    def check(self, data: bytes, sha256: str) -> bool:
        return hashlib.sha256(data).hexdigest() == sha256

    async def load(self, box: list[Any]) -> int:
        return len(pickle.loads(await box[0]).targets)


def _timed(action: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


async def _round_trips(actor: Any, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await actor.echo.remote()
        times.append(1000 * (time.perf_counter() - started))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--ray", default="auto", help="auto: this machine's cluster, or local")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--cache-dir", type=Path, help="where the source MF is (or goes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the target draw")
    args = parser.parse_args()
    ray.init(
        address=None if args.ray == "auto" else args.ray,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        # one probe pinned to each node
        probes = [
            ray.remote(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            )(Probe).remote()
            for n in nodes
        ]
        ray.get([p.node.remote() for p in probes])
        times = asyncio.run(_round_trips(probes[0], args.calls))
        data = args.artifact.read_bytes()
        digest = hashlib.sha256(data).hexdigest()

        def ship_artifact() -> list[bool]:
            ref = ray.put(data)
            return ray.get([p.check.remote(ref, digest) for p in probes])

        checked, artifact_seconds = _timed(ship_artifact)
        assert all(checked)
        view = load_attacker_view(args.scenario)
        cache = args.cache_dir or Path("results/ray_overhead")
        embeddings = cached_source_mf(view, SourceMFConfig(seed=0), cache)
        config = ExperimentConfig(server="", admin_token="", scenario=args.scenario, out=cache)
        targets = draw_targets(view.cold_targets, 50, args.seed)
        experiment = Experiment(config, view, embeddings, targets)
        for depth in sorted(experiment.tree_depths()):
            experiment.tree(depth)
        pickled = pickle.dumps(experiment)

        def ship_experiment() -> list[int]:
            box = [ray.put(pickled)]
            return ray.get([p.load.remote(box) for p in probes])

        _, experiment_seconds = _timed(ship_experiment)
        print(
            json.dumps(
                {
                    "nodes": len(nodes),
                    "call_ms": {
                        "calls": args.calls,
                        "median": round(statistics.median(times), 3),
                        "p90": round(statistics.quantiles(times, n=10)[-1], 3),
                    },
                    "artifact": {"bytes": len(data), "seconds": round(artifact_seconds, 3)},
                    "experiment": {
                        "bytes": len(pickled),
                        "seconds": round(experiment_seconds, 3),
                    },
                },
                indent=1,
            )
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
