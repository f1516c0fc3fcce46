"""Attackability probe: how far do copied profiles move a trained, frozen PinSage?

Server side, no HTTP: for each victim variant, train (or load from the cache) a model on
the scenario, then for each cold target item inject 30 profiles by each method through
the incremental refresh, measure, and remove them again (the refresh is exact, so every
method starts from the same clean state). Methods:

- WithoutAttack;
- RandomAttack: random source profiles;
- TargetAttack100 / TargetAttack40: random source profiles holding the target, whole /
  cropped to 40% around it;
- InDomainControl: the target plus the training profile of a real target user;
- SelectionOracle: the source profiles holding the target whose items are the most
  popular in the target's training data.

Reported per method: HR@20 of the target over evaluation users who never had it
(sampled-100 and full ranking), the target's median full rank, pretend users with the
target in their top-20 / top-100, and the cosine between the target's clean and attacked
embedding. ``--retrain-targets N`` adds the second threat model (a fine-tune on the
polluted graph, then the same measures) for the first N targets of the seeded draw
(``--target-seed``). The last line is JSON.

    python benchmarks/attackability_probe.py --scenario DIR [--variants ...] [--targets 50]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.prepare import training_key
from recsys_server.training import TrainConfig
from recsys_server.victims.base import Victim
from recsys_server.victims.pinsage import PinSageVictim
from shared.metrics import ranks_of
from shared.profiles import crop_around_target
from shared.scenario import Scenario, draw_targets, load_scenario

VARIANTS = {
    "content": PinSageConfig(variant="content"),
    "content+id-warm": PinSageConfig(variant="content+id-warm"),
    "content+id": PinSageConfig(variant="content+id"),
    "content+id-warm/no-degree": PinSageConfig(variant="content+id-warm", use_degree=False),
    "content+id/no-degree": PinSageConfig(variant="content+id", use_degree=False),
    "content+id/no-degree/residual": PinSageConfig(
        variant="content+id", use_degree=False, residual=True
    ),
    "content+id-warm/id-dropout": PinSageConfig(variant="content+id-warm", id_dropout=0.5),
    "content+id-warm/continuous-degree": PinSageConfig(
        variant="content+id-warm", degree_steps_per_octave=0
    ),
}
METHODS = (
    "WithoutAttack",
    "RandomAttack",
    "TargetAttack100",
    "TargetAttack40",
    "InDomainControl",
    "SelectionOracle",
)
N_PRETEND = 50


@dataclass
class Probe:
    scenario: Scenario
    data: TargetData
    budget: int
    rng: np.random.Generator

    def __post_init__(self) -> None:
        n = len(self.scenario.source_indptr) - 1
        self.profiles = [self.scenario.source_profile(i) for i in range(n)]
        self.popularity = np.bincount(self.data.train[:, 1], minlength=self.data.n_items)
        self.graph = InteractionGraph(self.data.train, self.data.n_users, self.data.n_items)
        pool = self.scenario.pretend_pool
        self.pretend = np.sort(np.random.default_rng(0).choice(pool, N_PRETEND, replace=False))
        lengths = self.graph.profile_length(np.arange(self.data.n_users))
        self.established = np.flatnonzero(lengths >= 3)

    def _sample(self, candidates: list[int]) -> list[int]:
        replace = len(candidates) < self.budget
        return [int(i) for i in self.rng.choice(candidates, self.budget, replace=replace)]

    def injections(self, method: str, target: int) -> list[np.ndarray]:
        holding = [i for i, p in enumerate(self.profiles) if target in p]
        if method == "WithoutAttack":
            return []
        if method == "RandomAttack":
            return [self.profiles[i] for i in self._sample(list(range(len(self.profiles))))]
        if method == "TargetAttack100":
            return [self.profiles[i] for i in self._sample(holding)]
        if method == "TargetAttack40":
            return [
                crop_around_target(self.profiles[i], target, 0.4) for i in self._sample(holding)
            ]
        if method == "InDomainControl":
            users = self.rng.choice(self.established, self.budget, replace=False)
            out = []
            for user in users.tolist():
                profile = self.graph.profile(user)
                out.append(np.append(profile[profile != target], target))
            return out
        if method == "SelectionOracle":

            def mean_popularity(i: int) -> float:
                others = self.profiles[i][self.profiles[i] != target]
                return float(self.popularity[others].mean()) if len(others) else 0.0

            ranked = sorted(holding, key=lambda i: (-mean_popularity(i), i))
            chosen = (ranked * self.budget)[: self.budget]
            return [self.profiles[i] for i in chosen]
        raise ValueError(method)

    def measure(self, state: EmbeddingState, target: int, clean: np.ndarray) -> dict:
        holders = self.data.known[:, target].nonzero()[0]
        users = np.setdiff1d(self.scenario.eval_users, holders)
        items = np.full(len(users), target)
        ranks = ranks_of(state.scores, users, items, self.data.known, seed=1)
        pretend_ranks = np.array([_position(state.topk(int(u), 100), target) for u in self.pretend])
        vector = state.item_vectors[np.array([target])][0]
        cosine = float(vector @ clean / (np.linalg.norm(vector) * np.linalg.norm(clean)))
        return {
            "hr20_sampled": float((ranks["sampled"] < 20).mean()),
            "hr20_full": float((ranks["full"] < 20).mean()),
            "median_full_rank": float(np.median(ranks["full"])),
            "pretend_top20": int((pretend_ranks < 20).sum()),
            "pretend_top100": int((pretend_ranks < 100).sum()),
            "cosine_to_clean": cosine,
        }


def _position(ranked: np.ndarray, item: int) -> int:
    """0-based position of ``item`` in ``ranked``, or its length when absent."""
    hits = np.flatnonzero(ranked == item)
    return int(hits[0]) if len(hits) else len(ranked)


def trained_model(
    data: TargetData, name: str, config: PinSageConfig, cache: Path
) -> tuple[Victim, dict]:
    train = TrainConfig(progress=False)
    # the key covers the training settings too, so a changed default retrains
    key = training_key(data.fingerprint, PinSageVictim.name, config, train)[:12]
    path = cache / f"{data.fingerprint[:16]}-{name.replace('/', '_')}-{key}.pt"
    try:
        artifact = ModelArtifact.load(path, data.fingerprint)
        return artifact.victim, artifact.metrics
    except ArtifactError:
        pass
    started = time.perf_counter()
    model, history = PinSageVictim.train(data, config, train)
    seconds = time.perf_counter() - started
    metrics = {
        "test": data.test_metrics(model.serving_state(data).scores),
        "validation_hr10": history.best,
        "train_seconds": round(seconds, 1),
    }
    ModelArtifact(model, data.fingerprint, metrics).save(path)
    return model, metrics


def summarise(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    out = {key: float(np.mean([r[key] for r in rows])) for key in keys}
    out["median_full_rank"] = float(np.median([r["median_full_rank"] for r in rows]))
    return out


def run_variant(
    args, scenario: Scenario, data: TargetData, name: str, model: Victim, metrics: dict
) -> dict:
    probe = Probe(scenario, data, args.budget, np.random.default_rng(args.seed))
    state = model.serving_state(data, probe.graph)
    assert isinstance(state, EmbeddingState)  # the embedding cosine below is PinSage's
    targets = draw_targets(scenario.cold_targets, args.targets, args.target_seed)
    frozen: dict[str, list[dict]] = {m: [] for m in METHODS}
    retrained: dict[str, list[dict]] = {m: [] for m in METHODS}
    for position, target in enumerate(targets):
        clean = state.item_vectors[np.array([target])][0]
        for method in METHODS:
            attacked = state.fork()
            for profile in probe.injections(method, target):
                attacked.add_user(profile)
            frozen[method].append(probe.measure(attacked, target, clean))
            if position < args.retrain_targets:
                polluted = attacked.retrained(data, args.retrain_epochs)
                retrained[method].append(probe.measure(polluted, target, clean))
    result = {
        "variant": name,
        "quality": metrics,
        "frozen": {m: summarise(r) for m, r in frozen.items()},
    }
    if args.retrain_targets:
        result["retrained"] = {m: summarise(r) for m, r in retrained.items()}
    base = result["frozen"]["WithoutAttack"]["hr20_sampled"]
    result["lift_sampled_hr20"] = {
        m: result["frozen"][m]["hr20_sampled"] / base if base else float("inf") for m in METHODS
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument(
        "--target-seed", type=int, default=0, help="seed of the targets' draw and order"
    )
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--retrain-targets", type=int, default=0)
    parser.add_argument("--retrain-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("artifacts/probe"))
    parser.add_argument(
        "--artifact", type=Path, help="probe this trained model (e.g. prepare's model.pt) "
        "instead of training --variants")  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    scenario = load_scenario(args.scenario)
    data = TargetData.from_scenario(scenario)
    if args.artifact:
        artifact = ModelArtifact.load(args.artifact, scenario.fingerprint)
        name = f"{artifact.victim.config_dict()['variant']} ({args.artifact})"
        models = {name: (artifact.victim, artifact.metrics)}
    else:
        models = {n: trained_model(data, n, VARIANTS[n], args.cache) for n in args.variants}
    results = []
    for name, (model, metrics) in models.items():
        started = time.perf_counter()
        result = run_variant(args, scenario, data, name, model, metrics)
        result["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(json.dumps({"scenario": scenario.fingerprint, "targets": args.targets,
                      "budget": args.budget, "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
