"""The stealth experiment: every attack on the same worlds, budgets and targets as Table
2, and each of the server's shilling detectors run on each attacked world before it is
deleted; per attack and detector the precision, recall, F1 and ROC-AUC of telling the
injected users from the real ones, the distribution distances, and how far the attack
moved its target (sampled and full HR@20).

It runs on the Table 2 harness (:func:`attacker_client.harness.run_cells`), so a run
resumes from ``cells.jsonl`` like ``table2``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attacker_client.figures import new_figure, run_title, save_figure
from attacker_client.harness import ExperimentConfig, Servers, pair_of, run_cells
from attacker_client.report import csv_text
from attacker_client.results import HEADLINE, CellKey, CellResult, MetricKey, recorded_config
from attacker_client.statistics import mean_and_interval
from shared.atomic import write_text_atomic
from shared.machine import machine
from shared.schemas import ALL_USERS, DETECTOR_NAMES, HR_20

STEALTH_METHODS = (
    "WithoutAttack",
    "RandomFake",
    "AverageFake",
    "BandwagonFake",
    "SegmentFake",
    "TargetAttack40",
    "TargetAttack100",
    "CopyAttack",
)
COPIED = ("TargetAttack40", "TargetAttack70", "TargetAttack100", "CopyAttack", "RandomAttack")
DETECTION_METRICS = ("precision", "recall", "f1", "best_f1", "roc_auc")
HR = (MetricKey(ALL_USERS, "sampled", HR_20), MetricKey(ALL_USERS, "full", HR_20))
# the goal: generated profiles found with F1 >= 0.8 by some detector, copied
# ones with F1 < 0.3 by every detector; under a defence, copied attacks keep at least
# 80% of their undefended HR@20 lift and generated ones at most 20%
GOAL_FOUND, GOAL_HIDDEN = 0.8, 0.3
GOAL_COPIED_KEEP, GOAL_GENERATED_KEEP = 0.8, 0.2


async def run_stealth(
    config: ExperimentConfig,
    servers: Servers | None = None,
    undefended: list[CellResult] | None = None,
) -> dict[str, Any]:
    """The stealth run's cells on ``servers`` (default: the one at ``config.server``);
    ``undefended``: the cells of the same run without defence, to state how much of
    each attack's lift the defence left it (:func:`lift_kept`)."""
    if not config.detectors:
        config = dataclasses.replace(config, detectors=DETECTOR_NAMES)
    run = await run_cells(config, "stealth", servers)
    summary = summarise_stealth(run.cells, undefended)
    summary["config"] = recorded_config(config)
    summary["wall_seconds_this_run"] = round(time.perf_counter() - run.started, 1)
    summary["machine"] = machine()
    summary["pair"], summary["victim"] = pair_of(config.scenario), run.victim
    write_stealth_outputs(summary, run.cells, config.out)
    return summary


def summarise_stealth(
    cells: list[CellResult], undefended: list[CellResult] | None = None
) -> dict[str, Any]:
    """Per method: HR@20 (mean and 95% half-width over cells) and its lift over
    WithoutAttack on the same (target, seed); per detector the mean of each detection
    metric and of the distances over the cells that injected anything; with the cells
    of the same run ``undefended``, the share of each method's lift this run kept."""
    by_method: dict[str, list[CellResult]] = {}
    for cell in cells:
        by_method.setdefault(cell.method, []).append(cell)
    clean = {(c.target, c.seed): c.after for c in by_method.get("WithoutAttack", [])}
    rows: dict[str, Any] = {}
    for method, group in by_method.items():
        row: dict[str, Any] = {"cells": len(group), "targets": len({c.target for c in group})}
        for metric in HR:
            mean, half = mean_and_interval([metric.of(c.after) for c in group])
            lifts = [
                metric.of(c.after) - metric.of(clean[key])
                for c in group
                if (key := (c.target, c.seed)) in clean
            ]
            row[_row_key(metric)] = {
                "mean": mean,
                "ci95": half,
                "lift": float(np.mean(lifts)) if lifts else None,
            }
        detected = [c.detection for c in group if c.detection and c.profiles > 0]
        row["detectors"] = {
            name: {
                metric: _mean([d[name][metric] for d in detected])
                for metric in (*DETECTION_METRICS, "false_positive_rate")
            }
            for name in (detected[0] if detected else {})
        }
        shares = [
            c.quarantined / c.profiles for c in group if c.quarantined is not None and c.profiles
        ]
        row["quarantined_share"] = _mean(shares)  # a defended run: the share kept out
        # the distances do not depend on the detector: any one's report has them
        for distance in ("js_distance", "tv_distance"):
            row[distance] = _mean([next(iter(d.values()))[distance] for d in detected])
        rows[method] = row
    summary: dict[str, Any] = {"methods": rows, "goal": _goal(rows)}
    if undefended is not None:
        kept = lift_kept(cells, undefended)
        summary["lift_kept"] = kept
        summary["goal"]["lift_kept"] = {
            method: share >= GOAL_COPIED_KEEP if method in COPIED else share <= GOAL_GENERATED_KEEP
            for method, share in kept.items()
            if share is not None
        }
    return summary


