"""A small Table 2 end to end: the harness against a real ``recsys-server`` process on a
tiny synthetic scenario, every method, outputs, resumption, and the CLI's errors."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

from attacker_client.cli import main as copyattack_main
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.figures import learning_curve_x
from attacker_client.harness import Experiment, ExperimentConfig, run_table2
from attacker_client.methods import METHODS
from attacker_client.report import format_table2, write_outputs
from attacker_client.results import (
    CellResult,
    Interval,
    Measured,
    Snapshot,
    Summary,
    cell_line,
    read_cells,
)
from attacker_client.resume import run_key
from attacker_client.statistics import PAIRED_METRICS, paired_test, summarise
from shared.errors import CopyAttackError
from shared.process import ServerProcess
from shared.scenario import read_manifest, save_scenario
from shared.schemas import ModelInfo
from tests.pinsage_fixtures import tiny_scenario
from tests.service_fixtures import ADMIN_TOKEN


@pytest.fixture
def scenario_and_server(scenario_dir: Path, server: ServerProcess) -> tuple[Path, str]:
    """The session's tiny scenario and the server of its model."""
    return scenario_dir, server.url


def test_table2_end_to_end_and_resume(
    scenario_and_server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, url = scenario_and_server
    config = ExperimentConfig(
        server=url,
        admin_token=ADMIN_TOKEN,
        scenario=scenario,
        out=tmp_path / "out",
        targets=2,
        budget=6,
        pretend_users=10,
        concurrency=3,
        checkpoint_every=3,
        attack=CopyAttackArgs(episodes=2, k=20),
    )
    summary = asyncio.run(run_table2(config))
    cells = read_cells(tmp_path / "out" / "cells.jsonl")
    assert len(cells) == 2 * len(METHODS)
    rows = summary.methods
    assert set(rows) == set(METHODS)
    # nothing injected, nothing queried; the clean numbers
    assert rows["WithoutAttack"].injections == 0 and rows["WithoutAttack"].queries == 0
    for cell in cells:
        assert cell.profiles == (0 if cell.method == "WithoutAttack" else 6)
        if cell.method == "WithoutAttack":
            assert cell.after == cell.before
    # the learners trained: 2 episodes of 6 profiles, then the final 6; queries counted
    learner = rows["CopyAttack"]
    assert learner.injections == 18 and learner.queries == 3 * 2 * 10
    assert learner.reward_density is not None and 0.0 <= learner.reward_density <= 1.0
    # crafting cuts profiles; TargetAttack100 keeps them whole
    assert rows["TargetAttack40"].items_per_profile < rows["TargetAttack100"].items_per_profile
    assert set(rows["CopyAttack"].budget_curve) == {3, 6}
    # a full spend's final numbers are those of its last checkpoint (evaluated once)
    for cell in cells:
        if cell.profiles == 6:
            assert cell.after == cell.checkpoints[6]
    for name in ("table2.md", "table2.csv", "table2.json", "budget_curve.csv", "budget_curve.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    written = json.loads((tmp_path / "out" / "table2.json").read_text())
    assert "cores" in written["machine"] and written["machine"] == summary.machine
    # what the figures' titles name: the scenario's platforms and the served model's family
    manifest = read_manifest(scenario)
    assert written["pair"] == f"{manifest['source']} → {manifest['target']}"
    assert written["victim"] == "pinsage"
    assert written["methods"] == json.loads(json.dumps(summary.dump()["methods"]))
    # the cells of cells.jsonl (in the order they finished), in the run's order
    assert len(written["cells"]) == len(cells)
    assert sorted(map(json.dumps, written["cells"])) == sorted(
        c.rstrip() for c in map(cell_line, cells)
    )
    with open(tmp_path / "out" / "table2.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == sum(len(row.metrics) for row in rows.values())
    assert not list((tmp_path / "out").glob(".*"))  # no staging file left behind
    # a write that dies halfway (disk full, a kill) leaves the earlier file whole
    outputs = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}

    def dies_halfway(path: Path, text: str, *args: object, **kwargs: object) -> NoReturn:
        with open(path, "w") as handle:
            handle.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", dies_halfway)
        with pytest.raises(OSError, match="No space left"):
            another = summary.model_copy(update={"machine": "another"})
            write_outputs(another, cells, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == outputs
    table = (tmp_path / "out" / "table2.md").read_text()
    for metric in ("all/sampled/HR@20", "all/sampled/NDCG@20", "all/full/HR@20"):
        assert f"Paired test on {metric}: CopyAttack - " in table

    # a second run resumes: every cell is done, nothing is run again
    before = (tmp_path / "out" / "cells.jsonl").read_bytes()
    again = asyncio.run(run_table2(config))
    assert (tmp_path / "out" / "cells.jsonl").read_bytes() == before
    assert again.methods["CopyAttack"].metrics == rows["CopyAttack"].metrics

    # resuming with settings that change the numbers is refused, naming the change, and
    # leaves the finished cells alone
    other = dataclasses.replace(config, attack=CopyAttackArgs(episodes=3, k=20))
    with pytest.raises(CopyAttackError, match=r"another run \(attack: .*'episodes': 2"):
        asyncio.run(run_table2(other))
    assert (tmp_path / "out" / "cells.jsonl").read_bytes() == before
    # more methods, targets or seeds on the same settings do resume, wherever the
    # scenario folder is named from
    relative = Path(os.path.relpath(scenario))
    more = dataclasses.replace(config, methods=("WithoutAttack",), targets=3, scenario=relative)
    assert asyncio.run(run_table2(more)).methods["WithoutAttack"].cells == 3
    # cells whose run recorded nothing cannot be checked: refused
    (tmp_path / "out" / "run.json").unlink()
    with pytest.raises(CopyAttackError, match=r"recorded no run\.json"):
        asyncio.run(run_table2(config))


def test_same_seed_same_numbers(scenario_and_server: tuple[Path, str], tmp_path: Path) -> None:
    scenario, url = scenario_and_server
    results = []
    for run in ("a", "b"):
        config = ExperimentConfig(
            server=url,
            admin_token=ADMIN_TOKEN,
            scenario=scenario,
            out=tmp_path / run,
            methods=("TargetAttack70", "CopyAttack"),
            targets=1,
            budget=6,
            pretend_users=10,
            checkpoint_every=6,
            attack=CopyAttackArgs(episodes=1),
        )
        asyncio.run(run_table2(config))
        results.append(
            [
                (c.method, c.after, c.items_per_profile)
                for c in read_cells(tmp_path / run / "cells.jsonl")
            ]
        )
    assert sorted(results[0]) == sorted(results[1])


def test_cli_names_what_is_wrong(
    scenario_and_server: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario, url = scenario_and_server
    base = [
        "experiment",
        "table2",
        "--server",
        url,
        "--scenario",
        str(scenario),
        "--out",
        str(tmp_path / "o"),
        "--targets",
        "1",
    ]
    assert copyattack_main([*base, "--admin-token", "wrong-token"]) == 2
    assert "401" in capsys.readouterr().err
    other = tmp_path / "other"
    save_scenario(tiny_scenario(seed=5), other)
    assert copyattack_main([*base[:5], str(other), *base[6:], "--admin-token", ADMIN_TOKEN]) == 2
    assert "item ids would mean other movies" in capsys.readouterr().err


def test_scheduled_retraining_threat_model(
    scenario_and_server: tuple[Path, str], tmp_path: Path
) -> None:
    scenario, url = scenario_and_server
    config = ExperimentConfig(
        server=url,
        admin_token=ADMIN_TOKEN,
        scenario=scenario,
        out=tmp_path / "retrain",
        methods=("WithoutAttack", "TargetAttack100"),
        targets=1,
        decile=9,  # a popular target: its metrics are not all zero, so a change can show
        budget=6,
        pretend_users=10,
        threat_model="retrain",
        retrain_epochs=1,
    )
    asyncio.run(run_table2(config))
    cells = {c.method: c for c in read_cells(tmp_path / "retrain" / "cells.jsonl")}
    # the retrained model differs from the clean one even without injections
    assert cells["WithoutAttack"].after != cells["WithoutAttack"].before
    assert cells["TargetAttack100"].checkpoints == {}  # no curve under retraining
    assert cells["TargetAttack100"].after != cells["WithoutAttack"].after


def test_sweeps_write_one_run_per_value(
    scenario_and_server: tuple[Path, str], tmp_path: Path
) -> None:
    scenario, url = scenario_and_server
    base = [
        "--server",
        url,
        "--scenario",
        str(scenario),
        "--admin-token",
        ADMIN_TOKEN,
        "--targets",
        "1",
        "--budget",
        "3",
        "--pretend-users",
        "5",
        "--episodes",
        "1",
        "--methods",
        "WithoutAttack",
        "CopyAttack",
    ]
    out = tmp_path / "depth"
    assert (
        copyattack_main(["experiment", "depth", *base, "--depths", "1", "2", "--out", str(out)])
        == 0
    )
    rows = (out / "depth_sweep.csv").read_text().splitlines()
    assert rows[0] == "depth,method,HR@20,NDCG@20,HR@20 ci95,NDCG@20 ci95"
    assert len(rows) == 1 + 2 * 2
    assert (out / "depth_1" / "table2.md").is_file() and (out / "depth_sweep.png").is_file()
    out = tmp_path / "popularity"
    assert (
        copyattack_main(
            ["experiment", "popularity", *base, "--deciles", "0", "9", "--out", str(out)]
        )
        == 0
    )
    first = read_cells(out / "decile_0" / "cells.jsonl")[0].target
    last = read_cells(out / "decile_9" / "cells.jsonl")[0].target
    assert first != last


def test_trees_built_ahead_are_the_ones_the_methods_walk(tmp_path: Path) -> None:
    def depths(methods: tuple[str, ...], depth: int = 3) -> set[int]:
        config = ExperimentConfig(
            server="http://127.0.0.1:1", admin_token="t", scenario=tmp_path, out=tmp_path,
            methods=methods, attack=CopyAttackArgs(depth=depth),
        )  # fmt: skip
        return Experiment(config, view=None, embeddings=None, targets=[]).tree_depths()  # type: ignore[arg-type]

    assert depths(METHODS) == {1, 3}
    assert depths(("CopyAttack-Length", "TargetAttack100"), depth=5) == {5}
    assert depths(("WithoutAttack", "RandomAttack")) == set()


def _cell(method: str, target: int, after: Measured, **fields: object) -> CellResult:
    """A finished cell measured ``after`` (the clean state too), nothing injected unless
    ``fields`` say otherwise."""
    return CellResult.model_validate(
        {
            "method": method, "target": target, "seed": 0, "after": after, "before": after,
            "n_users": {"all": 10}, "checkpoints": {}, "profiles": 0, "items_per_profile": 0.0,
            "queries": 0, "injections": 0, "injected_items": 0, "seconds": 1.0, "info": {},
            **fields,
        }
    )  # fmt: skip


def test_paired_test_takes_the_best_other_method_of_each_metric() -> None:
    def cell(method: str, target: int, sampled: float, full: float) -> CellResult:
        after: Measured = {"all": {"sampled": {"HR@20": sampled}, "full": {"HR@20": full}}}
        return _cell(method, target, after)

    by_method = {
        "CopyAttack": [cell("CopyAttack", t, 0.5 + t / 100, 0.02 + t / 100) for t in range(6)],
        # best on the sampled protocol, worst on the full one
        "TargetAttack100": [cell("TargetAttack100", t, 0.6, 0.0) for t in range(6)],
        "TargetAttack40": [cell("TargetAttack40", t, 0.4, 0.01) for t in range(6)],
    }
    sampled_hr, _, full_hr = PAIRED_METRICS
    sampled = paired_test(by_method, sampled_hr)
    full = paired_test(by_method, full_hr)
    assert sampled is not None and full is not None
    assert sampled.best_other == "TargetAttack100" and sampled.copyattack_wins == 0
    assert sampled.mean_difference == pytest.approx(-0.075)
    assert full.best_other == "TargetAttack40" and full.copyattack_wins == 6
    assert full.mean_difference == pytest.approx(0.035)
    assert full.wilcoxon_p is not None and full.wilcoxon_p < 0.05
    assert paired_test({"CopyAttack": by_method["CopyAttack"]}, full_hr) is None


def test_a_policys_training_cost_is_shared_by_the_tables_targets(tmp_path: Path) -> None:
    """Cells resumed from a run with another number of targets recorded another share:
    the table shares the whole cost among its own targets, the same for every method."""

    def cell(method: str, target: int) -> CellResult:
        policy = {"training_queries": 35_000, "training_injections": 2_100}
        after: Measured = {"all": {"sampled": {"HR@20": 0.5}}}
        return _cell(method, target, after, injections=30, info={"policy": policy})

    config = ExperimentConfig(
        server="", admin_token="", scenario=tmp_path, out=tmp_path, targets=20
    )
    cells = [cell(m, t) for m in ("CopyAttack-Amortised", "CopyAttack-Amortised+FT")
             for t in range(20)]  # fmt: skip
    rows = summarise(cells, config).methods
    for method in ("CopyAttack-Amortised", "CopyAttack-Amortised+FT"):
        assert rows[method].amortised_queries == 35_000 / 20
        assert rows[method].amortised_injections == 2_100 / 20


def _summary_row(targets: int, density: float | None) -> dict:
    names = ("HR@20", "HR@10", "HR@5", "NDCG@20", "NDCG@10", "NDCG@5")
    metrics = {
        f"all/{protocol}/{name}": {"mean": 0.5, "ci95": 0.25}
        for protocol in ("sampled", "full")
        for name in names
    }
    return {"cells": targets, "targets": targets, "metrics": metrics, "items_per_profile": 60.0,
            "queries": 100.0, "injections": 30.0, "seconds": 1.0, "reward_density": density,
            "budget_curve": {}}  # fmt: skip


def test_table2_says_what_the_interval_is_and_flags_too_few_targets() -> None:
    summary: dict[str, Any] = {
        "methods": {"WithoutAttack": _summary_row(3, None), "CopyAttack": _summary_row(6, 0.62)},
        "paired_tests": [],
        "config": {},
    }
    table = format_table2(summary)
    assert "95% Student t interval" in table.splitlines()[0]
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert "0.5000 ± 0.2500†" in rows["WithoutAttack"]
    assert "†" not in rows["CopyAttack"] and "0.5000 ± 0.2500 |" in rows["CopyAttack"]
    assert "† fewer than 5 target items (3)" in table
    # the reward density the demo's table shows (docs/results.md, "The demo") is printed
    # (blank for non-learners)
    header = rows["method"].split(" | ")
    density = header.index("reward density")
    assert rows["CopyAttack"].split(" | ")[density] == "0.62"
    assert rows["WithoutAttack"].split(" | ")[density] == ""
    # enough targets everywhere: no flag, no footnote
    summary["methods"]["WithoutAttack"] = _summary_row(5, None)
    assert "†" not in format_table2(summary)


def test_an_attack_option_left_unset_keeps_earlier_runs_resumable(tmp_path: Path) -> None:
    """A run recorded before ``crafting_prior`` existed has no such field in its key: the
    same settings now must give the same key, and setting the option must change it."""
    model = ModelInfo(
        version="test",
        scenario_fingerprint="s" * 64,
        model_fingerprint="m" * 64,
        config={},
        metrics={},
        n_users=1,
        n_items=1,
        worlds=0,
    )
    config = ExperimentConfig(
        server="http://127.0.0.1:1", admin_token=ADMIN_TOKEN, scenario=tmp_path, out=tmp_path
    )
    earlier = run_key(config, model, {})["attack"]
    assert "crafting_prior" not in earlier
    prior = dataclasses.replace(config, attack=CopyAttackArgs(crafting_prior=1.0))
    assert run_key(prior, model, {})["attack"] == {**earlier, "crafting_prior": 1.0}


def test_a_surrogate_policys_learning_curve_runs_over_its_updates() -> None:
    def snapshot(update: int, queries: int) -> Snapshot:
        hit_rate = Interval(mean=0.5, ci95=0.1)
        return Snapshot(update=update, training_queries=queries, training_injections=0,
                        hit_rate=hit_rate)  # fmt: skip

    server = [snapshot(u, 500 * u) for u in (0, 4, 8)]
    surrogate = [snapshot(u, 0) for u in (0, 4, 8)]
    assert learning_curve_x(server) == ("target queries spent training the policy", [0, 2000, 4000])
    label, x = learning_curve_x(surrogate)
    assert x == [0, 4, 8] and "zero target queries" in label


def test_learners_are_also_tested_at_budget_10_of_the_budget_curve(tmp_path: Path) -> None:
    """A learner ahead at budget 10 and behind after the spend gets both tests, each on
    its own measures (WithoutAttack's clean state stands at every budget)."""

    def cell(method: str, target: int, at10: float, final: float) -> CellResult:
        def measured(hr: float) -> Measured:
            return {"all": {"sampled": {"HR@20": hr, "NDCG@20": hr / 3}, "full": {"HR@20": 0.0}}}

        if method == "WithoutAttack":
            return _cell(method, target, measured(final))
        return _cell(method, target, measured(final), checkpoints={10: measured(at10)},
                     profiles=30, injections=30)  # fmt: skip

    cells = [
        c
        for t in range(8)
        for c in (
            cell("WithoutAttack", t, 0.0, 0.1),
            cell("TargetAttack100", t, 0.4, 0.6 + 0.01 * t),
            cell("CopyAttack", t, 0.5 + 0.01 * t, 0.55),
        )
    ]
    config = ExperimentConfig(
        server="", admin_token="", scenario=tmp_path, out=tmp_path, targets=8, checkpoint_every=5
    )
    tests = {
        (t.metric, t.budget): t
        for t in summarise(cells, config).paired_tests
        if t.learner == "CopyAttack"
    }
    final, early = tests[("all/sampled/HR@20", None)], tests[("all/sampled/HR@20", 10)]
    assert final.copyattack_wins == 0 and early.copyattack_wins == 8
    assert early.mean_difference == pytest.approx(0.135)
    assert early.gain_ratio == pytest.approx((0.535 - 0.1) / (0.4 - 0.1))
    assert "at budget 10: CopyAttack - TargetAttack100 = +0.1350" in format_table2(
        Summary(methods={}, paired_tests=list(tests.values()), config={})
    )
