"""The typed results read the files earlier versions wrote and render the same tables.

The cells are those of the stealth run committed under ``docs/results`` (152 cells of 8
methods on 19 targets). ``tests/data/table2_of_the_stealth_run.*`` is what the harness
wrote for them as Table 2 before its results were typed (untyped dicts): the summary
(``table2.json`` less its cells), ``table2.md`` and ``table2.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attacker_client.harness import ExperimentConfig
from attacker_client.report import format_table2, write_outputs
from attacker_client.results import (
    CellResult,
    Summary,
    cell_line,
    read_cells,
    read_table2,
    write_table2,
)
from attacker_client.statistics import summarise
from attacker_client.stealth import format_stealth, summarise_stealth
from shared.errors import CopyAttackError

# the cells of a stealth run of 19 primary targets written before the results were typed
# (its table was in docs/stealth.md until the 50-target run replaced it)
STEALTH_RUN = Path(__file__).parent / "data" / "stealth_run_19_targets"
BEFORE = Path(__file__).parent / "data" / "table2_of_the_stealth_run"


@pytest.fixture(scope="module")
def committed_cells() -> list[dict[str, object]]:
    return json.loads((STEALTH_RUN / "stealth.json").read_text())["cells"]


def _config(cells: list[CellResult]) -> ExperimentConfig:
    """The settings the summary of ``BEFORE`` was computed with."""
    return ExperimentConfig(
        server="http://127.0.0.1:8000",
        admin_token="t",
        scenario=Path("scenario"),
        out=Path("out"),
        methods=tuple(dict.fromkeys(c.method for c in cells)),
        targets=20,
    )


def test_committed_cells_read_back_as_they_were_written(
    committed_cells: list[dict[str, object]],
) -> None:
    """A trimmed cell (no checkpoints) stays trimmed; every field keeps its value."""
    cells = [CellResult.model_validate(c) for c in committed_cells]
    assert [json.loads(cell_line(c)) for c in cells] == committed_cells
    assert all(c.checkpoints == {} and c.detection for c in cells[1:])


def test_committed_stealth_run_renders_its_committed_table(
    committed_cells: list[dict[str, object]],
) -> None:
    cells = [CellResult.model_validate(c) for c in committed_cells]
    table = format_stealth(summarise_stealth(cells))
    assert table == (STEALTH_RUN / "stealth.md").read_text()


def test_table2_of_committed_cells_is_the_one_written_before_typing(
    committed_cells: list[dict[str, object]], tmp_path: Path
) -> None:
    # the harness needs the checkpoints (empty here) its cells always recorded
    (tmp_path / "cells.jsonl").write_text(
        "".join(json.dumps({**c, "checkpoints": {}}) + "\n" for c in committed_cells)
    )
    cells = read_cells(tmp_path / "cells.jsonl")
    summary = summarise(cells, _config(cells))
    summary.wall_seconds_this_run, summary.machine = 1.5, "test machine, 2 cores"
    before = (BEFORE.with_suffix(".json")).read_text()
    assert json.dumps(summary.dump(), indent=1) == before
    write_outputs(summary, cells, tmp_path)
    for suffix in (".md", ".csv"):
        assert (tmp_path / f"table2{suffix}").read_text() == BEFORE.with_suffix(suffix).read_text()
    # the typed file reads back to the same summary and cells, and writes the same bytes
    written = read_table2(tmp_path / "table2.json")
    assert written.cells == cells and written.methods == summary.methods
    assert written.paired_tests == summary.paired_tests
    write_table2(tmp_path / "again.json", summary, cells)
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "table2.json").read_bytes()


def test_an_earlier_summary_renders_the_same_table_from_its_dict_or_typed() -> None:
    earlier = json.loads(BEFORE.with_suffix(".json").read_text())
    table = BEFORE.with_suffix(".md").read_text()
    assert format_table2(earlier) == table
    typed = Summary.model_validate(earlier)
    assert format_table2(typed) == table
    assert json.dumps(typed.dump(), indent=1) == BEFORE.with_suffix(".json").read_text()
    # a summary written before targets and policy costs were counted still renders
    for row in earlier["methods"].values():
        del row["targets"], row["amortised_queries"], row["amortised_injections"]
    assert format_table2(earlier) == table


def test_a_cell_that_is_not_one_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cells.jsonl"
    path.write_text('{"method": "CopyAttack", "target": 1}\n')
    with pytest.raises(CopyAttackError, match=r"cells\.jsonl, line 1: not a cell"):
        read_cells(path)
    # a line torn by a kill is the last one: dropped, the cells before it kept
    path.write_text('{"method": "Copy')
    assert read_cells(path) == []
    (tmp_path / "table2.json").write_text('{"methods": {}}')
    with pytest.raises(CopyAttackError, match=r"is not a table2\.json"):
        read_table2(tmp_path / "table2.json")
