"""The attackability probe's greedy oracle (benchmarks/attackability_probe.py): it chooses
on users disjoint from the ones it is reported on, each choice is the best candidate on
them, and the probe reports the room for selection at each budget."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys_server.artifact import ModelArtifact
from shared.metrics import ranks_of
from tests.pinsage_fixtures import tiny_data, tiny_scenario

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "attackability_probe.py"


def probe_module():
    spec = importlib.util.spec_from_file_location("attackability_probe", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


@dataclass
class OneStep:
    """A one-profile greedy choice on the tiny model: every holder is a candidate, so the
    choice must be the best of them all (whole or cropped)."""

    probe: Any
    state: Any
    target: int
    cases: Any
    candidates: list[np.ndarray]

    def key(
        self, profile: np.ndarray, protocol: str = "sampled", retrain_epochs: int = 0
    ) -> tuple[float, float]:
        """The oracle's criterion, recomputed here: HR@20 over the choosing users (ties:
        lower mean rank) after injecting ``profile`` (and, with ``retrain_epochs``, the
        fine-tune)."""
        trial = self.state.fork()
        trial.add_user(profile)
        if retrain_epochs:
            trial = trial.retrained(self.probe.data, retrain_epochs)
        users, known = self.cases.select_users, self.probe.data.known
        negatives = self.cases.select_negatives if protocol == "sampled" else None
        by_protocol = ranks_of(trial.scores, users, np.full(len(users), self.target), known,
                               protocols=(protocol,), negatives=negatives)  # fmt: skip
        ranks = by_protocol[protocol]
        return float((ranks < 20).mean()), -float(ranks.mean())


def one_step(artifact: Path, **options: Any) -> OneStep:
    module = probe_module()
    scenario, data = tiny_scenario(), tiny_data()
    victim = ModelArtifact.load(artifact).victim
    probe = module.Probe(
        scenario, data, 1, np.random.default_rng(0), greedy_holders=10**6, **options
    )
    target = int(next(t for t in scenario.cold_targets if len(probe.holding(int(t))) >= 2))
    holders = [scenario.source_profile(i) for i in probe.holding(target)]
    crops = [module.crop_around_target(p, target, module.GREEDY_CROP) for p in holders]
    state = victim.serving_state(data, probe.graph)
    return OneStep(probe, state, target, probe.cases(target, split=True), holders + crops)


def test_greedy_oracle_chooses_the_best_candidate_on_users_it_is_not_reported_on(
    artifact: Path,
) -> None:
    step = one_step(artifact)
    probe, state, target, cases = step.probe, step.state, step.target, step.cases
    assert len(cases.select_users) and len(cases.users)
    assert not set(cases.select_users) & set(cases.users)
    again = probe.cases(target, split=True)
    assert np.array_equal(again.select_users, cases.select_users)  # seeded
    [chosen] = probe.injections("GreedyOracle", target, state, cases)
    assert target in chosen
    assert step.key(chosen) == max(step.key(p) for p in step.candidates)

    # on the full ranking instead (a victim that saturates the sampled HR@20)
    probe.greedy_protocol = "full"
    [on_full] = probe.injections("GreedyOracle", target, state, cases)

    assert step.key(on_full, "full") == max(step.key(p, "full") for p in step.candidates)

    # the observed oracle chooses on the pretend users' top-k instead: what an attacker's
    # queries show
    [observed] = probe.injections("ObservedGreedyOracle", target, state, cases)

    def reward(profile: np.ndarray) -> float:
        trial = state.fork()
        trial.add_user(profile)
        reward = 0.0
        for user in probe.pretend:
            top = trial.topk(int(user), probe.observed_k).tolist()
            if target in top:
                reward += (probe.observed_k - top.index(target)) / probe.observed_k
        return reward / len(probe.pretend)

    assert reward(observed) == pytest.approx(max(reward(p) for p in step.candidates))


def test_retrain_aware_greedy_oracle_chooses_the_best_candidate_after_the_retrain(
    artifact: Path,
) -> None:
    step = one_step(artifact, retrain_epochs=1)
    [chosen] = step.probe.injections("RetrainGreedyOracle", step.target, step.state, step.cases)
    assert any(np.array_equal(chosen, p) for p in step.candidates)
    best = max(step.key(p, retrain_epochs=1) for p in step.candidates)
    assert step.key(chosen, retrain_epochs=1) == best


def test_retrain_aware_room_is_its_retrained_hr_over_random_holders(
    artifact: Path, scenario_dir: Path
) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--scenario", str(scenario_dir), "--artifact",
         str(artifact), "--targets", "1", "--budgets", "1", "2", "--greedy-holders", "2",
         "--methods", "WithoutAttack", "TargetAttack100", "GreedyOracle",
         "RetrainGreedyOracle", "--retrain-targets", "1", "--retrain-epochs", "1"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    [result] = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    retrained = result["retrained"]
    base = retrained["TargetAttack100"]["hr20_sampled"]
    for oracle, room in (("GreedyOracle", "retrained_room"),
                         ("RetrainGreedyOracle", "retrain_aware_room")):  # fmt: skip
        ratio = retrained[oracle]["hr20_sampled"] / base if base else None
        assert result[room] == pytest.approx(ratio)
    # the retrained measures per target, as the frozen ones: their mean is the summary's
    per_target = result["per_target_retrained_hr20_sampled"]
    assert set(per_target) == set(retrained)
    for method, hr20 in per_target.items():
        assert len(hr20) == 1 and np.mean(hr20) == pytest.approx(retrained[method]["hr20_sampled"])
    assert result["split_users"] and result["room_protocol"] == "sampled"


def test_retrain_aware_greedy_oracle_needs_every_target_retrained(
    artifact: Path, scenario_dir: Path, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--scenario", str(scenario_dir), "--artifact",
         str(artifact), "--targets", "2", "--retrain-targets", "1", "--methods",
         "TargetAttack100", "RetrainGreedyOracle", "--out", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 2 and "--retrain-targets must cover --targets (1 < 2)" in run.stderr
    assert run.stdout == "" and not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_probe_reports_the_room_at_each_budget(
    artifact: Path, scenario_dir: Path, protocol: str
) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--scenario", str(scenario_dir), "--artifact",
         str(artifact), "--targets", "2", "--budgets", "1", "3", "--greedy-holders", "3",
         "--methods", "WithoutAttack", "TargetAttack100", "GreedyOracle",
         "ObservedGreedyOracle", "--observed-k", "50", "--greedy-protocol", protocol,
         "--retrain-targets", "1", "--retrain-epochs", "1"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    [result] = summary["results"]
    assert result["victim"] == "pinsage" and result["split_users"]
    assert result["room_protocol"] == protocol
    assert set(result["room"]) == set(result["observed_room"]) == {"1", "3"}
    for budget in ("1", "3"):
        table = result["frozen"][budget]
        rooms = (("GreedyOracle", "room", protocol), ("ObservedGreedyOracle", "observed_room",
                 "sampled"))  # fmt: skip
        for oracle, room, on in rooms:
            base = table["TargetAttack100"][f"hr20_{on}"]
            ratio = table[oracle][f"hr20_{on}"] / base if base else None
            assert result[room][budget] == pytest.approx(ratio)
            assert len(result["per_target_hr20_sampled"][budget][oracle]) == 2
    # under retraining: the frozen choice, fine-tuned in, over random holders fine-tuned in
    retrained = result["retrained"]
    assert result["retrain_targets"] == 1
    base = retrained["TargetAttack100"][f"hr20_{protocol}"]
    ratio = retrained["GreedyOracle"][f"hr20_{protocol}"] / base if base else None
    assert result["retrained_room"] == pytest.approx(ratio)


def _run_probe(module, capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    """The probe in this process: its last stdout line (the summary of every model)."""
    capsys.readouterr()
    sys.argv = [str(SCRIPT), *argv]
    module.main()
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_an_interrupted_probe_resumes_to_the_numbers_of_an_uninterrupted_one(
    artifact: Path,
    scenario_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = probe_module()
    monkeypatch.setattr(sys, "argv", sys.argv)  # restored after the test
    common = ["--scenario", str(scenario_dir), "--artifact", str(artifact), "--budgets", "1",
              "2", "--methods", "WithoutAttack", "RandomAttack", "TargetAttack100"]  # fmt: skip
    whole = _run_probe(module, capsys, *common, "--targets", "3", "--retrain-targets", "1",
                       "--out", str(tmp_path / "whole.jsonl"))  # fmt: skip

    # stopped after two targets, with a record cut short by the crash
    out = tmp_path / "resumed.jsonl"
    _run_probe(module, capsys, *common, "--targets", "2", "--out", str(out))
    with out.open("a") as handle:
        handle.write('{"model": "cut sh')
    calls: list[int] = []
    measure = module.Probe.measure

    def counted_measure(self: Any, state: Any, target: int, cases: Any) -> Any:
        calls.append(target)
        return measure(self, state, target, cases)

    monkeypatch.setattr(module.Probe, "measure", counted_measure)
    resumed = _run_probe(module, capsys, *common, "--targets", "3", "--retrain-targets", "1",
                         "--out", str(out))  # fmt: skip

    first, second, third = module.draw_targets(module.load_scenario(scenario_dir).cold_targets,
                                               3, 0)  # fmt: skip
    # only the missing work ran: the third target, and the first one again with its
    # retrain (3 methods, each measured at 2 budgets and retrained)
    assert sorted(set(calls)) == sorted({first, third}) and calls.count(first) == 3 * 3
    assert second not in calls
    [a], [b] = whole["results"], resumed["results"]
    for key in ("frozen", "retrained", "per_target_hr20_sampled", "lift_sampled_hr20"):
        assert b[key] == a[key], key
    lines = out.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone
    assert [json.loads(line).get("target") for line in lines[1:]] == [first, second, first,
                                                                      third]  # fmt: skip

    # other settings are refused, naming them, and the file is left as it was
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exit:
        _run_probe(module, capsys, *common, "--targets", "3", "--seed", "1", "--out", str(out))
    assert exit.value.code == 2
    assert "other settings (seed: [0] there, [1] now)" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_shards_sharing_one_records_file_report_the_numbers_of_one_run(
    artifact: Path, scenario_dir: Path, tmp_path: Path
) -> None:
    common = [sys.executable, str(SCRIPT), "--scenario", str(scenario_dir), "--artifact",
              str(artifact), "--budgets", "1", "2", "--targets", "3", "--retrain-targets", "2",
              "--methods", "WithoutAttack", "RandomAttack", "TargetAttack100"]  # fmt: skip
    whole = subprocess.run([*common, "--out", str(tmp_path / "whole.jsonl")],
                           capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
    out = tmp_path / "sharded.jsonl"
    shards = [subprocess.Popen([*common, "--shard", f"{i}/2", "--out", str(out)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in (1, 2)]  # fmt: skip
    for shard in shards:
        printed, err = shard.communicate(timeout=600)
        assert shard.returncode == 0, err
        assert printed == "" and "shard" in err  # a shard reports nothing by itself
    targets = [json.loads(line)["target"] for line in out.read_text().splitlines()[1:]]
    assert sorted(targets) == sorted(set(targets)) and len(targets) == 3  # each target once

    # the report from the shards' records runs nothing and equals the one-process run's
    report = subprocess.run([*common, "--out", str(out)], capture_output=True, text=True,
                            check=True, cwd=ROOT)  # fmt: skip
    [a] = json.loads(whole.stdout.splitlines()[-1])["results"]
    [b] = json.loads(report.stdout.splitlines()[-1])["results"]
    for key in ("frozen", "retrained", "per_target_hr20_sampled"):
        assert b[key] == a[key], key
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert len(records) == 3
    # the report's cost is the shards' targets', not its own (it ran nothing); a target
    # on the tiny model may round to 0.0 s, so only the sum is checked, never a duration
    assert all(r["seconds"] >= 0 for r in records)
    assert b["target_seconds"] == pytest.approx(sum(r["seconds"] for r in records), abs=0.1)


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1-2", "true"])
def test_a_shard_that_is_not_i_of_n_is_refused(
    artifact: Path, scenario_dir: Path, tmp_path: Path, shard: str
) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--scenario", str(scenario_dir), "--artifact",
         str(artifact), "--shard", shard, "--out", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 2 and "--shard" in run.stderr and shard in run.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_a_shard_without_records_is_refused(artifact: Path, scenario_dir: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--scenario", str(scenario_dir), "--artifact",
         str(artifact), "--shard", "1/2"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 2 and "--shard needs --out" in run.stderr and run.stdout == ""
