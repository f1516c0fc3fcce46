"""``copyattack report``: the docs' generated tables equal what their data gives, a number
edited by hand is caught, and a marker that cannot be rendered is a clear error."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from attacker_client.cli import main
from attacker_client.docs_report import (
    END,
    HISTORICAL,
    DocsReportError,
    blocks,
    historical,
    regenerate,
    render_defences,
    render_probe,
    render_quality,
    render_room,
    render_rooms,
    render_stealth,
    render_table2,
    render_throughput,
    stale,
)
from attacker_client.report import format_table2

ROOT = Path(__file__).resolve().parents[1]
RICH_TABLE2 = "results/rich_draw/table2.json"
STEALTH_RUN = "results/stealth/primary50/stealth.json"


def test_committed_docs_equal_what_their_data_generates() -> None:
    for page in ("results.md", "victims.md", "stealth.md"):  # the converted pages hold tables
        assert blocks(ROOT / "docs" / page)
    assert [f"{b.doc.name}:{b.line}" for b in stale(ROOT)] == []


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The README and docs/ (with the data, without the figures) in a temporary root."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    return tmp_path


def _edit_first_generated_number(doc: Path) -> tuple[str, str]:
    """Raise the first mean of the first generated table of ``doc`` by 0.001, as a hand
    edit would; the text before and after."""
    row = next(line for line in blocks(doc)[0].current.splitlines() if "±" in line)
    mean = re.search(r"\d\.\d{3}(?= ±)", row)
    assert mean is not None
    edited = row.replace(mean[0], f"{float(mean[0]) + 0.001:.3f}", 1)
    text = doc.read_text()
    doc.write_text(text.replace(row, edited, 1))
    return text, doc.read_text()


def test_a_number_edited_by_hand_is_named_then_regenerated(repo_copy: Path, capsys) -> None:
    doc = repo_copy / "docs" / "results.md"
    original, edited = _edit_first_generated_number(doc)
    line = blocks(doc)[0].line
    assert main(["report", "--check", "--root", str(repo_copy)]) == 1
    assert f"results.md:{line}: differs from its data" in capsys.readouterr().out
    assert doc.read_text() == edited  # --check writes nothing
    assert main(["report", "--root", str(repo_copy)]) == 0
    assert doc.read_text() == original
    assert main(["report", "--check", "--root", str(repo_copy)]) == 0


def _page(root: Path, marker: str, table: str = "| a |\n|---|\n") -> Path:
    doc = root / "docs" / "page.md"
    doc.write_text(f"Prose.\n\n{marker}\n\n{table}\n{END}\n\nMore prose.\n")
    return doc


def test_a_marker_naming_a_missing_file_is_a_clear_error(repo_copy: Path, capsys) -> None:
    doc = _page(repo_copy, "<!-- generated: results/gone/table2.json (table2) -->")
    before = {p: p.read_text() for p in (repo_copy / "docs").glob("*.md")}
    _edit_first_generated_number(repo_copy / "docs" / "results.md")
    before[repo_copy / "docs" / "results.md"] = (repo_copy / "docs" / "results.md").read_text()
    assert main(["report", "--root", str(repo_copy)]) == 2
    error = capsys.readouterr().err
    assert f"{doc}:3:" in error and "results/gone/table2.json does not exist" in error
    # every marker is rendered before any file is written: the stale table stays as it was
    assert {p: p.read_text() for p in (repo_copy / "docs").glob("*.md")} == before


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (f"<!-- generated: {RICH_TABLE2} (table3) -->", "unknown renderer 'table3'"),
        (f"<!-- generated: {RICH_TABLE2} (table2 columns=hr20,hr99) -->", "unknown column"),
        (f"<!-- generated: {RICH_TABLE2} (table2 columns=hr20 methods=Nope) -->", "'Nope'"),
        (f"<!-- generated: {RICH_TABLE2} (table2 columns) -->", "not key=value"),
        ("<!-- generated: results/room/README.md (room) -->", "no reader for '.md'"),
        (f"<!-- generated: {RICH_TABLE2} {RICH_TABLE2} (table2) -->", "the marker names 2"),
        (
            "<!-- generated: results/room/rich_mf/probe.jsonl (table2 columns=hr20) -->",
            "page.md:3: no 'methods' in its data",
        ),
    ],
)
def test_a_marker_that_cannot_be_rendered_is_refused(
    repo_copy: Path, marker: str, message: str
) -> None:
    doc = _page(repo_copy, marker)
    with pytest.raises(DocsReportError, match=re.escape(message)):
        regenerate(repo_copy)
    assert END in doc.read_text()


def test_data_without_its_run_record_is_refused(repo_copy: Path) -> None:
    (repo_copy / "docs" / "results" / "rich_draw" / "run.json").unlink()
    with pytest.raises(DocsReportError, match=re.escape("no run.json beside it")):
        stale(repo_copy)
    record = repo_copy / "docs" / "results" / "small" / "run.json"
    files = json.loads(record.read_text())
    del files["files"]["table2.json"]["command"]
    record.write_text(json.dumps(files))
    _page(repo_copy, "<!-- generated: results/small/table2.json (table2) -->")
    (repo_copy / "docs" / "results.md").write_text("no tables\n")
    (repo_copy / "docs" / "victims.md").write_text("no tables\n")
    with pytest.raises(DocsReportError, match=re.escape("missing files/table2.json/command")):
        stale(repo_copy)


def test_an_unclosed_marker_is_refused(repo_copy: Path) -> None:
    doc = repo_copy / "docs" / "page.md"
    doc.write_text(f"<!-- generated: {RICH_TABLE2} (table2) -->\n| a |\n")
    with pytest.raises(DocsReportError, match=re.escape(f"{doc}:1: no {END}")):
        blocks(doc)


def test_table2_without_columns_is_the_harness_table() -> None:
    summary = json.loads((ROOT / "docs" / RICH_TABLE2).read_text())
    assert render_table2([summary], {}) == format_table2(summary)
    view = render_table2([summary], {"columns": "hr20,items", "methods": "TargetAttack100"})
    row = summary["methods"]["TargetAttack100"]
    hr20 = row["metrics"]["all/sampled/HR@20"]
    assert view.splitlines()[-1] == (
        f"| TargetAttack100 | {hr20['mean']:.3f} ± {hr20['ci95']:.3f}"
        f" | {row['items_per_profile']:.0f} |"
    )


def test_room_over_the_first_targets_averages_them_only() -> None:
    def result(name: str, scale: float) -> dict:
        per_target = {
            "WithoutAttack": [0.1, 0.1, 0.9],
            "TargetAttack100": [0.2, 0.4, 0.0],
            "GreedyOracle": [0.5, 0.7, 0.0],
        }
        per_target = {m: [v * scale for v in values] for m, values in per_target.items()}
        return {
            "variant": f"{name} (model.pt)",
            "frozen": {"30": {m: {"hr20_sampled": sum(v) / 3} for m, v in per_target.items()}},
            "per_target_hr20_sampled": {"30": per_target},
        }

    probes = [{"results": [result("A", 1.0)]}, {"results": [result("B", 0.5)]}]
    table = render_room(probes, {"targets": "2"}).splitlines()
    assert table[0] == "| victim | budget | Without | TargetAttack100 | greedy oracle | room |"
    assert table[2:] == [
        "| A | 30 | 0.100 | 0.300 | 0.600 | 2.00x |",
        "| B | 30 | 0.050 | 0.150 | 0.300 | 2.00x |",
    ]
    whole = render_room(probes[:1], {}).splitlines()
    assert whole[2] == "| 30 | 0.367 | 0.200 | 0.400 | 2.00x |"
    with pytest.raises(DocsReportError, match=re.escape("fewer than 4 targets")):
        render_room(probes, {"targets": "4"})


def test_room_under_retraining_is_one_more_row_over_its_targets() -> None:
    per_target = {"TargetAttack100": [0.2, 0.4], "GreedyOracle": [0.5, 0.7]}
    retrained = {"TargetAttack100": {"hr20_sampled": 0.25}, "GreedyOracle": {"hr20_sampled": 0.5}}
    result = {
        "variant": "LightGCN (model.pt)",
        "frozen": {
            b: {m: {"hr20_sampled": sum(v) / 2} for m, v in per_target.items()}
            for b in ("10", "30")
        },
        "per_target_hr20_sampled": {"10": per_target, "30": per_target},
        "retrained": retrained,
        "retrain_targets": 2,
    }
    table = render_room([{"results": [result]}], {}).splitlines()
    assert table[2:] == [
        "| 10 | 0.300 | 0.600 | 2.00x |",
        "| 30 | 0.300 | 0.600 | 2.00x |",
        "| 30, retrained (2) | 0.250 | 0.500 | 2.00x |",
    ]
    # over fewer targets than were retrained, the retrained row would not be theirs
    assert len(render_room([{"results": [result]}], {"targets": "1"}).splitlines()) == 4
    assert len(render_room([{"results": [result]}], {"targets": "2"}).splitlines()) == 5


def test_room_under_retraining_is_the_retrain_aware_oracles_where_it_ran() -> None:
    hr20 = {"TargetAttack100": 0.2, "RetrainGreedyOracle": 0.1}  # frozen: not its aim
    result = {
        "variant": "MF (model.pt)",
        "frozen": {"30": {m: {"hr20_sampled": v} for m, v in hr20.items()}},
        "retrained": {
            "TargetAttack100": {"hr20_sampled": 0.25},
            "RetrainGreedyOracle": {"hr20_sampled": 0.75},
        },
        "retrain_targets": 1,
    }
    table = render_room([{"results": [result]}], {}).splitlines()
    assert table[0] == "| budget | TargetAttack100 | retrain-aware greedy oracle | room |"
    # frozen, no frozen greedy oracle ran: no room; retrained, the retrain-aware one's
    assert table[2:] == [
        "| 30 | 0.200 | 0.100 |  |",
        "| 30, retrained (1) | 0.250 | 0.750 | 3.00x |",
    ]


def test_rooms_summarise_each_draw_and_victim_in_one_row() -> None:
    def row(hr20: float, full: float, top: float) -> dict[str, float]:
        return {"hr20_sampled": hr20, "hr20_full": full, "pretend_top100": top}

    frozen = {"GreedyOracle": row(0.6, 0.2, 12.0), "TargetAttack100": row(0.3, 0.1, 4.5)}
    lightgcn = {
        "victim": "lightgcn",
        "frozen": {"10": frozen, "30": frozen},
        "per_target_hr20_sampled": {"10": {"GreedyOracle": [0.5, 0.7]}},
        "room": {"10": 2.0, "30": 2.0},
        "retrained_room": 1.5,
        "retrain_targets": 1,
    }
    mf = {  # frozen nothing moves (no room), retrained the retrain-aware oracle chose
        "victim": "mf",
        "frozen": {"30": {"TargetAttack100": row(0.3, 0.0, 0.0)}},
        "per_target_hr20_sampled": {"30": {"TargetAttack100": [0.3]}},
        "retrain_aware_room": 1.25,
        "retrained_room": 1.0,
        "retrain_targets": 1,
    }
    itemknn = {**lightgcn, "victim": "itemknn", "room": {"10": None, "30": 0.5},
               "room_protocol": "full"}  # fmt: skip
    del itemknn["retrained_room"], itemknn["retrain_targets"]
    # retrained, holders ranked by popularity beat the greedy oracle's frozen choice
    retrained = {"TargetAttack100": row(0.2, 0.0, 0.0), "SelectionOracle": row(0.35, 0.0, 0.0),
                 "GreedyOracle": row(0.3, 0.0, 0.0)}  # fmt: skip
    pinsage = {**lightgcn, "victim": "pinsage", "retrained": retrained}
    data = [{"results": [lightgcn, itemknn]}, {"results": [mf, pinsage]}]
    table = render_rooms(data, {"labels": "reverse,rich"}).splitlines()
    assert table[0] == (
        "| draw | victim | targets | protocol | room at 10 | room at 30 | room retrained "
        "(targets) | full HR@20 greedy / TA100 | pretend top-100 greedy / TA100 |"
    )
    assert table[2:] == [
        "| reverse | LightGCN | 2 | sampled | 2.00x | 2.00x | >= 1.50x (1) | 0.2000 / 0.1000 "
        "| 12.0 / 4.5 |",
        "| reverse | item-kNN | 2 | full | - | 0.50x | - | 0.2000 / 0.1000 | 12.0 / 4.5 |",
        "| rich | MF | 1 | sampled | - | - | 1.25x (1) | - | - |",
        "| rich | PinSage | 2 | sampled | 2.00x | 2.00x | >= 1.75x (1; popularity oracle) "
        "| 0.2000 / 0.1000 | 12.0 / 4.5 |",
    ]
    with pytest.raises(DocsReportError, match="one label per data file"):
        render_rooms(data, {"labels": "reverse"})


def test_room_in_the_full_ranking_reads_the_full_hr20() -> None:
    frozen = {
        "10": {
            "TargetAttack100": {"hr20_sampled": 1.0, "hr20_full": 0.08},
            "GreedyOracle": {"hr20_sampled": 1.0, "hr20_full": 0.1},
        }
    }
    probe = {"results": [{"variant": "ItemKNN (model.pt)", "frozen": frozen}]}
    table = render_room([probe], {"protocol": "full"}).splitlines()
    assert table[2] == "| 10 | 0.0800 | 0.1000 | 1.25x |"
    assert render_room([probe], {}).splitlines()[2] == "| 10 | 1.000 | 1.000 | 1.00x |"
    with pytest.raises(DocsReportError, match="needs the sampled protocol"):
        render_room([probe], {"protocol": "full", "targets": "1"})
    with pytest.raises(DocsReportError, match="not sampled or full"):
        render_room([probe], {"protocol": "Full"})


def test_probe_grid_has_a_row_per_draw_victim_threat_and_budget() -> None:
    methods = ("WithoutAttack", "RandomAttack", "TargetAttack100", "TargetAttack40",
               "InDomainControl", "SelectionOracle")  # fmt: skip

    def table(hr20: float) -> dict:
        rows = {m: {"hr20_sampled": hr20 * (i + 1), "hr20_full": 0.001 * i,
                    "pretend_top100": 0.5 * i} for i, m in enumerate(methods)}  # fmt: skip
        return rows

    result = {
        "variant": "LightGCN (model.pt)",
        "victim": "lightgcn",
        "frozen": {"10": table(0.05), "30": table(0.1)},
        "per_target_hr20_sampled": {
            "10": {m: [0.0] * 50 for m in methods},
            "30": {m: [0.2 * (i + 1)] * 10 + [0.0] * 40 for i, m in enumerate(methods)},
        },
        "retrained": table(0.02),
        "retrain_targets": 10,
    }
    rendered = render_probe([{"results": [result]}], {"labels": "rich"}).splitlines()
    assert rendered[0] == (
        "| draw | victim | threat (targets) | budget | Without | Random | TargetAttack100 |"
        " TargetAttack40 | in-domain control | popularity oracle | TargetAttack100 lift |"
        " full HR@20 | pretend top-100 |"
    )
    assert rendered[2:] == [
        "| rich | LightGCN | frozen (50) | 10 | 0.050 | 0.100 | 0.150 | 0.200 | 0.250 | 0.300"
        " | 3.00x | 0.0000 -> 0.0020 | 0.0 -> 1.0 |",
        "| rich | LightGCN | frozen (50) | 30 | 0.100 | 0.200 | 0.300 | 0.400 | 0.500 | 0.600"
        " | 3.00x | 0.0000 -> 0.0020 | 0.0 -> 1.0 |",
        "| rich | LightGCN | frozen (first 10) | 30 | 0.200 | 0.400 | 0.600 | 0.800 | 1.000"
        " | 1.200 | 3.00x |  |  |",
        "| rich | LightGCN | retrained (10) | 30 | 0.020 | 0.040 | 0.060 | 0.080 | 0.100 | 0.120"
        " | 3.00x | 0.0000 -> 0.0020 | 0.0 -> 1.0 |",
    ]
    with pytest.raises(DocsReportError, match="one label per data file"):
        render_probe([{"results": [result]}] * 2, {"labels": "rich"})
    other: dict[str, Any] = {**result, "frozen": {"10": {**table(0.05)}}}
    del other["frozen"]["10"]["SelectionOracle"]
    with pytest.raises(DocsReportError, match=r"default LightGCN measured WithoutAttack, .*"
                       r"InDomainControl; the grid needs the same methods"):  # fmt: skip
        render_probe([{"results": [result]}, {"results": [other]}], {"labels": "rich,default"})


def test_quality_reads_the_cohort_names_train_writes_today_and_before() -> None:
    def metrics(value: float) -> dict:
        return {
            "sampled": {"HR@10": value},
            "full": {"HR@10": value / 2, "NDCG@10": value / 4, "HR@20": value},
        }

    today = {"PinSage": {"all": metrics(0.7), "3+": metrics(0.6)}}  # as train --json writes
    before = {"PinSage": {"all": metrics(0.7), "users_with_3+_train": metrics(0.6)}}
    table = render_quality([today], {}).splitlines()
    assert table[2] == "| all test cases | PinSage | 0.700 | 0.350 | 0.175 | 0.700 |"
    assert table[3] == "| users with 3+ training items | PinSage | 0.600 | 0.300 | 0.150 | 0.600 |"
    assert render_quality([before], {}) == render_quality([today], {})

    # victims trained on one scenario, each beside the same baselines: every model once
    lightgcn = {"LightGCN": {"all": metrics(0.8), "3+": metrics(0.5)}, **today}
    table = render_quality([today, lightgcn], {}).splitlines()
    assert [row.split(" | ")[1] for row in table[2:]] == ["PinSage", "LightGCN"] * 2


def test_throughput_rows_are_per_run_then_the_median_of_each_figure() -> None:
    def run(noop: float, topk: float) -> dict:
        route = {"rps": 0.0, "p50_ms": 1.0, "p99_ms": 2.0}
        return {
            "concurrency": {
                "32": {
                    "noop": {**route, "rps": noop},
                    "topk": {**route, "rps": topk, "p99_ms": topk / 100},
                    "topk_over_noop_rps": topk / noop,
                }
            }
        }

    table = render_throughput([run(1000, 700), run(1000, 900), run(2000, 1600)], {})
    lines = table.splitlines()
    assert len(lines) == 2 + 3 + 1
    assert lines[2].startswith("| run 1 | 32 | 1,000 | 700 | **0.70x** |")
    assert lines[5] == (
        "| median of 3 | 32 | 1,000 | 900 | **0.80x** | 1.0 / 2.0 ms | 1.0 / 9.0 ms |"
    )


def test_defences_give_each_attacks_quarantined_and_kept_shares() -> None:
    def defended(defence: str, share: float) -> dict:
        row = {"quarantined_share": share}
        methods = {
            "WithoutAttack": {"quarantined_share": None},
            "RandomFake": row,
            "CopyAttack": row,
        }
        return {
            "methods": methods,
            "lift_kept": {"RandomFake": 1 - share, "CopyAttack": None},
            "config": {"defence": defence},
        }

    lines = render_defences([defended("ecod", 0.25), defended("pca", 0.5)], {}).splitlines()
    assert lines[0] == "| defence |  | RandomFake | CopyAttack (adaptive) |"
    assert lines[2:] == [
        "| ecod | profiles quarantined | 0.25 | 0.25 |",
        "| ecod | undefended lift kept | 0.75 | - |",
        "| pca | profiles quarantined | 0.50 | 0.50 |",
        "| pca | undefended lift kept | 0.50 | - |",
    ]
    undefended = json.loads((ROOT / "docs" / STEALTH_RUN).read_text())
    with pytest.raises(DocsReportError, match="without a defence"):
        render_defences([undefended], {})


def _harness_run(repo: Path, name: str, summary_file: str, summary: dict) -> Path:
    """A finished run's folder as the harness leaves it: the summary with its cells."""
    run = repo / "results" / name
    run.mkdir(parents=True)
    (run / summary_file).write_text(json.dumps({**summary, "cells": [{"method": "x"}]}))
    (run / "run.json").write_text(json.dumps({"model": "m" * 64, "scenario": "s" * 64}))
    return run


