"""The stealth experiment end to end on the tiny pair: every attack of it, generated and
copied, judged by each detector on the server; outputs, resumption, quiet ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attacker_client.cli import main as copyattack_main
from attacker_client.generated import target_platform_stats
from attacker_client.results import CellResult, Measured, read_cells
from attacker_client.stealth import (
    STEALTH_METHODS,
    format_stealth,
    lift_kept,
    summarise_stealth,
)
from shared.process import ServerProcess
from shared.schemas import DETECTOR_NAMES
from tests.service_fixtures import ADMIN_TOKEN


def test_stealth_end_to_end_on_the_tiny_pair(
    scenario_dir: Path, server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "stealth"
    argv = [
        "experiment", "stealth", "--server", server.url, "--admin-token", ADMIN_TOKEN,
        "--scenario", str(scenario_dir), "--targets", "2", "--budget", "6",
        "--pretend-users", "10", "--episodes", "1", "--k", "20", "--checkpoint-every", "6",
        "--out", str(out), "--json",
    ]  # fmt: skip
    assert copyattack_main(argv) == 0
    captured = capsys.readouterr()
    assert "stealth:" not in captured.err  # --json: no progress bar
    printed = json.loads(captured.out)
    cells = read_cells(out / "cells.jsonl")
    assert len(cells) == 2 * len(STEALTH_METHODS)
    lengths = target_platform_stats(scenario_dir).lengths
    for cell in cells:
        attacked = cell.method != "WithoutAttack"
        assert cell.profiles == (6 if attacked else 0)
        if not attacked:
            continue
        assert cell.detection is not None
        assert set(cell.detection) == set(DETECTOR_NAMES)
        for report in cell.detection.values():
            assert report["n_injected"] == cell.profiles  # the final spend's
            assert 0.0 <= report["roc_auc"] <= 1.0 and 0.0 <= report["f1"] <= 1.0
        if cell.method.endswith("Fake"):  # lengths drawn from the platform's
            assert lengths.min() <= cell.items_per_profile <= lengths.max()
    rows = printed["methods"]
    assert set(rows) == set(STEALTH_METHODS)
    assert rows["WithoutAttack"]["detectors"] == {} and rows["WithoutAttack"]["js_distance"] is None
    assert rows["WithoutAttack"]["sampled/HR@20"]["lift"] == 0.0
    for method in STEALTH_METHODS[1:]:
        assert set(rows[method]["detectors"]) == set(DETECTOR_NAMES)
        expected = np.mean(
            [c.detection["pca"]["roc_auc"] for c in cells if c.method == method and c.detection]
        )
        assert rows[method]["detectors"]["pca"]["roc_auc"] == pytest.approx(expected)
    for name in ("stealth.md", "stealth.csv", "stealth.json", "stealth.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "stealth.md").read_text()
    assert "| BandwagonFake |" in table and "Goal on f1:" in table
    assert table == format_stealth(summarise_stealth(cells))

    # a second run resumes: nothing is run again
    before = (out / "cells.jsonl").read_bytes()
    assert copyattack_main(argv) == 0
    assert (out / "cells.jsonl").read_bytes() == before
    # other detectors are other numbers: refused, naming the change
    assert copyattack_main([*argv, "--detectors", "pca"]) == 2
    assert "detectors" in capsys.readouterr().err


def test_stealth_against_a_defended_world(
    scenario_dir: Path, server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Every world defended: CopyAttack learns from the defended model (the adaptive
    attacker), each cell records how many of its profiles were quarantined, and the run
    states the share of each attack's undefended lift it kept."""
    undefended, out = tmp_path / "undefended", tmp_path / "defended"
    argv = [
        "experiment", "stealth", "--server", server.url, "--admin-token", ADMIN_TOKEN,
        "--scenario", str(scenario_dir), "--targets", "1", "--budget", "6",
        "--pretend-users", "10", "--episodes", "1", "--k", "20", "--checkpoint-every", "6",
        "--methods", "WithoutAttack", "RandomFake", "TargetAttack100", "CopyAttack",
        "--detectors", "degree", "--json",
    ]  # fmt: skip
    assert copyattack_main([*argv, "--out", str(undefended)]) == 0
    capsys.readouterr()
    # the baseline must be an undefended run, and goes with a defence: refused before running
    assert copyattack_main([*argv, "--undefended", str(undefended), "--out", str(out)]) == 2
    assert "--undefended goes with --defence" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    defended = [*argv, "--defence", "degree", "--out", str(out)]
    assert copyattack_main([*defended, "--undefended", str(missing)]) == 2
    assert f"--undefended {missing}: no cells.jsonl" in capsys.readouterr().err
    assert not out.exists()  # nothing run, nothing written

    assert copyattack_main([*defended, "--undefended", str(undefended)]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = summary["methods"]
    cells = {c.method: c for c in read_cells(out / "cells.jsonl")}
    for method, cell in cells.items():
        assert cell.quarantined is not None  # a defended run records it for every cell
        assert 0 <= cell.quarantined <= cell.profiles
        if cell.profiles:
            assert rows[method]["quarantined_share"] == cell.quarantined / cell.profiles
    # the defence's detector finds random fakes on this world (ROC-AUC 0.99 offline)
    assert (cells["RandomFake"].quarantined or 0) > 0
    assert summary["lift_kept"] == lift_kept(
        list(cells.values()), read_cells(undefended / "cells.jsonl")
    )
    assert set(summary["lift_kept"]) <= {"RandomFake", "TargetAttack100", "CopyAttack"}
    table = (out / "stealth.md").read_text()
    assert "quarantined" in table and "lift kept under this defence" in table
    assert json.loads((out / "run.json").read_text())["defence"] == "degree"
    # a defended run is no baseline
    assert copyattack_main([*defended, "--undefended", str(out)]) == 2
    assert "that run was defended (degree)" in capsys.readouterr().err


def _cell(method: str, target: int, hr: float) -> CellResult:
    measured: Measured = {"all": {"sampled": {"HR@20": hr}}}
    return CellResult(
        method=method, target=target, seed=0, after=measured, before=measured,
        n_users={"all": 10}, profiles=0, items_per_profile=0.0, queries=0, injections=0,
        injected_items=0, seconds=1.0, info={},
    )  # fmt: skip


def test_lift_kept_is_the_defended_lift_over_the_undefended_one_on_shared_cells() -> None:
    undefended = [
        _cell("WithoutAttack", 1, 0.1), _cell("CopyAttack", 1, 0.5), _cell("RandomFake", 1, 0.3),
        _cell("WithoutAttack", 2, 0.2), _cell("CopyAttack", 2, 0.6), _cell("RandomFake", 2, 0.1),
        _cell("WithoutAttack", 3, 0.0), _cell("CopyAttack", 3, 0.9),  # not in the defended run
    ]  # fmt: skip
    defended = [
        _cell("WithoutAttack", 1, 0.1), _cell("CopyAttack", 1, 0.4), _cell("RandomFake", 1, 0.1),
        _cell("WithoutAttack", 2, 0.2), _cell("CopyAttack", 2, 0.5), _cell("RandomFake", 2, 0.2),
    ]  # fmt: skip
    kept = lift_kept(defended, undefended)
    # CopyAttack: lifts 0.4 and 0.4 without, 0.3 and 0.3 with; target 3 is not shared
    assert kept["CopyAttack"] == pytest.approx(0.75)
    # RandomFake: mean lift without is (0.2 - 0.1) / 2 = 0.05 > 0; with it (0.0 + 0.0) / 2
    assert kept["RandomFake"] == pytest.approx(0.0)
    assert "WithoutAttack" not in kept
    # nothing to keep: no positive lift without defence
    assert lift_kept(defended, [c for c in defended if c.method == "WithoutAttack"] + [
        _cell("CopyAttack", 1, 0.1), _cell("CopyAttack", 2, 0.2)
    ]) == {"CopyAttack": None}  # fmt: skip