def _lifts(cells: list[CellResult]) -> dict[CellKey, float]:
    """Each cell's sampled HR@20 lift over WithoutAttack on its (target, seed)."""
    clean = {(c.target, c.seed): HEADLINE.of(c.after) for c in cells if c.method == "WithoutAttack"}
    return {
        c.key: HEADLINE.of(c.after) - clean[(c.target, c.seed)]
        for c in cells
        if c.method != "WithoutAttack" and (c.target, c.seed) in clean
    }


def lift_kept(defended: list[CellResult], undefended: list[CellResult]) -> dict[str, float | None]:
    """Per method, its mean sampled HR@20 lift in the defended run over its mean lift
    without defence, on the (target, seed) pairs both runs have: 1 is an attack the
    defence did not touch, 0 one it undid. None where the undefended lift is not
    positive (nothing to keep)."""
    with_defence, without = _lifts(defended), _lifts(undefended)
    shared = with_defence.keys() & without.keys()
    kept: dict[str, float | None] = {}
    for method in dict.fromkeys(key[0] for key in sorted(shared)):
        keys = [key for key in shared if key[0] == method]
        before = float(np.mean([without[key] for key in keys]))
        after = float(np.mean([with_defence[key] for key in keys]))
        kept[method] = after / before if before > 0 else None
    return kept


def _row_key(metric: MetricKey) -> str:
    """The summary's name of a metric (every one is over all evaluation users)."""
    return f"{metric.protocol}/{metric.name}"


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _goal(rows: dict[str, Any]) -> dict[str, Any]:
    """The issue's goal, judged on the default thresholds' F1 and on the best F1."""
    out: dict[str, Any] = {}
    for metric in ("f1", "best_f1"):
        found, hidden = {}, {}
        for method, row in rows.items():
            scores = [v[metric] for v in row["detectors"].values() if v[metric] is not None]
            if not scores:
                continue
            if method in COPIED:
                hidden[method] = max(scores) < GOAL_HIDDEN
            else:
                found[method] = max(scores) >= GOAL_FOUND
        out[metric] = {"generated_found": found, "copied_hidden": hidden}
    return out


