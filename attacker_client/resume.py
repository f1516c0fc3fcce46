"""Resuming a run: what its finished cells' numbers depend on (the run's key, kept in
``run.json`` beside ``cells.jsonl``), and the refusal to mix cells of another key in."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from attacker_client.pretrain import PretrainedPolicy
from attacker_client.results import recorded_config
from shared.atomic import write_text_atomic
from shared.datasets.registry import sha256_file
from shared.errors import CopyAttackError
from shared.schemas import ModelInfo

if TYPE_CHECKING:
    from attacker_client.harness import ExperimentConfig


def run_key(
    config: ExperimentConfig, model: ModelInfo, policies: dict[str, PretrainedPolicy]
) -> dict[str, Any]:
    """What a finished cell's numbers depend on, besides its (method, target, seed): a
    resumed run may add methods, targets or seeds, but must not mix other settings in."""
    settings = recorded_config(config)
    # where things are and how fast they run do not change a cell's numbers
    free = (
        "server",
        "scenario",
        "out",
        "methods",
        "targets",
        "decile",
        "seeds",
        "concurrency",
        "policies",
        "target_seed",
        "ready_timeout",
        "progress",
    )
    for name in free:
        settings.pop(name)
    # runs recorded before detection and defences existed resume
    if not settings["detectors"]:
        settings.pop("detectors")
    if settings["defence"] == "none":
        settings.pop("defence")
    # an attack option left unset is the behaviour from before the option existed, so a
    # run recorded by an earlier version (without the field) resumes
    settings["attack"] = {k: v for k, v in settings["attack"].items() if v is not None}
    return {
        **settings,
        "scenario": model.scenario_fingerprint,
        "model": model.model_fingerprint,
        # a policy by its content, wherever its file lies
        **{f"{kind}_policy": sha256_file(p.path) for kind, p in policies.items()},
    }


def claim_run(
    config: ExperimentConfig,
    model: ModelInfo,
    policies: dict[str, PretrainedPolicy],
    *,
    has_cells: bool,
) -> None:
    """Record the run's key in ``run.json``; refuse to resume cells of another key."""
    path = config.out / "run.json"
    key = run_key(config, model, policies)
    if has_cells and not path.is_file():
        raise CopyAttackError(
            f"{config.out} holds cells of a run that recorded no run.json (an older version): "
            "their settings and model cannot be checked; choose another --out"
        )
    if has_cells:
        earlier = json.loads(path.read_text())
        # a policy new to the run serves only methods its earlier cells could not have run
        changed = sorted(
            name
            for name in key.keys() | earlier.keys()
            if key.get(name) != earlier.get(name)
            and not (name.endswith("_policy") and name not in earlier)
        )
        if changed:
            details = ", ".join(f"{n}: {earlier.get(n)!r} -> {key.get(n)!r}" for n in changed)
            raise CopyAttackError(
                f"{config.out} holds cells of another run ({details}); resume with the same "
                "settings and model, or choose another --out"
            )
    write_text_atomic(path, json.dumps(key, indent=1))
