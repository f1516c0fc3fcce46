"""Quality levers of the PinSage victim, measured on the validation split only.

Trains PinSage once per named lever (a change of ``PinSageConfig`` / ``TrainConfig`` from
the defaults) on a prepared scenario and reports HR@10 on the validation split under both
protocols, the epochs early stopping ran and the training time. The test split is never
read: this is where a lever is chosen, and the chosen model is then evaluated once with
``recsys-server train``. Training seeds of the default (``default``, ``seed1``,
``seed2``) give the noise to read the other rows against. One line of JSON per lever; the
last line is all of them.

    python benchmarks/validation_sweep.py --scenario artifacts/demo/primary/scenario [--levers ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.pinsage.train import train_pinsage
from recsys_server.training import TrainConfig
from shared.machine import machine
from shared.scenario import load_scenario

# name -> (PinSageConfig changes, WalkConfig changes, TrainConfig changes)
Lever = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
LEVERS: dict[str, Lever] = {
    "default": ({}, {}, {}),
    "seed1": ({}, {}, {"seed": 1}),
    "seed2": ({}, {}, {"seed": 2}),
    "layers1": ({"n_layers": 1}, {}, {}),
    "layers3": ({"n_layers": 3}, {}, {}),
    "dim16": ({"dim": 16}, {}, {}),
    "neighbours50": ({}, {"n_neighbours": 50}, {}),
    "walks512": ({}, {"n_walks": 512}, {}),
    "batch256": ({}, {}, {"batch_size": 256}),
    "residual": ({"residual": True}, {}, {}),
    "residual/seed1": ({"residual": True}, {}, {"seed": 1}),
    "residual/seed2": ({"residual": True}, {}, {"seed": 2}),
    "residual/wd3e-5": ({"residual": True}, {}, {"weight_decay": 3e-5}),
    "residual/wd3e-4": ({"residual": True}, {}, {"weight_decay": 3e-4}),
    "residual/wd1e-3": ({"residual": True}, {}, {"weight_decay": 1e-3}),
    "residual/dim64": ({"residual": True, "dim": 64}, {}, {}),
    "residual/lr2e-3": ({"residual": True}, {}, {"lr": 2e-3}),
    "residual/neighbours50": ({"residual": True}, {"n_neighbours": 50}, {}),
    "residual/layers1": ({"residual": True, "n_layers": 1}, {}, {}),
}


def measure(data: TargetData, name: str, lever: Lever) -> dict[str, Any]:
    model_changes, walk_changes, train_changes = lever
    config = dataclasses.replace(PinSageConfig(**model_changes), walks=WalkConfig(**walk_changes))
    started = time.perf_counter()
    model, history = train_pinsage(data, config, TrainConfig(progress=False, **train_changes))
    seconds = time.perf_counter() - started
    graph = InteractionGraph(data.train, data.n_users, data.n_items)
    validation = data.validation_metrics(EmbeddingState(model, graph, data.content).scores)
    return {
        "lever": name,
        "validation_hr10_sampled": round(validation["sampled"]["HR@10"], 4),
        "validation_hr10_full": round(validation["full"]["HR@10"], 4),
        "epochs": len(history.validation_hr10),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--levers", nargs="+", choices=sorted(LEVERS), default=list(LEVERS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = TargetData.from_scenario(load_scenario(args.scenario))
    rows = []
    for name in args.levers:
        rows.append(measure(data, name, LEVERS[name]))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"machine": machine(), "threads": args.threads, "levers": rows}))


if __name__ == "__main__":
    main()
