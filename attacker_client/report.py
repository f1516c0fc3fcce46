"""What a run writes: Table 2 as markdown and CSV, the budget curve's CSV, the sweeps'
and the learning curve's CSV, each beside its figure (:mod:`attacker_client.figures`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from attacker_client.figures import plot_budget_curve, plot_learning_curve, plot_sweep
from attacker_client.results import (
    CURVE_METRICS,
    CellResult,
    Interval,
    MethodSummary,
    MetricKey,
    Snapshot,
    Summary,
    SweepPoint,
    write_table2,
)
from shared.atomic import write_text_atomic
from shared.schemas import ALL_USERS, HR_20, METRIC_NAMES, PROTOCOLS


def write_outputs(summary: Summary, cells: list[CellResult], out: Path) -> None:
    """Each file whole or not at all: a run stopped mid-write keeps the previous version of
    each file it had not replaced yet."""
    write_table2(out / "table2.json", summary, cells)
    table: list[list[str | int]] = [["method", "metric", "mean", "ci95", "cells"]]
    for method, row in summary.methods.items():
        for metric, value in row.metrics.items():
            table.append([method, metric, f"{value.mean:.5f}", f"{value.ci95:.5f}", row.cells])
    write_text_atomic(out / "table2.csv", csv_text(table))
    curve: list[list[Any]] = [["method", "budget", *CURVE_METRICS]]
    for method, row in summary.methods.items():
        for budget, point in row.budget_curve.items():
            curve.append([method, budget, *(f"{point[name]:.5f}" for name in CURVE_METRICS)])
    write_text_atomic(out / "budget_curve.csv", csv_text(curve))
    write_text_atomic(out / "table2.md", format_table2(summary))
    plot_budget_curve(summary, out / "budget_curve.png")


def csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


# fewer target items than this: the t interval rests on too few values to be read
MIN_TARGETS_FOR_INTERVAL = 5
FEW_TARGETS = "†"


def _formatted_interval(row: MethodSummary, metric: MetricKey) -> str:
    value = row.interval(metric)
    flag = FEW_TARGETS if row.target_count < MIN_TARGETS_FOR_INTERVAL else ""
    return f"{value.mean:.4f} ± {value.ci95:.4f}{flag}"


def format_table2(summary: Summary | dict[str, Any]) -> str:
    """The paper's Table 2 layout, one table per protocol (cohort: all evaluation users),
    with what the ± means above it and a flag on intervals over fewer than 5 targets.
    ``summary``: typed, or as read from a ``table2.json``."""
    if not isinstance(summary, Summary):
        summary = Summary.model_validate(summary)
    rows = summary.methods.values()
    lines = [
        "Mean ± half-width of its 95% Student t interval (n - 1 degrees of freedom) over the "
        "cells of each method (target items x seeds).",
        "",
    ]
    for protocol in PROTOCOLS:
        lines += [
            f"**{protocol}** ({'100 sampled negatives' if protocol == 'sampled' else 'all items'})",
            "",
            "| method | "
            + " | ".join(METRIC_NAMES)
            + " | items/profile | reward density | queries | + training queries | s/cell |",
            "|---" * (len(METRIC_NAMES) + 6) + "|",
        ]
        for method, row in summary.methods.items():
            cells = [
                _formatted_interval(row, MetricKey(ALL_USERS, protocol, name))
                for name in METRIC_NAMES
            ]
            density = row.reward_density
            lines.append(
                f"| {method} | "
                + " | ".join(cells)
                + f" | {row.items_per_profile:.1f}"
                + f" | {'' if density is None else f'{density:.2f}'} | {row.queries:.0f}"
                f" | {row.amortised_queries:.0f} | {row.seconds:.1f} |"
            )
        lines.append("")
    few = sorted({r.target_count for r in rows if r.target_count < MIN_TARGETS_FOR_INTERVAL})
    if few:
        lines += [
            f"{FEW_TARGETS} fewer than {MIN_TARGETS_FOR_INTERVAL} target items "
            f"({', '.join(map(str, few))}): too few for the t interval to be read; "
            "a smoke test, not a result.",
            "",
        ]
    for test in summary.paired_tests:
        p = test.wilcoxon_p
        lines.append(
            f"Paired test on {test.metric}"
            + (f" at budget {test.budget}" if test.budget else "")
            + f": {test.learner} - {test.best_other} = "
            f"{test.mean_difference:+.4f} over {test.pairs} pairs "
            f"({test.copyattack_wins} wins, {test.ties} ties"
            + (f"; Wilcoxon p = {p:.3g}, paired t p = {test.paired_t_p:.3g})" if p else ")")
            + (
                f"; gain over WithoutAttack {test.gain_ratio:.2f}x the best other's"
                if test.gain_ratio is not None
                else ""
            )
        )
        lines.append("")
    return "\n".join(lines) + "\n"


def write_sweep(points: list[SweepPoint], setting: str, title: str, out: Path) -> None:
    """``{setting}_sweep.csv`` and ``.png``: each method's curve over the setting's values,
    means and the half-widths of their 95% intervals."""
    table: list[list[Any]] = [
        [setting, "method", *CURVE_METRICS, *(f"{name} ci95" for name in CURVE_METRICS)]
    ]
    for point in points:
        intervals = [point.metrics[name] for name in CURVE_METRICS]
        table.append(
            [point.value, point.method, *(i.mean for i in intervals), *(i.ci95 for i in intervals)]
        )
    write_text_atomic(out / f"{setting}_sweep.csv", csv_text(table))
    plot_sweep(points, setting, title, out / f"{setting}_sweep.png")


def write_learning_curve(
    snapshots: list[Snapshot], flat: dict[str, Interval], method: str, title: str, out: Path
) -> None:
    """``learning_curve.csv`` and ``.png``: a pretrained policy's snapshots, ``flat`` the
    other methods' levels."""
    table: list[list[Any]] = [["update", "training_queries", "training_injections", HR_20, "ci95"]]
    for s in snapshots:
        table.append(
            [s.update, s.training_queries, s.training_injections, s.hit_rate.mean, s.hit_rate.ci95]
        )
    write_text_atomic(out / "learning_curve.csv", csv_text(table))
    plot_learning_curve(snapshots, flat, method, title, out / "learning_curve.png")
