"""The figures of the experiments, drawn with matplotlib's Agg backend (set here, once:
files only, no display) and written whole or not at all.

Each figure says what it shows: a title with the pair (source -> target platform), the
victim, the threat model and the number of target items; each method's curve has its
95% band (the Student t interval of the tables) and a marker and line style of its own,
so a method whose curve lies under another's still shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attacker_client.results import (
    CURVE_METRICS,
    HEADLINE,
    Interval,
    Snapshot,
    Summary,
    SweepPoint,
    sampled,
)
from shared.atomic import staged_file

BAND = "95% band"  # the gid of a band is "95% band <method>"
BAND_NOTE = "shaded: 95% Student t interval of the mean over cells"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")
LINE_STYLES = ("-", "--", "-.", ":")


def new_figure(rows: int = 1, columns: int = 1, **options: Any) -> tuple[Figure, Any]:
    """A figure and its axes (``plt.subplots``), to be written by :func:`save_figure`."""
    return plt.subplots(rows, columns, **options)


def save_figure(figure: Figure, path: Path) -> None:
    """A PNG written whole or not at all, then the figure's memory released."""
    try:
        figure.tight_layout()
        with staged_file(path) as staging:
            figure.savefig(staging, dpi=120, format="png")
    finally:
        plt.close(figure)


def run_title(pair: str | None, victim: str | None, threat_model: str, targets: int) -> str:
    """What a run measured; a summary written before these were recorded says so."""
    return (
        f"{pair or 'pair not recorded'}, victim {victim or 'not recorded'}, "
        f"{threat_model} threat model, {targets} target item{'' if targets == 1 else 's'}"
    )


def summary_title(summary: Summary) -> str:
    targets = max((row.target_count for row in summary.methods.values()), default=0)
    # runs recorded before the retrain threat model existed were all frozen
    threat_model = summary.config.get("threat_model", "frozen")
    return run_title(summary.pair, summary.victim, threat_model, targets)


def _style(index: int) -> dict[str, Any]:
    """The index-th method's colour, marker and line style: no two of the first 36
    methods alike."""
    return {
        "color": f"C{index % 10}",
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
    }


def _curve(
    axis: Axes,
    x: Sequence[float],
    intervals: Sequence[Interval],
    method: str,
    style: dict[str, Any],
) -> None:
    """A method's means over ``x`` and, shaded, their 95% intervals."""
    means = [i.mean for i in intervals]
    axis.plot(x, means, label=method, **style)
    axis.fill_between(
        x,
        [i.mean - i.ci95 for i in intervals],
        [i.mean + i.ci95 for i in intervals],
        color=style["color"],
        alpha=0.15,
        linewidth=0,
        gid=f"{BAND} {method}",
    )


def _flat(axis: Axes, x: Sequence[float], level: Interval, method: str, index: int) -> None:
    """A method that does not vary with ``x`` (nothing injected, or another run's level):
    a dashed level across ``x`` without markers, with its band."""
    style = {**_style(index), "marker": None, "linestyle": "--"}
    _curve(axis, [min(x), max(x)], [level, level], method, style)


def _finish(figure: Figure, axes: Sequence[Axes], title: str, x_label: str) -> None:
    figure.suptitle(f"{title}\n{BAND_NOTE}", fontsize=9)
    for axis in axes:
        axis.set_xlabel(x_label)
        axis.grid(alpha=0.3)
    if axes[-1].lines:
        axes[-1].legend(fontsize=7)


def budget_curve_figure(summary: Summary) -> Figure:
    """Sampled HR@20 and NDCG@20 (all evaluation users) against the profiles injected."""
    figure, axes = new_figure(1, 2, figsize=(10, 4.6))
    budgets = sorted({b for row in summary.methods.values() for b in row.budget_curve})
    for index, (method, row) in enumerate(summary.methods.items()):
        for axis, name in zip(axes, CURVE_METRICS, strict=True):
            if not row.budget_curve:  # nothing injected: the clean level, flat
                if budgets:
                    _flat(axis, budgets, row.interval(sampled(name)), method, index)
                continue
            points = sorted(row.budget_curve)
            # a summary written before the curve had intervals: zero-width bands
            halves = [row.budget_curve_ci95.get(b, {}).get(name, 0.0) for b in points]
            intervals = [
                Interval(mean=row.budget_curve[b][name], ci95=half)
                for b, half in zip(points, halves, strict=True)
            ]
            _curve(axis, points, intervals, method, _style(index))
    for axis, name in zip(axes, CURVE_METRICS, strict=True):
        axis.set_ylabel(f"{name} (sampled, all evaluation users)")
    _finish(figure, axes, summary_title(summary), "budget (injected profiles)")
    return figure


def plot_budget_curve(summary: Summary, path: Path) -> None:
    save_figure(budget_curve_figure(summary), path)


def sweep_figure(points: list[SweepPoint], setting: str, title: str) -> Figure:
    """Sampled HR@20 and NDCG@20 of each method over the values of the swept setting."""
    figure, axes = new_figure(1, 2, figsize=(10, 4.6))
    for index, method in enumerate(dict.fromkeys(p.method for p in points)):
        mine = [p for p in points if p.method == method]
        for axis, name in zip(axes, CURVE_METRICS, strict=True):
            intervals = [p.metrics[name] for p in mine]
            _curve(axis, [p.value for p in mine], intervals, method, _style(index))
    for axis, name in zip(axes, CURVE_METRICS, strict=True):
        axis.set_ylabel(f"{name} (sampled, all evaluation users)")
    x_label = "tree depth" if setting == "depth" else "popularity decile (0 = least)"
    _finish(figure, axes, title, x_label)
    return figure


def plot_sweep(points: list[SweepPoint], setting: str, title: str, path: Path) -> None:
    save_figure(sweep_figure(points, setting, title), path)


def learning_curve_x(snapshots: list[Snapshot]) -> tuple[str, list[int]]:
    """The curve's x axis: target queries spent training, or, for a policy trained on
    the surrogate (zero target queries at every snapshot), its updates."""
    if all(s.training_queries == 0 for s in snapshots):
        return "policy updates on the surrogate (zero target queries)", [
            s.update for s in snapshots
        ]
    return "target queries spent training the policy", [s.training_queries for s in snapshots]


def learning_curve_figure(
    snapshots: list[Snapshot], flat: dict[str, Interval], method: str, title: str
) -> Figure:
    """The headline metric of each snapshot of ``method``'s policy; ``flat``: the levels
    of other methods (another run's), each with its band."""
    figure, axis = new_figure(figsize=(7, 4.8))
    x_label, x = learning_curve_x(snapshots)
    _curve(axis, x, [s.hit_rate for s in snapshots], method, {**_style(0), "color": "black"})
    for index, (name, level) in enumerate(flat.items(), start=1):
        _flat(axis, x, level, name, index)
    axis.set_ylabel(f"{HEADLINE.name} (sampled), evaluated targets")
    _finish(figure, [axis], title, x_label)
    return figure


def plot_learning_curve(
    snapshots: list[Snapshot], flat: dict[str, Interval], method: str, title: str, path: Path
) -> None:
    save_figure(learning_curve_figure(snapshots, flat, method, title), path)
