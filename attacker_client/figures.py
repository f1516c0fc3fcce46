"""The figures of the experiments, drawn with matplotlib's Agg backend (set here, once:
files only, no display) and written whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from attacker_client.results import CURVE_METRICS, Summary, sampled
from shared.atomic import staged_file
from shared.schemas import HR_20


def new_figure(rows: int = 1, columns: int = 1, **options: Any) -> tuple[Any, Any]:
    """A figure and its axes (``plt.subplots``), to be written by :func:`save_figure`."""
    return plt.subplots(rows, columns, **options)


def save_figure(figure: Any, path: Path) -> None:
    """A PNG written whole or not at all, then the figure's memory released."""
    try:
        figure.tight_layout()
        with staged_file(path) as staging:
            figure.savefig(staging, dpi=120, format="png")
    finally:
        plt.close(figure)


def plot_budget_curve(summary: Summary, path: Path) -> None:
    figure, axes = new_figure(1, 2, figsize=(10, 4))
    budgets_all = [b for row in summary.methods.values() for b in row.budget_curve]
    for method, row in summary.methods.items():
        curve = row.budget_curve
        if not curve:  # nothing injected: the clean level, flat
            if budgets_all:
                for axis, name in zip(axes, CURVE_METRICS, strict=True):
                    level = row.interval(sampled(name)).mean
                    axis.axhline(level, linestyle="--", color="grey", label=method)
            continue
        budgets = sorted(curve)
        for axis, name in zip(axes, CURVE_METRICS, strict=True):
            axis.plot(budgets, [curve[b][name] for b in budgets], marker="o", label=method)
    for axis, name in zip(axes, CURVE_METRICS, strict=True):
        axis.set_xlabel("budget (injected profiles)")
        axis.set_ylabel(f"{name} (sampled, all evaluation users)")
        axis.grid(alpha=0.3)
    if axes[1].lines:
        axes[1].legend(fontsize=7)
    save_figure(figure, path)


def plot_sweep(rows: list[dict[str, Any]], setting: str, path: Path) -> None:
    figure, axes = new_figure(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = [r for r in rows if r["method"] == method]
        for axis, name in zip(axes, CURVE_METRICS, strict=True):
            axis.plot(
                [p[setting] for p in points], [p[name] for p in points], marker="o", label=method
            )
    for axis, name in zip(axes, CURVE_METRICS, strict=True):
        axis.set_xlabel("tree depth" if setting == "depth" else "popularity decile (0 = least)")
        axis.set_ylabel(f"{name} (sampled, all evaluation users)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    save_figure(figure, path)


def learning_curve_x(rows: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """The curve's x axis: target queries spent training, or, for a policy trained on
    the surrogate (zero target queries at every snapshot), its updates."""
    if all(row["training_queries"] == 0 for row in rows):
        return "policy updates on the surrogate (zero target queries)", [
            row["update"] for row in rows
        ]
    return "target queries spent training the policy", [row["training_queries"] for row in rows]


def plot_learning_curve(
    rows: list[dict[str, Any]], flat: dict[str, float], method: str, path: Path
) -> None:
    figure, axis = new_figure(figsize=(7, 4.5))
    x_label, x = learning_curve_x(rows)
    axis.errorbar(
        x,
        [r[HR_20] for r in rows],
        yerr=[r["ci95"] for r in rows],
        marker="o",
        capsize=3,
        label=method,
        color="black",
    )
    for name, level in flat.items():
        axis.axhline(level, linestyle="--", linewidth=1, label=name, color=f"C{len(axis.lines)}")
    axis.set_xlabel(x_label)
    axis.set_ylabel(f"{HR_20} (sampled), evaluated targets")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    save_figure(figure, path)
