"""The typed results of an experiment and the files they live in.

A cell is one method on one target item with one seed (:class:`CellResult`); a run's
summary (:class:`Summary`) has one row per method (:class:`MethodSummary`) and the paired
tests of the learners (:class:`PairedTest`). ``cells.jsonl`` holds one cell a line,
appended as cells finish; ``table2.json`` the summary with its cells.

The models read what every earlier version wrote: a field added later has a default, and
a model is written back as it was read (a field that was never set is left out), so a
file that is read and written again is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ValidationError

from shared.atomic import write_text_atomic
from shared.errors import CopyAttackError
from shared.schemas import (
    ALL_USERS,
    HR_20,
    NDCG_20,
    Cohort,
    DetectorName,
    Metrics,
    Protocol,
)

if TYPE_CHECKING:
    from attacker_client.harness import ExperimentConfig

# cohort -> protocol -> metric name -> value: one evaluation of a world (or the clean model)
Measured = dict[Cohort, dict[Protocol, Metrics]]
CellKey = tuple[str, int, int]  # (method, target, seed)


class MetricKey(NamedTuple):
    """One number of an evaluation: its cohort, protocol and metric name."""

    cohort: Cohort
    protocol: Protocol
    name: str

    @property
    def key(self) -> str:
        """How a summary names it: ``all/sampled/HR@20``."""
        return "/".join(self)

    def of(self, measured: Measured) -> float:
        return measured[self.cohort][self.protocol][self.name]


def sampled(name: str) -> MetricKey:
    """``name`` over every evaluation user, sampled protocol (the budget curve's)."""
    return MetricKey(ALL_USERS, "sampled", name)


HEADLINE = sampled(HR_20)  # the paper's headline number
CURVE_METRICS = (HR_20, NDCG_20)  # what the budget curve and the sweeps show


class _Record(BaseModel):
    def dump(self) -> dict[str, Any]:
        """As written to the files: the fields that were set (by the code or the file)."""
        return self.model_dump(exclude_unset=True)


class CellResult(_Record):
    """One method on one target with one seed, in a world of its own."""

    method: str
    target: int
    seed: int
    after: Measured  # the world after the spend (after the retrain, under "retrain")
    before: Measured  # the clean model, on the same users and sampled negatives
    n_users: dict[Cohort, int]  # evaluation users of each cohort
    # budget -> the world after that many profiles (sampled protocol; both at the budget).
    # Absent from cells that were trimmed before being committed under docs/results.
    checkpoints: dict[int, Measured] = {}
    profiles: int
    items_per_profile: float
    queries: int
    injections: int
    injected_items: int
    seconds: float
    info: dict[str, Any]  # what the attack reported (training rounds, reward, policy cost)
    # per detector its report on the world (without the per-user scores), when asked for
    detection: dict[DetectorName, dict[str, Any]] | None = None
    quarantined: int | None = None  # profiles the world's defence kept out, if defended

    @property
    def key(self) -> CellKey:
        return self.method, self.target, self.seed


class Interval(_Record):
    mean: float
    ci95: float  # half-width of the 95% Student t interval of the mean


class MethodSummary(_Record):
    """A method's row: means over its cells."""

    cells: int
    targets: int | None = None  # None: written before targets were counted
    metrics: dict[str, Interval]  # MetricKey.key -> mean and interval
    items_per_profile: float
    queries: float
    injections: float
    seconds: float
    reward_density: float | None
    # a pretrained policy's training cost, shared by the table's targets
    amortised_queries: float = 0.0
    amortised_injections: float = 0.0
    budget_curve: dict[int, Metrics]  # budget -> CURVE_METRICS name -> mean
    # budget -> CURVE_METRICS name -> half-width of the 95% t interval; unset when there
    # is no curve, and in summaries written before the figures showed intervals
    budget_curve_ci95: dict[int, Metrics] = {}

    @property
    def target_count(self) -> int:
        return self.cells if self.targets is None else self.targets

    def interval(self, metric: MetricKey) -> Interval:
        return self.metrics[metric.key]


class PairedTest(_Record):
    """A learner against the best method that is not a learner, paired by (target, seed)."""

    learner: str
    metric: str  # MetricKey.key
    budget: int | None = None  # a checkpoint of the budget curve; None: after the spend
    best_other: str
    pairs: int
    mean_difference: float
    copyattack_wins: int  # pairs where the learner is ahead
    ties: int
    # the learner's gain over WithoutAttack as a multiple of the best other's (None: the
    # other gained nothing); unset when WithoutAttack is not known on every pair
    gain_ratio: float | None = None
    wilcoxon_p: float | None = None  # unset when fewer than 2 pairs or no difference
    paired_t_p: float | None = None


class Summary(_Record):
    """A Table 2 run: its rows, its paired tests and its settings."""

    methods: dict[str, MethodSummary]
    paired_tests: list[PairedTest]
    config: dict[str, Any]  # the ExperimentConfig, without the admin token
    wall_seconds_this_run: float | None = None
    machine: str | None = None  # where the attacker ran
    pair: str | None = None  # "source → target" platform of the scenario
    victim: str | None = None  # the served recommender's family


class SweepPoint(_Record):
    """A method at one value of a swept setting (tree depth, popularity decile)."""

    value: int
    method: str
    metrics: dict[str, Interval]  # CURVE_METRICS name -> sampled, over all evaluation users


class Snapshot(_Record):
    """A snapshot of a pretrained policy, spent as it is on the evaluated targets."""

    update: int  # policy updates before the snapshot
    training_queries: int  # target queries spent training it so far
    training_injections: int
    hit_rate: Interval  # the HEADLINE metric


class Table2File(Summary):
    """``table2.json``: the summary and every cell it was computed from."""

    cells: list[CellResult]


def recorded_config(config: ExperimentConfig) -> dict[str, Any]:
    """The settings as a summary records them: JSON values, without the admin token."""
    out = dataclasses.asdict(config)
    out.pop("admin_token")
    return json.loads(json.dumps(out, default=str))


def read_cells(path: Path) -> list[CellResult]:
    """Finished cells of an earlier run (a torn last line, from a kill, is dropped)."""
    if not path.is_file():
        return []
    cells = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            cells.append(CellResult.model_validate(record))
        except ValidationError as error:
            raise CopyAttackError(f"{path}, line {number}: not a cell: {error}") from None
    return cells


def cell_line(cell: CellResult) -> str:
    """A cell as one line of ``cells.jsonl``."""
    return json.dumps(cell.dump()) + "\n"


def read_table2(path: Path) -> Table2File:
    """A ``table2.json`` of this version or an earlier one."""
    try:
        return Table2File.model_validate(json.loads(path.read_text()))
    except ValidationError as error:
        raise CopyAttackError(f"{path} is not a table2.json: {error}") from None


def write_table2(path: Path, summary: Summary, cells: list[CellResult]) -> None:
    """The summary and its cells, whole or not at all."""
    content = {**summary.dump(), "cells": [cell.dump() for cell in cells]}
    write_text_atomic(path, json.dumps(content, indent=1))