def write_stealth_outputs(summary: dict[str, Any], cells: list[CellResult], out: Path) -> None:
    content = {**summary, "cells": [cell.dump() for cell in cells]}
    write_text_atomic(out / "stealth.json", json.dumps(content, indent=1))
    table = [
        ["method", "detector", *DETECTION_METRICS, "false_positive_rate", "js_distance",
         "tv_distance", "sampled_HR@20", "full_HR@20", "cells"]
    ]  # fmt: skip
    for method, row in summary["methods"].items():
        for detector, values in (row["detectors"] or {"": {}}).items():
            table.append(
                [method, detector]
                + [_fmt(values.get(m)) for m in (*DETECTION_METRICS, "false_positive_rate")]
                + [_fmt(row["js_distance"]), _fmt(row["tv_distance"])]
                + [_fmt(row[_row_key(metric)]["mean"]) for metric in HR]
                + [row["cells"]]
            )
    write_text_atomic(out / "stealth.csv", csv_text(table))
    write_text_atomic(out / "stealth.md", format_stealth(summary))
    plot_stealth(summary, out / "stealth.png")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def format_stealth(summary: dict[str, Any]) -> str:
    rows = summary["methods"]
    detectors = sorted({d for row in rows.values() for d in row["detectors"]})
    lines = [
        "HR@20 over the evaluation users (mean ± 95% t half-width over cells; lift: mean "
        "paired difference to WithoutAttack); per detector F1 at its default threshold "
        "(flags about 1% of the real users) / the best F1 of any threshold / ROC-AUC of "
        "the injected users against the real ones, means over cells.",
        "",
        "| method | HR@20 sampled | lift | HR@20 full | lift | JS | TV | "
        + " | ".join(f"{d} F1 / best / AUC" for d in detectors)
        + " |",
        "|---" * (7 + len(detectors)) + "|",
    ]
    for method, row in rows.items():
        hr = []
        for metric in HR:
            value = row[_row_key(metric)]
            hr += [f"{value['mean']:.4f} ± {value['ci95']:.4f}", _fmt(value["lift"])]
        verdicts = [
            " / ".join(
                _fmt(row["detectors"].get(d, {}).get(m), 2) or "-"
                for m in ("f1", "best_f1", "roc_auc")
            )
            for d in detectors
        ]
        lines.append(
            f"| {method} | "
            + " | ".join([*hr, _fmt(row["js_distance"], 3), _fmt(row["tv_distance"], 3)])
            + " | "
            + " | ".join(verdicts)
            + " |"
        )
    lines.append("")
    defended = {
        m: r["quarantined_share"] for m, r in rows.items() if r.get("quarantined_share") is not None
    }
    if defended:
        shares = ", ".join(f"{m} {share:.2f}" for m, share in defended.items())
        lines += [f"Share of each attack's profiles the world's defence quarantined: {shares}.", ""]
    if "lift_kept" in summary:
        shares = ", ".join(
            f"{m} {'-' if share is None else f'{share:.2f}'}"
            for m, share in summary["lift_kept"].items()
        )
        lines += [
            f"Share of each attack's undefended sampled HR@20 lift kept under this defence: "
            f"{shares}. Goal (copied keep >= {GOAL_COPIED_KEEP}, generated <= "
            f"{GOAL_GENERATED_KEEP}): {_verdicts(summary['goal']['lift_kept']) or '-'}.",
            "",
        ]
    for detection_metric in ("f1", "best_f1"):
        verdict = summary["goal"][detection_metric]
        found = _verdicts(verdict["generated_found"])
        hidden = _verdicts(verdict["copied_hidden"])
        lines.append(
            f"Goal on {detection_metric}: generated found (>= {GOAL_FOUND} by some detector): "
            f"{found or '-'}; copied hidden (< {GOAL_HIDDEN} by every detector): {hidden or '-'}."
        )
    return "\n".join(lines) + "\n"


def _verdicts(verdicts: dict[str, bool]) -> str:
    return ", ".join(f"{method} {'yes' if ok else 'no'}" for method, ok in verdicts.items())


def plot_stealth(summary: dict[str, Any], path: Path) -> None:
    """ROC-AUC per attack and detector beside each attack's sampled HR@20 lift."""
    rows = {m: r for m, r in summary["methods"].items() if r["detectors"]}
    detectors = sorted({d for row in rows.values() for d in row["detectors"]})
    figure, (left, right) = new_figure(1, 2, figsize=(12, 4))
    x = np.arange(len(rows))
    width = 0.8 / max(len(detectors), 1)
    for index, detector in enumerate(detectors):
        values = [row["detectors"].get(detector, {}).get("roc_auc") or 0.0 for row in rows.values()]
        left.bar(x + index * width, values, width, label=detector)
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set_xticks(x + 0.4 - width / 2, list(rows), rotation=30, ha="right", fontsize=8)
    left.set_ylabel("ROC-AUC, injected vs real users")
    # headroom above 1.0 for the legend in one row, so that it covers no bar
    left.set_ylim(0, 1.15)
    left.legend(fontsize=7, ncol=len(detectors), loc="upper center")
    lifts = [row[_row_key(HR[0])]["lift"] or 0.0 for row in rows.values()]
    right.bar(x, lifts, color="tab:green")
    right.set_xticks(x, list(rows), rotation=30, ha="right", fontsize=8)
    right.set_ylabel("sampled HR@20 lift over WithoutAttack")
    for axis in (left, right):
        axis.grid(alpha=0.3, axis="y")
    targets = max((row["targets"] for row in summary["methods"].values()), default=0)
    threat_model = summary.get("config", {}).get("threat_model", "frozen")
    figure.suptitle(
        run_title(summary.get("pair"), summary.get("victim"), threat_model, targets), fontsize=9
    )
    save_figure(figure, path)