def test_a_kept_harness_run_is_one_marker_away_from_a_table(repo_copy: Path, capsys) -> None:
    summary = json.loads((ROOT / "docs" / RICH_TABLE2).read_text())
    run = _harness_run(repo_copy, "new_run", "table2.json", summary)
    dest = repo_copy / "docs" / "results" / "new_run"
    keep = ["report", "--keep", str(run), str(dest)]
    assert main(keep) == 2  # without the command that made it
    assert "--keep needs --command" in capsys.readouterr().err and not dest.exists()
    assert main([*keep, "--command", "copyattack experiment table2 ..."]) == 0
    assert json.loads((dest / "table2.json").read_text()) == summary
    record = json.loads((dest / "run.json").read_text())
    assert record["model"] == "m" * 64 and record["machine"] == summary["machine"]
    assert record["files"]["table2.json"]["command"] == "copyattack experiment table2 ..."
    doc = _page(repo_copy, "<!-- generated: results/new_run/table2.json (table2) -->")
    assert main(["report", "--root", str(repo_copy)]) == 0
    assert format_table2(summary) in doc.read_text()
    kept = (dest / "table2.json").read_text()
    assert main([*keep, "--command", "again"]) == 2  # an existing folder is not overwritten
    assert "already holds a kept run" in capsys.readouterr().err
    assert (dest / "table2.json").read_text() == kept
    assert main(["report", "--keep", str(run / "gone"), str(dest / "x"), "--command", "c"]) == 2
    assert "not a finished harness run" in capsys.readouterr().err


