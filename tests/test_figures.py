"""The figures say what they show: a title naming the pair, the victim, the threat model
and the number of targets; one 95% band per method, as wide as the tables' t interval;
and a method whose curve lies exactly under another's still shows (its own marker and
line style). Checked on the matplotlib artists, not on images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attacker_client.figures import (
    BAND,
    budget_curve_figure,
    learning_curve_figure,
    sweep_figure,
)
from attacker_client.harness import ExperimentConfig
from attacker_client.results import (
    CellResult,
    Interval,
    MethodSummary,
    Snapshot,
    Summary,
    SweepPoint,
    sampled,
)
from attacker_client.statistics import mean_and_interval, summarise
from shared.schemas import HR_20, METRIC_NAMES, NDCG_20, PROTOCOLS, Cohort, Protocol

PAIR = "ml-latest-small → movietweetings-100k"


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _bands(axis: Axes) -> dict[str, tuple[float, float]]:
    """Each band on ``axis`` by its method: its lowest and highest y."""
    bands = {}
    for collection in axis.collections:
        gid = collection.get_gid()
        if gid and gid.startswith(BAND):
            method = gid.removeprefix(f"{BAND} ")
            assert method not in bands, f"two bands for {method}"
            y = np.concatenate([np.asarray(path.vertices)[:, 1] for path in collection.get_paths()])
            bands[method] = (float(y.min()), float(y.max()))
    return bands


def _styles(axis: Axes) -> dict[str, tuple[object, object]]:
    return {str(line.get_label()): (line.get_marker(), line.get_linestyle()) for line in axis.lines}


def _title(figure: Figure) -> str:
    return figure.get_suptitle()


def _row(curve: dict[int, float], ci95: dict[int, float], level: float = 0.1) -> MethodSummary:
    metrics = {
        f"all/{protocol}/{name}": Interval(mean=level, ci95=0.02)
        for protocol in PROTOCOLS
        for name in METRIC_NAMES
    }
    # an earlier summary recorded no interval at all: leave the field unset, not empty
    unset_or_ci95: dict[str, Any] = (
        {"budget_curve_ci95": {b: {HR_20: h, NDCG_20: h / 3} for b, h in ci95.items()}}
        if ci95 else {}
    )  # fmt: skip
    return MethodSummary(
        cells=8, targets=8, metrics=metrics, items_per_profile=10.0, queries=0.0,
        injections=30.0, seconds=1.0, reward_density=None,
        budget_curve={b: {HR_20: v, NDCG_20: v / 3} for b, v in curve.items()},
        **unset_or_ci95,
    )  # fmt: skip


def test_budget_curve_is_titled_banded_and_shows_a_hidden_method() -> None:
    same = {10: 0.3, 20: 0.5, 30: 0.6}
    summary = Summary(
        methods={
            "WithoutAttack": _row({}, {}),
            # RandomAttack's curve is CopyAttack-Masking's, point for point
            "RandomAttack": _row(same, {10: 0.05, 20: 0.06, 30: 0.07}),
            "CopyAttack-Masking": _row(same, {10: 0.01, 20: 0.01, 30: 0.01}),
            "CopyAttack": _row({10: 0.4, 20: 0.7, 30: 0.8}, {10: 0.1, 20: 0.1, 30: 0.1}),
        },
        paired_tests=[],
        config={"threat_model": "frozen"},
        pair=PAIR,
        victim="pinsage",
    )
    figure = budget_curve_figure(summary)
    title = _title(figure)
    for part in (PAIR, "victim pinsage", "frozen threat model", "8 target items", "95%"):
        assert part in title
    hr, ndcg = figure.axes
    for axis in (hr, ndcg):
        assert set(_bands(axis)) == set(summary.methods)
    # the band is the t interval of the tables: mean ± its half-width, at every budget
    assert _bands(hr)["CopyAttack"] == pytest.approx((0.4 - 0.1, 0.8 + 0.1))
    assert _bands(hr)["RandomAttack"] == pytest.approx((0.3 - 0.05, 0.6 + 0.07))
    assert _bands(ndcg)["WithoutAttack"] == pytest.approx((0.1 - 0.02, 0.1 + 0.02))
    styles = _styles(hr)
    assert styles["RandomAttack"] != styles["CopyAttack-Masking"]
    assert len(set(styles.values())) == len(styles)
    # a summary written before the curve had intervals: a band of zero width, not none
    del summary.methods["CopyAttack"].budget_curve_ci95[30]
    assert _bands(budget_curve_figure(summary).axes[0])["CopyAttack"][1] == pytest.approx(0.8)


def test_an_earlier_summary_says_what_it_did_not_record() -> None:
    summary = Summary(methods={"CopyAttack": _row({5: 0.2}, {})}, paired_tests=[], config={})
    title = _title(budget_curve_figure(summary))
    assert "pair not recorded" in title and "victim not recorded" in title
    assert "frozen threat model" in title and "8 target items" in title


def test_the_curve_band_is_the_interval_over_cells(tmp_path: Path) -> None:
    hit_rates = [0.2, 0.5, 0.3, 0.9]

    def cell(target: int, hit_rate: float) -> CellResult:
        measured: dict[Cohort, dict[Protocol, dict[str, float]]] = {
            "all": {"sampled": {HR_20: hit_rate, NDCG_20: hit_rate / 2}}
        }
        return CellResult(
            method="CopyAttack", target=target, seed=0, after=measured, before=measured,
            n_users={"all": 10}, checkpoints={5: measured}, profiles=5, items_per_profile=3.0,
            queries=0, injections=5, injected_items=15, seconds=1.0, info={},
        )  # fmt: skip

    config = ExperimentConfig(
        server="", admin_token="", scenario=tmp_path, out=tmp_path, budget=5, checkpoint_every=5
    )
    row = summarise([cell(t, h) for t, h in enumerate(hit_rates)], config).methods["CopyAttack"]
    mean, half = mean_and_interval(hit_rates)
    assert row.budget_curve[5][HR_20] == pytest.approx(mean) and half > 0
    assert row.budget_curve_ci95[5][HR_20] == pytest.approx(half)
    assert row.interval(sampled(HR_20)) == Interval(mean=mean, ci95=half)


def test_sweep_and_learning_curve_are_titled_and_banded() -> None:
    points = [
        SweepPoint(value=depth, method=method, metrics={
            HR_20: Interval(mean=0.5, ci95=0.1), NDCG_20: Interval(mean=0.2, ci95=0.05)})
        for depth in (1, 2, 3)
        for method in ("TargetAttack100", "CopyAttack")
    ]  # fmt: skip
    figure = sweep_figure(points, "depth", f"{PAIR}, victim mf, retrain threat model")
    assert PAIR in _title(figure) and "retrain threat model" in _title(figure)
    for axis in figure.axes:
        assert set(_bands(axis)) == {"TargetAttack100", "CopyAttack"}
    assert _bands(figure.axes[0])["CopyAttack"] == pytest.approx((0.4, 0.6))
    styles = _styles(figure.axes[0])
    assert styles["TargetAttack100"] != styles["CopyAttack"]

    snapshots = [
        Snapshot(update=u, training_queries=100 * u, training_injections=10 * u,
                 hit_rate=Interval(mean=0.1 * u, ci95=0.05))
        for u in (1, 2, 3)
    ]  # fmt: skip
    flat = {"TargetAttack100": Interval(mean=0.25, ci95=0.03)}
    figure = learning_curve_figure(snapshots, flat, "CopyAttack-Amortised", "the run's title")
    assert _title(figure).startswith("the run's title")
    bands = _bands(figure.axes[0])
    assert set(bands) == {"CopyAttack-Amortised", "TargetAttack100"}
    assert bands["CopyAttack-Amortised"] == pytest.approx((0.05, 0.35))
    assert bands["TargetAttack100"] == pytest.approx((0.22, 0.28))
