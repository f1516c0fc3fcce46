"""``copyattack demo`` end to end on the tiny pair: prepare, serve, attack, stop; and a
second run that reuses the model."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from attacker_client.cli import main as copyattack_main
from attacker_client.results import read_cells


def numbers(results: Path) -> dict[str, object]:
    return {cell.method: cell.after for cell in read_cells(results / "cells.jsonl")}


def test_demo_runs_the_stack_then_reuses_the_model(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--pair", "tiny", "--targets", "1", "--episodes", "1",
            "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "results")]  # fmt: skip
    assert copyattack_main(args) == 0
    out = capfd.readouterr().out
    assert "model trained" in out
    results = tmp_path / "results" / "tiny"
    table = (results / "table2.md").read_text()
    first = numbers(results)
    for method in ("WithoutAttack", "TargetAttack100", "CopyAttack"):
        assert f"| {method} |" in table
    assert (results / "budget_curve.png").stat().st_size > 0
    # the server it started is gone
    url = re.search(r"recsys-server serve on (\S+)", out)
    assert url is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(url.group(1) + "/livez", timeout=2)

    assert copyattack_main(args) == 0
    again = capfd.readouterr().out
    assert "scenario" in again and "reused" in again and "model trained" not in again
    # a fresh attack with the same seed: the same numbers
    assert numbers(results) == first


def test_demo_refuses_a_non_positive_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        copyattack_main(["demo", "--pair", "tiny", "--targets", "0"])
    assert "must be at least 1" in capsys.readouterr().err
