"""Train a scenario's model artifact; and ``prepare``: fetch, build and train once.

``prepare`` is what the compose ``trainer`` and ``make demo`` run. The scenario is rebuilt
in memory (seconds) and written only when its fingerprint differs from the one already in
``workdir/scenario``; the model is retrained only when its training key (scenario
fingerprint, model and training configuration) differs from the key stored inside
``workdir/model.pt``, or when that file does not load. A second run on the same data with
the same flags trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.data import TargetData
from recsys_server.reference_recommenders import BPRMF, EASE, MostPopular
from recsys_server.training import TrainConfig
from recsys_server.victims.registry import VICTIMS
from shared.datasets.pair import load_pair
from shared.metrics import ACTIVE_MIN_TRAIN, ScoreFn, evaluate
from shared.scenario import (
    Scenario,
    ScenarioConfig,
    build_scenario,
    save_scenario,
)
from shared.schemas import ACTIVE_USERS, ALL_USERS

SCENARIO_DIR = "scenario"
MODEL_FILE = "model.pt"


def _evaluate_split(data: TargetData, score: ScoreFn, seed: int) -> dict[str, Any]:
    """Test metrics on every case, and on the cases of users with 3+ training items (the
    cohorts of the server's evaluation)."""
    train_counts = np.bincount(data.train[:, 0], minlength=data.n_users)
    active = data.test[train_counts[data.test[:, 0]] >= ACTIVE_MIN_TRAIN]
    return {
        ALL_USERS: evaluate(score, data.test, data.known, seed=seed),
        ACTIVE_USERS: evaluate(score, active, data.known, seed=seed),
    }


def train_artifact(
    scenario: Scenario,
    victim: str,
    config: Any,
    train: TrainConfig,
    out: Path,
    *,
    baselines: bool = True,
    training_key: str | None = None,
) -> dict[str, Any]:
    """Fit the victim (``config``: its family's settings), evaluate it (and the baselines)
    on the test split, save the artifact."""
    data = TargetData.from_scenario(scenario)
    family = VICTIMS[victim]
    started = time.perf_counter()
    model, history = family.train(data, config, train)
    seconds = time.perf_counter() - started
    results: dict[str, Any] = {
        family.label: {
            **_evaluate_split(data, model.serving_state(data).scores, train.seed),
            "train_seconds": round(seconds, 1),
            "epochs": len(history.validation_hr10),
            "best_epoch": history.best_epoch,
            "validation_hr10": round(history.best, 4),
            "victim": victim,
            "config": model.config_dict(),
        }
    }
    if baselines:
        results["MostPopular"] = _evaluate_split(data, MostPopular(data).score, train.seed)
        bpr, _ = BPRMF.tuned(data, TrainConfig(seed=train.seed, progress=train.progress))
        results["BPR-MF"] = {**_evaluate_split(data, bpr.score, train.seed), "l2": bpr.l2}
        ease = EASE(data, progress=train.progress)
        results["EASE"] = {**_evaluate_split(data, ease.score, train.seed), "l2": ease.l2}
    ModelArtifact(model, scenario.fingerprint, results, data, training_key).save(out)
    return results


@dataclass(frozen=True)
class Prepared:
    scenario_dir: Path
    artifact: Path
    fingerprint: str
    scenario_reused: bool
    model_reused: bool
    metrics: dict[str, Any] | None  # None when the model was reused
    seconds: float


def training_key(fingerprint: str, victim: str, config: Any, train: TrainConfig) -> str:
    """What the trained weights depend on (progress bars do not count)."""
    settings = {**asdict(train), "progress": None}
    key: list[Any] = [fingerprint, config.to_dict(), settings]
    if victim != "pinsage":  # PinSage's key stays as it was: its models stay current
        key.append(victim)
    payload = json.dumps(key, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def prepare(
    target: str,
    source: str,
    data_dir: Path,
    workdir: Path,
    victim: str,
    config: Any,
    train: TrainConfig,
    *,
    scenario_config: ScenarioConfig | None = None,
    baselines: bool = False,
) -> Prepared:
    """``workdir/scenario`` and ``workdir/model.pt`` of the pair, reusing what is current."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    scenario_dir = workdir / SCENARIO_DIR
    pair = load_pair(target, source, data_dir, fetch_missing=True)
    scenario = build_scenario(*pair, scenario_config or ScenarioConfig())
    scenario_reused = not save_scenario(scenario, scenario_dir, unless_current=True)
    fingerprint = scenario.fingerprint
    artifact = workdir / MODEL_FILE
    key = training_key(fingerprint, victim, config, train)
    model_reused = _current_training_key(artifact) == key
    metrics = None
    if not model_reused:
        metrics = train_artifact(
            scenario, victim, config, train, artifact, baselines=baselines, training_key=key
        )
    return Prepared(
        scenario_dir=scenario_dir,
        artifact=artifact,
        fingerprint=fingerprint,
        scenario_reused=scenario_reused,
        model_reused=model_reused,
        metrics=metrics,
        seconds=round(time.perf_counter() - started, 1),
    )


def _current_training_key(artifact: Path) -> str | None:
    try:
        return ModelArtifact.load(artifact).training_key
    except ArtifactError:  # missing, torn, or of another format version: retrain
        return None
