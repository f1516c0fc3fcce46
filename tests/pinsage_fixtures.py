"""Tiny PinSage models and data for tests: small enough to train in seconds."""

from __future__ import annotations

from pathlib import Path

from recsys_server.data import TargetData
from shared.datasets.pair import load_pair
from shared.scenario import Scenario, ScenarioConfig, build_scenario


def tiny_scenario(seed: int = 0) -> Scenario:
    return build_scenario(*load_pair("synthetic:tiny", "synthetic:tiny", Path(".")),
                          ScenarioConfig(seed=seed))  # fmt: skip


def tiny_data(seed: int = 0) -> TargetData:
    return TargetData.from_scenario(tiny_scenario(seed))
