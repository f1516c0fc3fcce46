"""Attackability probe: how far do copied profiles move a trained victim, and how much
room is there for choosing which profiles to copy?

Server side, no HTTP: for each model (PinSage ``--variants`` trained or loaded from the
cache, or any victim's ``--artifact`` files), for each cold target of a seeded draw
(``--targets``, ``--target-seed``), inject the profiles of each method through the
incremental refresh into a fork of the clean state and measure after each of
``--budgets`` injections (the first b profiles of one attack are its attack at budget b).
Methods:

- WithoutAttack;
- RandomAttack: random source profiles;
- TargetAttack100 / TargetAttack40: random source profiles holding the target, whole /
  cropped to 40% around it;
- InDomainControl: the target plus the training profile of a real target user;
- SelectionOracle (the popularity oracle): the source profiles holding the target whose
  items are the most popular in the target's training data;
- GreedyOracle (``--methods ... GreedyOracle``): an upper bound in practice, with
  server-side access: one profile at a time, the candidate holder (whole or cropped to
  40%; ``--greedy-holders`` of them, seeded) whose injection most raises the target's
  HR@20 over half of the evaluation users (sampled, or with ``--greedy-protocol full``
  the full ranking: for a victim that saturates the sampled metric). With it, every
  method is reported on the other half, and ``room`` = GreedyOracle HR@20 /
  TargetAttack100 HR@20 per budget, under the protocol the oracle chose on.
- ObservedGreedyOracle: the same greedy choice made on what a black-box attacker can
  observe instead: the target's rank reward ((k - position) / k) in its pretend users'
  top-k (``--observed-k``, 1000 by default: a server serving ``--max-k 1000``). Its
  HR@20 / TargetAttack100's is ``observed_room``: the room a learner of that reward could
  take at best.
- RetrainGreedyOracle: the greedy choice made under the second threat model: each trial
  injection is judged after the fine-tune a scheduled retrain runs (``--retrain-epochs``
  on the polluted graph), so it costs budget x candidates fine-tunes a target and needs
  ``--retrain-targets`` to cover ``--targets``. Its retrained HR@20 / TargetAttack100's
  is ``retrain_aware_room``: the room under retraining, where GreedyOracle's frozen
  choice fine-tuned in (``retrained_room``) is a lower bound. For MF, which no injection
  moves frozen, it is the only greedy oracle that can choose.

Reported per method and budget: HR@20 of the target over evaluation users who never had
it (sampled-100 and full ranking), the target's median full rank, and pretend users with
the target in their top-20 / top-100. ``--retrain-targets N`` adds the second threat model
(a fine-tune on the polluted graph after the largest budget, then the same measures) for
the first N targets. There the greedy oracle's profiles are the ones it chose on the
frozen model, fine-tuned in like every method's, and ``retrained_room`` = their HR@20 /
TargetAttack100's after the fine-tune: a lower bound of the room under retraining (an
oracle choosing under a fine-tune per candidate and step would cost budget x candidates
fine-tunes a target: 600 at budget 30 with 10 holders, whole and cropped). A progress
line on a terminal; one JSON line per model on stdout, the last line all of them.
``--out FILE`` keeps each target's measures as it finishes and resumes from them: every
target draws from its own seeded stream, so a resumed or extended run gives the numbers
of an uninterrupted one. ``--shard I/N`` runs only every N-th target from the I-th
(1-based), so N processes share a long probe (say, one per core, all with the same
``--out``: appends are locked); each prints nothing on stdout, and one more run without
``--shard`` reports from the records; its ``target_seconds`` is what the targets took
where they ran (``seconds`` is the report's own time).

    python benchmarks/attackability_probe.py --scenario DIR [--variants ...] [--targets 50]
    python benchmarks/attackability_probe.py --scenario DIR --artifact A.pt [B.pt ...] \\
        --methods WithoutAttack RandomAttack TargetAttack100 TargetAttack40 InDomainControl \\
        SelectionOracle GreedyOracle --budgets 10 30
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.prepare import training_key
from recsys_server.training import TrainConfig, progress_bar
from recsys_server.victims.base import ServingState, Victim
from recsys_server.victims.pinsage import PinSageVictim
from shared.metrics import N_SAMPLED, ranks_of, sample_negatives
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
    "GreedyOracle",
    "ObservedGreedyOracle",
    "RetrainGreedyOracle",
)
# a trial injection per candidate each
GREEDY = ("GreedyOracle", "ObservedGreedyOracle", "RetrainGreedyOracle")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in GREEDY)
N_PRETEND = 50
GREEDY_CROP = 0.4  # the greedy oracle's candidates: each holder whole and cropped to this


# a greedy oracle's measure of a trial state: larger is better, compared as a tuple
Criterion = Callable[[ServingState], tuple[float, float]]


@dataclass(frozen=True)
class TargetCases:
    """One target's evaluation users who never had it, with their sampled negatives: the
    users every method is reported on, and (with the greedy oracle) a disjoint set the
    oracle chooses on, so that its choice is never judged on the users it was made on."""

    users: np.ndarray
    negatives: np.ndarray
    select_users: np.ndarray
    select_negatives: np.ndarray


@dataclass
class Probe:
    scenario: Scenario
    data: TargetData
    budget: int
    rng: np.random.Generator
    greedy_holders: int = 20
    observed_k: int = 1000
    greedy_protocol: str = "sampled"
    retrain_epochs: int = 3

    def __post_init__(self) -> None:
        n = len(self.scenario.source_indptr) - 1
        self.profiles = [self.scenario.source_profile(i) for i in range(n)]
        self.popularity = np.bincount(self.data.train[:, 1], minlength=self.data.n_items)
        self.graph = InteractionGraph(self.data.train, self.data.n_users, self.data.n_items)
        pool = self.scenario.pretend_pool
        self.pretend = np.sort(np.random.default_rng(0).choice(pool, N_PRETEND, replace=False))
        lengths = self.graph.profile_length(np.arange(self.data.n_users))
        self.established = np.flatnonzero(lengths >= 3)
        self._holding: dict[int, list[int]] = {}

    def cases(self, target: int, split: bool) -> TargetCases:
        """With ``split``, a seeded half of the users for choosing and the other half for
        reporting; otherwise every user is reported on (the probe's tables before the
        greedy oracle)."""
        holders = self.data.known[:, target].nonzero()[0]
        users = np.setdiff1d(self.scenario.eval_users, holders)
        negatives = sample_negatives(users, self.data.known, N_SAMPLED, seed=1)
        if not split:
            empty = np.empty(0, dtype=np.int64)
            return TargetCases(users, negatives, empty, np.empty((0, N_SAMPLED), np.int64))
        chosen = np.zeros(len(users), dtype=bool)
        order = np.random.default_rng([target, 2]).permutation(len(users))
        chosen[order[: len(users) // 2]] = True
        return TargetCases(users[~chosen], negatives[~chosen], users[chosen], negatives[chosen])

    def _sample(self, candidates: list[int]) -> list[int]:
        replace = len(candidates) < self.budget
        return [int(i) for i in self.rng.choice(candidates, self.budget, replace=replace)]

    def holding(self, target: int) -> list[int]:
        """The source profiles holding ``target``: scanned once per target, not once per
        method."""
        if target not in self._holding:
            self._holding[target] = [i for i, p in enumerate(self.profiles) if target in p]
        return self._holding[target]

    def injections(
        self, method: str, target: int, state: ServingState, cases: TargetCases
    ) -> list[np.ndarray]:
        """The ``budget`` profiles ``method`` injects for ``target``, in order (the first
        b of them are its attack at budget b)."""
        holding = self.holding(target)
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
        if method == "GreedyOracle":
            return self.greedy(state, target, holding, self._hr_on(cases, target))
        if method == "ObservedGreedyOracle":
            return self.greedy(state, target, holding, self._observed_reward(target))
        if method == "RetrainGreedyOracle":
            return self.greedy(state, target, holding, self._after_retrain(cases, target))
        raise ValueError(method)

    def _target_ranks(
        self,
        trial: ServingState,
        users: np.ndarray,
        target: int,
        protocol: str,
        negatives: np.ndarray | None = None,
    ) -> np.ndarray:
        """The target's 0-based rank for each of ``users`` in ``trial``, under one protocol."""
        return ranks_of(
            trial.scores,
            users,
            np.full(len(users), target),
            self.data.known,
            protocols=(protocol,),
            negatives=negatives,
            pair_score=trial.scores_of,
        )[protocol]

    def _hr_on(self, cases: TargetCases, target: int) -> Criterion:
        """The target's HR@20 over the choosing users under ``greedy_protocol`` (ties:
        lower mean rank)."""
        protocol = self.greedy_protocol
        negatives = cases.select_negatives if protocol == "sampled" else None

        def criterion(trial: ServingState) -> tuple[float, float]:
            ranks = self._target_ranks(trial, cases.select_users, target, protocol, negatives)
            return float((ranks < 20).mean()), -float(ranks.mean())

        return criterion

    def _after_retrain(self, cases: TargetCases, target: int) -> Criterion:
        """``_hr_on`` of the state a scheduled retrain makes of the trial."""
        hr = self._hr_on(cases, target)

        def criterion(trial: ServingState) -> tuple[float, float]:
            return hr(trial.retrained(self.data, self.retrain_epochs))

        return criterion

    def _observed_reward(self, target: int) -> Criterion:
        """What the attacker's queries show: the rank reward of the target in the pretend
        users' top-``observed_k`` (ties: lower mean full rank)."""
        k = self.observed_k

        def criterion(trial: ServingState) -> tuple[float, float]:
            ranks = self._target_ranks(trial, self.pretend, target, "full")
            return float(np.clip((k - ranks) / k, 0.0, 1.0).mean()), -float(ranks.mean())

        return criterion

    def greedy(
        self, state: ServingState, target: int, holding: list[int], criterion: Criterion
    ) -> list[np.ndarray]:
        """Server-side upper bound in practice: one profile at a time, the candidate (a
        holder, whole or cropped around the target; up to ``greedy_holders`` holders,
        drawn by the seed) whose injection most raises ``criterion`` (ties: the earlier
        candidate). A holder may be chosen again, as TargetAttack copies holders with
        replacement."""
        drawn = self.rng.choice(holding, min(len(holding), self.greedy_holders), replace=False)
        candidates: list[np.ndarray] = []
        for i in drawn.tolist():
            for profile in (
                self.profiles[i],
                crop_around_target(self.profiles[i], target, GREEDY_CROP),
            ):
                if not any(np.array_equal(profile, c) for c in candidates):
                    candidates.append(profile)
        current, chosen = state.fork(), []
        for _ in range(self.budget):
            best_key, best = None, candidates[0]
            for profile in candidates:
                # a fork per trial, not add-then-remove: the trial user gets the id the
                # chosen one will get, and PinSage's walks depend on user ids
                trial = current.fork()
                trial.add_user(profile)
                key = criterion(trial)
                if best_key is None or key > best_key:
                    best_key, best = key, profile
            current.add_user(best)
            chosen.append(best)
        return chosen

    def measure(self, state: ServingState, target: int, cases: TargetCases) -> dict:
        items = np.full(len(cases.users), target)
        ranks = ranks_of(
            state.scores, cases.users, items, self.data.known, negatives=cases.negatives
        )
        pretend_ranks = np.array([_position(state.topk(int(u), 100), target) for u in self.pretend])
        return {
            "hr20_sampled": float((ranks["sampled"] < 20).mean()),
            "hr20_full": float((ranks["full"] < 20).mean()),
            "median_full_rank": float(np.median(ranks["full"])),
            "pretend_top20": int((pretend_ranks < 20).sum()),
            "pretend_top100": int((pretend_ranks < 100).sum()),
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


class ProbeRecordsError(Exception):
    """An ``--out`` file that cannot be resumed: written with other settings, or not a
    probe's records."""


class ProbeRecords:
    """One probe's per-target results (``--out``), a JSON line each, appended and synced
    as each target finishes, so that a probe stopped after hours resumes where it stopped.
    The first line holds the settings the numbers depend on; a file written with other
    settings is refused, not mixed in. A last line cut short by a crash is dropped.
    Shards of one probe share the file: reading it and each append hold an exclusive lock
    (``flock``), so no process reads another's line half-written, or cuts it."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        self.records: list[dict] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            self._load(handle, settings)

    def _load(self, handle: BinaryIO, settings: dict) -> None:
        path = self.path
        handle.seek(0)
        raw = handle.read()
        if not raw:
            self._append(handle, {"probe": settings})
            return
        lines = raw.split(b"\n")
        complete = lines[:-1]  # a line is written whole only with its newline
        try:
            header = json.loads(complete[0])["probe"]
            self.records = [json.loads(line) for line in complete[1:]]
        except (IndexError, KeyError, TypeError, ValueError) as error:
            raise ProbeRecordsError(f"{path} is not a probe's --out records ({error})") from None
        if header != settings:
            changed = sorted(k for k in settings.keys() | header.keys()
                             if settings.get(k) != header.get(k))  # fmt: skip
            raise ProbeRecordsError(
                f"{path} was written with other settings ({', '.join(changed)}: "
                f"{[header.get(k) for k in changed]} there, {[settings.get(k) for k in changed]} "
                "now); resume with the same settings or write to another --out"
            )
        if lines[-1]:  # drop the torn last line before appending
            handle.truncate(len(raw) - len(lines[-1]))

    def of(self, weights: str) -> dict[int, dict]:
        """The latest record per target of the model with these weights."""
        return {r["target"]: r for r in self.records if r["weights"] == weights}

    def append(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._append(handle, record)

    @staticmethod
    def _append(handle: BinaryIO, line: dict) -> None:
        handle.write(json.dumps(line).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def shard_of(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), 1 <= I <= N."""
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (for instance 1/2)") from None
    if not 1 <= shard <= shards:
        raise argparse.ArgumentTypeError(f"{text!r}: I/N needs 1 <= I <= N")
    return shard, shards


def _complete(record: dict | None, needs_retrain: bool) -> bool:
    return record is not None and (not needs_retrain or "retrained" in record)


def run_variant(
    args: argparse.Namespace,
    scenario: Scenario,
    data: TargetData,
    name: str,
    model: Victim,
    metrics: dict,
    records: ProbeRecords | None = None,
) -> dict | None:
    """The model's summary over every target; None for a shard (``--shard``), which
    only adds its targets' records."""
    budgets = sorted(set(args.budgets))
    probe = Probe(
        scenario,
        data,
        budgets[-1],
        np.random.default_rng(args.seed),
        args.greedy_holders,
        args.observed_k,
        args.greedy_protocol,
        args.retrain_epochs,
    )
    state = model.serving_state(data, probe.graph)
    targets = draw_targets(scenario.cold_targets, args.targets, args.target_seed)
    split = bool(set(GREEDY) & set(args.methods))
    weights = model.fingerprint()
    kept = records.of(weights) if records else {}
    shard, shards = args.shard
    pending = [
        (position, target)
        for position, target in enumerate(targets)
        if position % shards == shard - 1
        and not _complete(kept.get(target), position < args.retrain_targets)
    ]
    bar = progress_bar(len(pending) * len(args.methods), name, "cell", enabled=sys.stderr.isatty())
    with bar:
        for position, target in pending:
            # one stream per target: a target's draws do not depend on which targets ran
            # before it, so a resumed run gives the numbers of an uninterrupted one
            probe.rng = np.random.default_rng([args.seed, target])
            started = time.perf_counter()
            cases = probe.cases(target, split)
            record: dict = {"model": name, "weights": weights, "target": target, "frozen": {}}
            for method in args.methods:
                profiles = probe.injections(method, target, state, cases)
                attacked, injected = state.fork(), 0
                for budget in budgets:
                    # the first ``budget`` profiles are the attack at that budget
                    for profile in profiles[injected:budget]:
                        attacked.add_user(profile)
                    injected = budget
                    measures = probe.measure(attacked, target, cases)
                    record["frozen"].setdefault(str(budget), {})[method] = measures
                if position < args.retrain_targets:
                    polluted = attacked.retrained(data, args.retrain_epochs)
                    record.setdefault("retrained", {})[method] = probe.measure(
                        polluted, target, cases
                    )
                bar.update()
            record["seconds"] = round(time.perf_counter() - started, 1)
            kept[target] = record
            if records:
                records.append(record)
    if shards > 1:  # the other shards' targets are theirs to run
        return None
    frozen = {
        str(b): {m: [kept[t]["frozen"][str(b)][m] for t in targets] for m in args.methods}
        for b in budgets
    }
    retrained = {
        m: [kept[t]["retrained"][m] for t in targets[: args.retrain_targets]] for m in args.methods
    }
    result: dict = {
        "variant": name,
        "victim": model.name,
        "quality": metrics,
        "split_users": split,
        "frozen": {
            b: {m: summarise(rows) for m, rows in by_method.items()}
            for b, by_method in frozen.items()
        },
        "per_target_hr20_sampled": {
            b: {m: [r["hr20_sampled"] for r in rows] for m, rows in by_method.items()}
            for b, by_method in frozen.items()
        },
    }
    if args.retrain_targets:
        result["retrained"] = {m: summarise(r) for m, r in retrained.items()}
        result["retrain_targets"] = len(next(iter(retrained.values())))
        result["per_target_retrained_hr20_sampled"] = {
            m: [r["hr20_sampled"] for r in rows] for m, rows in retrained.items()
        }
        for oracle, key in (
            ("GreedyOracle", "retrained_room"),
            ("RetrainGreedyOracle", "retrain_aware_room"),
        ):
            if {oracle, "TargetAttack100"} <= result["retrained"].keys():
                result[key] = room(result["retrained"], oracle, args.greedy_protocol)
    if {"GreedyOracle", "RetrainGreedyOracle"} & set(args.methods):
        result["room_protocol"] = args.greedy_protocol
    # what the targets cost wherever they ran (shards, earlier runs); records written
    # before targets were timed leave it out
    if all("seconds" in kept[t] for t in targets):
        result["target_seconds"] = round(sum(kept[t]["seconds"] for t in targets), 1)
    for budget in budgets:
        table = result["frozen"][str(budget)]
        base = table["WithoutAttack"]["hr20_sampled"] if "WithoutAttack" in table else 0.0
        result.setdefault("lift_sampled_hr20", {})[str(budget)] = {
            m: row["hr20_sampled"] / base if base else float("inf") for m, row in table.items()
        }
        # room for selection: a greedy oracle's HR@20 over random holders', under the
        # protocol it chose on
        for oracle, key, protocol in (
            ("GreedyOracle", "room", args.greedy_protocol),
            ("ObservedGreedyOracle", "observed_room", "sampled"),
        ):
            if {oracle, "TargetAttack100"} <= table.keys():
                result.setdefault(key, {})[str(budget)] = room(table, oracle, protocol)
    return result


def room(table: dict[str, dict], oracle: str, protocol: str) -> float | None:
    """``oracle``'s HR@20 over TargetAttack100's in ``table`` (method -> measures) under
    ``protocol``; undefined (None) where random holders never reach the top-20."""
    hr20 = f"hr20_{protocol}"
    base = table["TargetAttack100"][hr20]
    return table[oracle][hr20] / base if base else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument(
        "--target-seed", type=int, default=0, help="seed of the targets' draw and order"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHODS,
        help="a greedy oracle splits each target's users: half to choose on, half reported",
    )
    parser.add_argument(
        "--budgets", nargs="+", type=int, default=[30],
        help="measure after this many injections (one attack, measured along the way)")  # fmt: skip
    parser.add_argument(
        "--greedy-holders",
        type=int,
        default=Probe.greedy_holders,
        help="the greedy oracle's candidates: this many holders (seeded), whole and cropped",
    )
    parser.add_argument(
        "--greedy-protocol",
        choices=("sampled", "full"),
        default=Probe.greedy_protocol,
        help="the HR@20 GreedyOracle chooses on, and its room is measured in",
    )
    parser.add_argument(
        "--observed-k",
        type=int,
        default=Probe.observed_k,
        help="ObservedGreedyOracle's top-k of the pretend users (the attacker's query)",
    )
    parser.add_argument("--retrain-targets", type=int, default=0)
    parser.add_argument("--retrain-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("artifacts/probe"))
    parser.add_argument(
        "--artifact", type=Path, nargs="+", help="probe these trained models (any victim, "
        "e.g. prepare's model.pt) instead of training PinSage --variants")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="per-target records (JSON lines), appended as each target "
        "finishes; an existing file of the same settings is resumed (more --targets or "
        "--retrain-targets extend it)")  # fmt: skip
    parser.add_argument(
        "--shard", type=shard_of, default=(1, 1), metavar="I/N", help="run only every N-th "
        "target from the I-th (needs --out; a run without --shard reports)")  # fmt: skip
    args = parser.parse_args()
    if min(args.budgets) < 1:
        parser.error("--budgets must be at least 1")
    if args.shard[1] > 1 and not args.out:
        parser.error("--shard needs --out: a shard's numbers live only in its records")
    if "RetrainGreedyOracle" in args.methods and args.retrain_targets < args.targets:
        parser.error("RetrainGreedyOracle chooses under the retrain: --retrain-targets must "
                     f"cover --targets ({args.retrain_targets} < {args.targets})")  # fmt: skip
    torch.manual_seed(args.seed)
    scenario = load_scenario(args.scenario)
    data = TargetData.from_scenario(scenario)
    if args.artifact:
        models = {}
        for path in args.artifact:
            artifact = ModelArtifact.load(path, scenario.fingerprint)
            models[f"{artifact.victim.label} ({path})"] = (artifact.victim, artifact.metrics)
    else:
        models = {n: trained_model(data, n, VARIANTS[n], args.cache) for n in args.variants}
    records = None
    if args.out:
        # what a target's numbers depend on; not --targets, --target-seed or
        # --retrain-targets (which targets run), so a run can be extended
        settings = {"scenario": scenario.fingerprint, "methods": args.methods,
                    "budgets": sorted(set(args.budgets)), "seed": args.seed,
                    "greedy_holders": args.greedy_holders,
                    "greedy_protocol": args.greedy_protocol, "observed_k": args.observed_k,
                    "retrain_epochs": args.retrain_epochs}  # fmt: skip
        try:
            records = ProbeRecords(args.out, settings)
        except ProbeRecordsError as error:
            parser.error(str(error))
    results = []
    for name, (model, metrics) in models.items():
        started = time.perf_counter()
        result = run_variant(args, scenario, data, name, model, metrics, records)
        if result is None:
            print(f"{name}: shard {args.shard[0]}/{args.shard[1]} recorded in {args.out}",
                  file=sys.stderr)  # fmt: skip
            continue
        result["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.shard[1] > 1:
        return
    print(json.dumps({"scenario": scenario.fingerprint, "targets": args.targets,
                      "budgets": sorted(set(args.budgets)), "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