def test_a_kept_stealth_run_is_one_marker_away_from_a_table(repo_copy: Path, capsys) -> None:
    summary = json.loads((ROOT / "docs" / STEALTH_RUN).read_text())
    run = _harness_run(repo_copy, "new_stealth", "stealth.json", summary)
    dest = repo_copy / "docs" / "results" / "new_stealth"
    assert main(["report", "--keep", str(run), str(dest), "--command", "copyattack ..."]) == 0
    assert json.loads((dest / "stealth.json").read_text()) == summary
    record = json.loads((dest / "run.json").read_text())
    assert record["files"]["stealth.json"]["command"] == "copyattack ..."
    doc = _page(repo_copy, "<!-- generated: results/new_stealth/stealth.json (stealth) -->")
    assert main(["report", "--root", str(repo_copy)]) == 0
    assert render_stealth([summary], {}) in doc.read_text()
    # a folder holding both summaries is not one run
    (run / "table2.json").write_text("{}")
    assert main(["report", "--keep", str(run), str(dest / "x"), "--command", "c"]) == 2
    assert "not a finished harness run" in capsys.readouterr().err


def test_tables_marked_historical_are_listed(repo_copy: Path) -> None:
    before = historical(repo_copy)
    doc = repo_copy / "docs" / "page.md"
    doc.write_text(f"Prose.\n\n{HISTORICAL}\n| a |\n|---|\n")
    assert sorted(historical(repo_copy)) == sorted([f"{doc}:3", *before])
