"""``copyattack report``: the docs' tables regenerated from the data of the runs behind them.

A generated table sits in a markdown file between two markers; the opening one names its
data (paths relative to the markdown file) and how to render it:

    <!-- generated: results/rich_draw/table2.json (table2 columns=hr20,hr20_full,items) -->

    | method | HR@20 | HR@20 full | items/profile |
    ...

    <!-- end generated -->

The prose around the markers stays hand-written. ``copyattack report`` rewrites what lies
between them in ``README.md`` and ``docs/*.md``; ``--check`` writes nothing and fails naming
each table whose committed text differs from what its data gives. Every data file lies in
a run folder whose ``run.json`` names the model (fingerprint) and the machine, and per
file the command and the date (``RUN_FILE``): adding a run to the docs is its folder plus
one marker. ``copyattack report --keep results/RUN docs/results/RUN --command "..."`` makes
that folder from a harness run: its summary without the per-cell records, and the
record. A table whose run was not kept stays typed by hand, marked
``<!-- historical: data not kept -->``.

Renderers (the word in parentheses; options ``key=value``, lists comma-separated):

- ``table2``: a harness summary (``table2.json``) as the harness writes ``table2.md``;
  with ``columns=`` (``COLUMNS``) one row per method (``methods=`` picks and orders them)
  with those columns only;
- ``learning-curve``: a ``learning_curve.csv``, one row per policy snapshot;
- ``pretrain``: one or more ``pretrain.json`` training logs, one row each: the validation
  reward per snapshot and the policies' entropy, first and last update;
- ``room``: the attackability probe's JSON lines (``benchmarks/attackability_probe.py``,
  its last line), one row per model and budget, and where the probe retrained, one more
  (its largest budget, "retrained (N)": N targets; its room is the retrain-aware greedy
  oracle's where it ran, else the frozen oracle's choice fine-tuned in, a lower bound);
  ``targets=N`` averages the seeded draw's first N targets only;
  ``protocol=full`` reads the full-ranking HR@20 (default sampled);
- ``probe``: the attackability probe's grid, several of its JSON lines files (``labels=``
  names each, in order): per file and victim, the sampled HR@20 of each method frozen at
  each budget and, where run, under scheduled retraining, TargetAttack100's lift, and its
  full HR@20 and pretend users with the target in their top-100 against WithoutAttack's;
- ``rooms``: several of the probe's JSON lines files (``labels=`` names each one's draw):
  one row per file and victim, the greedy oracle's room at each budget and under
  scheduled retraining, and its full HR@20 and pretend users' top-100 against
  TargetAttack100's;
- ``stealth``: the stealth experiment's ``stealth.json``, its table as ``stealth.md`` has it;
- ``defences``: stealth runs against defended worlds (``--defence``), two rows each: the
  share of each attack's profiles quarantined, and of its undefended lift kept;
- ``detectors``: ``benchmarks/detectors_offline.py``'s JSON, one row per detector (ROC-AUC
  of each planted kind, its recall at the default threshold in brackets), then the
  distribution distances;
- ``quality``: ``recsys-server train --json``'s outputs (of one scenario), one row per
  cohort and model, a model named in several outputs once;
- ``throughput``: runs of ``benchmarks/service_throughput.py`` (its JSON line each), one row
  per run and concurrency (``/topk`` against the no-op route of the same run), then the
  median over runs.

A marker indented (in a list item) indents its table alike.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacker_client.report import format_table2
from attacker_client.stealth import format_stealth
from shared.errors import CopyAttackError
from shared.schemas import ACTIVE_USERS, ALL_USERS, Cohort

OPEN = re.compile(
    r"^<!-- generated: (?P<paths>[^()]+?) \((?P<renderer>[\w-]+)(?P<options>[^)]*)\) -->$"
)
END = "<!-- end generated -->"
HISTORICAL = "<!-- historical: data not kept -->"
RUN_FILE = "run.json"
RUN_KEYS = ("model", "machine", "files")
RUN_FILE_KEYS = ("command", "date")


class DocsReportError(CopyAttackError):
    """A marker that cannot be rendered: a missing file, an unknown renderer or option."""


@dataclass(frozen=True)
class Block:
    """One generated table of a markdown file: its opening marker's line (1-based), what
    lies between the markers now, and what its data renders to."""

    doc: Path
    line: int
    marker: str
    current: str
    generated: str


# --- renderers ---------------------------------------------------------------------------


def _mean_ci(row: dict[str, Any], metric: str, digits: int = 3) -> str:
    value = row["metrics"][metric]
    return f"{value['mean']:.{digits}f} ± {value['ci95']:.{digits}f}"


def _mean(row: dict[str, Any], metric: str, digits: int = 3) -> str:
    return f"{row['metrics'][metric]['mean']:.{digits}f}"


def _at_budget(row: dict[str, Any], budget: int) -> str:
    point = row["budget_curve"].get(str(budget))
    return "" if point is None else f"{point['HR@20']:.3f}"


def _density(row: dict[str, Any]) -> str:
    density = row.get("reward_density")
    return "" if density is None else f"{density:.2f}"


def _sampled_hr20_test(summary: dict[str, Any], method: str) -> dict[str, Any] | None:
    """The paired test of ``method`` (a learner) on sampled HR@20 after the whole budget."""
    for test in summary["paired_tests"]:
        if (test["learner"], test["metric"], test.get("budget")) == (
            method,
            "all/sampled/HR@20",
            None,
        ):
            return test
    return None


def _versus_best(summary: dict[str, Any], method: str) -> str:
    test = _sampled_hr20_test(summary, method)
    if test is None:
        return ""
    p = test.get("wilcoxon_p")
    return f"{test['mean_difference']:+.3f}" + ("" if p is None else f" ({p:.2f})")


def _versus_best_header(summary: dict[str, Any]) -> str:
    best = {
        test["best_other"]
        for test in summary["paired_tests"]
        if (test["metric"], test.get("budget")) == ("all/sampled/HR@20", None)
    }
    return f"vs {best.pop() if len(best) == 1 else 'the best other'} (Wilcoxon p)"


@dataclass(frozen=True)
class Column:
    header: Callable[[dict[str, Any]], str]
    cell: Callable[[dict[str, Any], str, dict[str, Any]], str]  # summary, method, row


def _fixed(header: str) -> Callable[[dict[str, Any]], str]:
    return lambda summary: header


# the columns of a table2 view: sampled protocol and all evaluation users unless named
COLUMNS = {
    "hr20": Column(_fixed("HR@20"), lambda s, m, row: _mean_ci(row, "all/sampled/HR@20")),
    "hr20@10": Column(_fixed("HR@20 at budget 10"), lambda s, m, row: _at_budget(row, 10)),
    "hr10": Column(_fixed("HR@10"), lambda s, m, row: _mean(row, "all/sampled/HR@10")),
    "ndcg20": Column(_fixed("NDCG@20"), lambda s, m, row: _mean(row, "all/sampled/NDCG@20")),
    "hr20_full": Column(
        _fixed("HR@20 full"), lambda s, m, row: _mean(row, "all/full/HR@20", digits=4)
    ),
    "hr10_full": Column(
        _fixed("HR@10 full"), lambda s, m, row: _mean(row, "all/full/HR@10", digits=4)
    ),
    "ndcg20_full": Column(
        _fixed("NDCG@20 full"), lambda s, m, row: _mean(row, "all/full/NDCG@20", digits=4)
    ),
    "items": Column(_fixed("items/profile"), lambda s, m, row: f"{row['items_per_profile']:.0f}"),
    "density": Column(_fixed("reward density"), lambda s, m, row: _density(row)),
    "queries": Column(
        _fixed("target queries per target (+ training)"),
        lambda s, m, row: f"{row['queries']:,.0f} + {row.get('amortised_queries', 0.0):,.0f}",
    ),
    "vs_best": Column(_versus_best_header, lambda s, m, row: _versus_best(s, m)),
}


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _single(data: list[Any]) -> Any:
    if len(data) != 1:
        raise DocsReportError(f"this view reads one data file; the marker names {len(data)}")
    return data[0]


def _list_option(options: dict[str, str], name: str) -> list[str] | None:
    return options[name].split(",") if name in options else None


def render_table2(data: list[Any], options: dict[str, str]) -> str:
    summary = _single(data)
    columns = _list_option(options, "columns")
    if columns is None:
        return format_table2(summary)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise DocsReportError(f"unknown column(s) {unknown}; known: {', '.join(COLUMNS)}")
    methods = _list_option(options, "methods") or list(summary["methods"])
    missing = [m for m in methods if m not in summary["methods"]]
    if missing:
        raise DocsReportError(f"no method(s) {missing} in the summary")
    picked = [COLUMNS[c] for c in columns]
    return _markdown(
        ["method", *(column.header(summary) for column in picked)],
        [
            [method, *(c.cell(summary, method, summary["methods"][method]) for c in picked)]
            for method in methods
        ],
    )


def render_learning_curve(data: list[Any], options: dict[str, str]) -> str:
    rows = _single(data)
    return _markdown(
        ["update", "target queries spent training", "injections", "HR@20 (sampled)"],
        [
            [
                row["update"],
                f"{int(row['training_queries']):,}",
                f"{int(row['training_injections']):,}",
                f"{float(row['HR@20']):.3f} ± {float(row['ci95']):.3f}",
            ]
            for row in rows
        ],
    )


def _reward(value: float) -> str:
    """Three decimals, or four below 0.01 (a nearly empty reward)."""
    return f"{value:.3f}" if value >= 0.01 else f"{value:.4f}"


def _settings(log: dict[str, Any]) -> str:
    attack = log["attack"]
    label = f"k {attack['k']}, lr {attack['lr']}"
    if attack.get("crafting_prior") is not None:
        label += f", `--crafting-prior {attack['crafting_prior']}`"
    if attack.get("entropy"):
        label += f", `--entropy {attack['entropy']}`"
    return label + f" ({len(log['validation_targets'])} validation targets)"


def render_pretrain(data: list[Any], options: dict[str, str]) -> str:
    updates = {tuple(s["update"] for s in log["snapshots"]) for log in data}
    if len(updates) != 1:
        raise DocsReportError(f"the logs' snapshots are at different updates: {sorted(updates)}")
    return _markdown(
        [
            "settings",
            "validation reward at updates " + " / ".join(map(str, updates.pop())),
            "policies' entropy, first -> last update",
        ],
        [
            [
                _settings(log),
                " / ".join(_reward(s["validation_reward"]) for s in log["snapshots"]),
                f"{log['history'][0]['mean_entropy']:.2f} -> "
                f"{log['history'][-1]['mean_entropy']:.2f}",
            ]
            for log in data
        ],
    )


# the probe's methods as the room tables name them
PROBE_NAMES = {
    "WithoutAttack": "Without",
    "RandomAttack": "Random",
    "InDomainControl": "in-domain control",
    "SelectionOracle": "popularity oracle",
    "GreedyOracle": "greedy oracle",
    "ObservedGreedyOracle": "observed greedy oracle",
    "RetrainGreedyOracle": "retrain-aware greedy oracle",
}


def _probe_hr20(
    result: dict[str, Any], budget: str, targets: int | None, protocol: str
) -> dict[str, float]:
    """HR@20 per method at ``budget`` under ``protocol`` (sampled or full): the probe's
    mean, or (sampled only) the mean over the draw's first ``targets`` targets."""
    if targets is None:
        return {m: row[f"hr20_{protocol}"] for m, row in result["frozen"][budget].items()}
    if protocol != "sampled":
        raise DocsReportError("room: targets= needs the sampled protocol (per-target HR)")
    per_target = result["per_target_hr20_sampled"][budget]
    short = [m for m, values in per_target.items() if len(values) < targets]
    if short:
        raise DocsReportError(f"{result['variant']}: fewer than {targets} targets for {short}")
    return {m: float(np.mean(values[:targets])) for m, values in per_target.items()}


def render_room(data: list[Any], options: dict[str, str]) -> str:
    results = [result for probe in data for result in probe["results"]]
    targets = int(options["targets"]) if "targets" in options else None
    protocol = options.get("protocol", "sampled")
    if protocol not in ("sampled", "full"):
        raise DocsReportError(f"room: protocol={protocol!r}, not sampled or full")
    digits = 3 if protocol == "sampled" else 4
    methods = list(dict.fromkeys(m for r in results for b in r["frozen"].values() for m in b))
    oracles = {"GreedyOracle", "RetrainGreedyOracle"} & set(methods)
    room = bool(oracles) and "TargetAttack100" in methods
    several = len(results) > 1
    rows = []

    def row_of(
        result: dict[str, Any], label: str, hr20: dict[str, float], oracle: str
    ) -> list[str]:
        row = [result["variant"].split(" (")[0]] if several else []
        row += [label, *(f"{hr20[m]:.{digits}f}" if m in hr20 else "" for m in methods)]
        if room:
            base = hr20["TargetAttack100"]
            row.append(f"{hr20[oracle] / base:.2f}x" if base and oracle in hr20 else "")
        return row

    for result in results:
        # frozen, the room is the frozen oracle's; retrained, the retrain-aware one's
        # where it ran (the frozen choice fine-tuned in is only a lower bound)
        for budget in result["frozen"]:
            hr20 = _probe_hr20(result, budget, targets, protocol)
            rows.append(row_of(result, budget, hr20, "GreedyOracle"))
        retrained = result.get("retrained")
        # the retrained summary covers the draw's first retrain_targets: shown where the
        # frozen rows cover at least those
        if retrained and (targets is None or targets >= result["retrain_targets"]):
            label = f"{max(result['frozen'], key=int)}, retrained ({result['retrain_targets']})"
            hr20 = {m: row[f"hr20_{protocol}"] for m, row in retrained.items()}
            oracle = "RetrainGreedyOracle" if "RetrainGreedyOracle" in hr20 else "GreedyOracle"
            rows.append(row_of(result, label, hr20, oracle))
    header = ["victim"] if several else []
    header += ["budget", *(PROBE_NAMES.get(m, m) for m in methods)]
    return _markdown(header + (["room"] if room else []), rows)


VICTIM_NAMES = {"pinsage": "PinSage", "lightgcn": "LightGCN", "itemknn": "item-kNN", "mf": "MF"}


def _grid_row(
    prefix: list[str], methods: list[str], table: dict[str, dict[str, float]]
) -> list[str]:
    """One row; a table of sampled HR@20 only (the frozen model on the retrained targets,
    from the per-target figures) leaves the full-ranking and pretend-user cells empty."""
    base, attack = table["WithoutAttack"], table["TargetAttack100"]
    lift = attack["hr20_sampled"] / base["hr20_sampled"] if base["hr20_sampled"] else None
    measured = "hr20_full" in base
    return [
        *prefix,
        *(f"{table[m]['hr20_sampled']:.3f}" for m in methods),
        f"{lift:.2f}x" if lift is not None else "-",
        f"{base['hr20_full']:.4f} -> {attack['hr20_full']:.4f}" if measured else "",
        f"{base['pretend_top100']:.1f} -> {attack['pretend_top100']:.1f}" if measured else "",
    ]


def render_probe(data: list[Any], options: dict[str, str]) -> str:
    """The probe grid: per data file (``labels=`` names them, in order) and victim, the
    frozen model at each budget and (where run) scheduled retraining, after the frozen
    model's sampled HR@20 on the same (first) targets. Every probe must have
    measured the same methods, WithoutAttack and TargetAttack100 among them."""
    labels = _list_option(options, "labels")
    if labels is None or len(labels) != len(data):
        raise DocsReportError(f"probe: labels= needs one label per data file ({len(data)})")
    methods: list[str] | None = None
    rows = []
    for label, probe in zip(labels, data, strict=True):
        for result in probe["results"]:
            victim = VICTIM_NAMES.get(result["victim"], result["victim"])
            measured = list(next(iter(result["frozen"].values())))
            methods = methods or measured
            if measured != methods or not {"WithoutAttack", "TargetAttack100"} <= set(methods):
                raise DocsReportError(
                    f"probe: {label} {victim} measured {', '.join(measured)}; the grid needs "
                    f"the same methods in each probe, WithoutAttack and TargetAttack100 among them"
                )
            targets = len(next(iter(result["per_target_hr20_sampled"].values()))["WithoutAttack"])
            for budget, table in result["frozen"].items():
                rows.append(
                    _grid_row([label, victim, f"frozen ({targets})", budget], methods, table)
                )
            if "retrained" in result:
                if "retrain_targets" not in result:
                    raise DocsReportError(f"probe: {label} {victim}: no retrain_targets")
                n = result["retrain_targets"]
                budget = max(result["frozen"], key=int)
                # the frozen model on the same targets: the retrained row's comparison
                per_target = result["per_target_hr20_sampled"][budget]
                same = {m: {"hr20_sampled": float(np.mean(per_target[m][:n]))} for m in methods}
                rows.append(
                    _grid_row([label, victim, f"frozen (first {n})", budget], methods, same)
                )
                threat = f"retrained ({n})"
                rows.append(
                    _grid_row([label, victim, threat, budget], methods, result["retrained"])
                )
    header = ["draw", "victim", "threat (targets)", "budget",
              *(PROBE_NAMES.get(m, m) for m in methods or []), "TargetAttack100 lift",
              "full HR@20", "pretend top-100"]  # fmt: skip
    return _markdown(header, rows)


def render_rooms(data: list[Any], options: dict[str, str]) -> str:
    """Where the room is: per data file (``labels=`` names the draws, in order) and victim,
    the greedy oracle's room at each budget, under scheduled retraining (the retrain-aware
    oracle's, or ">=" a lower bound: the best choice of holders fine-tuned in, the greedy
    oracle's frozen one or the popularity oracle's, named when it is the latter), and at
    the largest budget the full HR@20 and pretend users with the target in their
    top-100, greedy oracle against TargetAttack100. "-": undefined (TargetAttack100 at 0)
    or not run."""
    labels = _list_option(options, "labels")
    if labels is None or len(labels) != len(data):
        raise DocsReportError(f"rooms: labels= needs one label per data file ({len(data)})")
    budgets = sorted({b for probe in data for r in probe["results"] for b in r["frozen"]}, key=int)

    def ratio(value: float | None, bound: bool = False) -> str:
        return "-" if value is None else f"{'>= ' if bound else ''}{value:.2f}x"

    rows = []
    for label, probe in zip(labels, data, strict=True):
        for result in probe["results"]:
            frozen = result["frozen"]
            last = frozen[max(frozen, key=int)]
            per_target = next(iter(result["per_target_hr20_sampled"].values()))
            targets = len(next(iter(per_target.values())))
            room = result.get("room", {})
            chooser = ""
            if "retrain_aware_room" in result:
                retrained = ratio(result["retrain_aware_room"])
            elif "retrained_room" in result:
                bound, chooser = _retrained_bound(result)
                retrained = ratio(bound, bound=True)
            else:
                retrained = "-"
            if "retrain_targets" in result and retrained != "-":
                retrained += f" ({result['retrain_targets']}{chooser})"
            greedy, base = last.get("GreedyOracle"), last.get("TargetAttack100")
            full = top = "-"
            if greedy and base:
                full = f"{greedy['hr20_full']:.4f} / {base['hr20_full']:.4f}"
                top = f"{greedy['pretend_top100']:.1f} / {base['pretend_top100']:.1f}"
            rows.append([
                label, VICTIM_NAMES.get(result["victim"], result["victim"]), str(targets),
                result.get("room_protocol", "sampled"), *(ratio(room.get(b)) for b in budgets),
                retrained, full, top,
            ])  # fmt: skip
    header = ["draw", "victim", "targets", "protocol", *(f"room at {b}" for b in budgets),
              "room retrained (targets)", "full HR@20 greedy / TA100",
              "pretend top-100 greedy / TA100"]  # fmt: skip
    return _markdown(header, rows)


def _retrained_bound(result: dict[str, Any]) -> tuple[float | None, str]:
    """The room under retraining bounded below by the choices the probe fine-tuned in: the
    greedy oracle's frozen one (``retrained_room``), or the popularity oracle's where it
    beats it (frozen MF ties every greedy trial, so its greedy choice is arbitrary)."""
    bound = result["retrained_room"]
    retrained = result.get("retrained", {})
    base = retrained.get("TargetAttack100", {}).get("hr20_sampled")
    popular = retrained.get("SelectionOracle", {}).get("hr20_sampled")
    if base and popular is not None and (bound is None or popular / base > bound):
        return popular / base, "; popularity oracle"
    return bound, ""


def render_stealth(data: list[Any], options: dict[str, str]) -> str:
    summary = _single(data)
    table = [line for line in format_stealth(summary).splitlines() if line.startswith("|")]
    return "\n".join(table) + "\n"


def render_defences(data: list[Any], options: dict[str, str]) -> str:
    """Defended stealth runs, two rows each: the share of each attack's profiles its
    defence quarantined, and the share of the undefended sampled HR@20 lift it kept."""
    rows: list[list[str]] = []
    methods: list[str] = []
    for summary in data:
        if "lift_kept" not in summary:
            raise DocsReportError("defences: a stealth summary without a defence (no lift_kept)")
        attacks = {m: r for m, r in summary["methods"].items() if m != "WithoutAttack"}
        methods = methods or list(attacks)
        defence = summary["config"]["defence"]
        quarantined = [attacks[m]["quarantined_share"] for m in methods]
        kept = [summary["lift_kept"].get(m) for m in methods]
        rows.append([defence, "profiles quarantined", *(f"{q:.2f}" for q in quarantined)])
        rows.append(
            [defence, "undefended lift kept", *("-" if k is None else f"{k:.2f}" for k in kept)]
        )
    # trained against the defended world: the adaptive attacker
    names = [f"{m} (adaptive)" if m == "CopyAttack" else m for m in methods]
    return _markdown(["defence", "", *names], rows)


def _planted_name(kind: str) -> str:
    """A generated kind as its attack is called (``random``: RandomFake); copies as they are."""
    return kind if kind.startswith("copy") else f"{kind.capitalize()}Fake"


def render_detectors(data: list[Any], options: dict[str, str]) -> str:
    result = _single(data)
    kinds = list(result["distances"])
    detectors = [
        key for key, value in result.items() if isinstance(value, dict) and "fit_seconds" in value
    ]
    rows = [
        [
            name,
            f"{result[name]['fit_seconds']:.1f}",
            f"{result[name]['held_out_false_positive_rate']:.3f}",
            *(
                f"{result[name][kind]['roc_auc']:.2f} ({result[name][kind]['recall']:.2f})"
                for kind in kinds
            ),
        ]
        for name in detectors
    ]
    distances = result["distances"]
    rows.append(
        [
            "JS / TV distance",
            "",
            "",
            *(f"{distances[k]['js']:.2f} / {distances[k]['tv']:.2f}" for k in kinds),
        ]
    )
    header = ["detector", "fit s", "held-out FPR", *map(_planted_name, kinds)]
    return _markdown(header, rows)


# the cohorts of a model's test metrics, as the quality tables name them
COHORT_LABELS: dict[Cohort, str] = {
    ALL_USERS: "all test cases",
    ACTIVE_USERS: "users with 3+ training items",
}
# how `train --json` spelled a cohort before the cohorts had one name (kept runs use it)
LEGACY_COHORT_KEYS: dict[Cohort, str] = {ACTIVE_USERS: "users_with_3+_train"}


def _cohort_metrics(result: dict[str, Any], cohort: Cohort) -> dict[str, Any]:
    legacy = LEGACY_COHORT_KEYS.get(cohort)
    if cohort not in result and legacy in result:
        return result[legacy]
    return result[cohort]


def render_quality(data: list[Any], options: dict[str, str]) -> str:
    # several outputs (victims trained on one scenario): their models in order, a model
    # (a baseline trained beside each victim) once
    models: dict[str, Any] = {}
    for output in data:
        for name, result in output.items():
            models.setdefault(name, result)
    rows = []
    for cohort, label in COHORT_LABELS.items():
        for position, (name, result) in enumerate(models.items()):
            metrics = _cohort_metrics(result, cohort)
            rows.append(
                [
                    label if position == 0 else "",
                    name + (f" (L2 {result['l2']:,g})" if "l2" in result else ""),
                    f"{metrics['sampled']['HR@10']:.3f}",
                    *(f"{metrics['full'][m]:.3f}" for m in ("HR@10", "NDCG@10", "HR@20")),
                ]
            )
    header = ["cohort", "model", "HR@10 sampled", "HR@10 full", "NDCG@10 full", "HR@20 full"]
    return _markdown(header, rows)


def _throughput_row(label: str, connections: str, cells: Sequence[dict[str, Any]]) -> list[str]:
    """One row of the throughput table; each of ``cells`` is one run's result at one
    concurrency, and a value of several runs is their median."""

    def median(route: str, key: str) -> float:
        return float(np.median([cell[route][key] for cell in cells]))

    ratio = float(np.median([cell["topk_over_noop_rps"] for cell in cells]))
    return [
        label,
        connections,
        f"{median('noop', 'rps'):,.0f}",
        f"{median('topk', 'rps'):,.0f}",
        f"**{ratio:.2f}x**",
        f"{median('noop', 'p50_ms'):.1f} / {median('noop', 'p99_ms'):.1f} ms",
        f"{median('topk', 'p50_ms'):.1f} / {median('topk', 'p99_ms'):.1f} ms",
    ]


def render_throughput(data: list[Any], options: dict[str, str]) -> str:
    concurrencies = list(data[0]["concurrency"])
    rows = [
        _throughput_row(f"run {number}", connections, [run["concurrency"][connections]])
        for number, run in enumerate(data, 1)
        for connections in concurrencies
    ]
    rows += [
        _throughput_row(
            f"median of {len(data)}",
            connections,
            [run["concurrency"][connections] for run in data],
        )
        for connections in concurrencies
    ]
    header = [
        "run",
        "connections",
        "no-op req/s",
        "/topk req/s",
        "/topk vs no-op",
        "no-op p50 / p99",
        "/topk p50 / p99",
    ]
    return _markdown(header, rows)


Renderer = Callable[[list[Any], dict[str, str]], str]
RENDERERS: dict[str, Renderer] = {
    "table2": render_table2,
    "learning-curve": render_learning_curve,
    "pretrain": render_pretrain,
    "room": render_room,
    "probe": render_probe,
    "rooms": render_rooms,
    "stealth": render_stealth,
    "defences": render_defences,
    "detectors": render_detectors,
    "quality": render_quality,
    "throughput": render_throughput,
}


# --- the data behind a marker ------------------------------------------------------------


def load_data(path: Path) -> Any:
    """A summary (.json), the probe's last JSON line (.jsonl) or CSV rows (.csv)."""
    if not path.is_file():
        raise DocsReportError(f"{path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix == ".jsonl":
        return json.loads(text.strip().splitlines()[-1])
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    raise DocsReportError(f"{path}: no reader for {path.suffix!r} (.json, .jsonl, .csv)")


def check_run_record(path: Path) -> None:
    """The run folder of a data file says what made it (``RUN_FILE``)."""
    record_path = path.parent / RUN_FILE
    if not record_path.is_file():
        raise DocsReportError(f"{path}: no {RUN_FILE} beside it (command, model, machine, date)")
    record = json.loads(record_path.read_text())
    missing = [key for key in RUN_KEYS if key not in record]
    entry = record.get("files", {}).get(path.name)
    if entry is None:
        missing.append(f"files/{path.name}")
    else:
        missing += [f"files/{path.name}/{key}" for key in RUN_FILE_KEYS if key not in entry]
    if missing:
        raise DocsReportError(f"{record_path}: missing {', '.join(missing)}")


def _options(text: str) -> dict[str, str]:
    options = {}
    for word in text.split():
        key, equals, value = word.partition("=")
        if not equals or not value:
            raise DocsReportError(f"option {word!r} is not key=value")
        options[key] = value
    return options


def render_marker(doc: Path, marker: str) -> str:
    """What the block opened by ``marker`` (a line of ``doc``) holds: its table between
    two blank lines."""
    match = OPEN.match(marker)
    if match is None:
        raise DocsReportError(f"not a generated-table marker: {marker!r}")
    renderer = RENDERERS.get(match["renderer"])
    if renderer is None:
        raise DocsReportError(
            f"unknown renderer {match['renderer']!r}; known: {', '.join(RENDERERS)}"
        )
    paths = [doc.parent / p for p in match["paths"].split()]
    data = [load_data(path) for path in paths]
    for path in paths:
        check_run_record(path)
    return "\n" + renderer(data, _options(match["options"])) + "\n"


def _indented(text: str, indent: str) -> str:
    return "".join(indent + line if line.strip() else line for line in text.splitlines(True))


def blocks(doc: Path) -> list[Block]:
    """Every generated table of ``doc``, rendered from its data."""
    lines = doc.read_text().splitlines(keepends=True)
    found = []
    opened: int | None = None
    for number, line in enumerate(lines):
        text = line.strip()
        if text.startswith("<!-- generated:"):
            if opened is not None:
                raise DocsReportError(
                    f"{doc}:{number + 1}: a marker inside the block of line {opened + 1}"
                )
            opened = number
        elif text == END:
            if opened is None:
                raise DocsReportError(f"{doc}:{number + 1}: {END} without an opening marker")
            marker = lines[opened].strip()
            indent = lines[opened][: len(lines[opened]) - len(lines[opened].lstrip())]
            try:
                generated = _indented(render_marker(doc, marker), indent)
            except KeyError as error:  # data of another shape than the view reads
                raise DocsReportError(f"{doc}:{opened + 1}: no {error} in its data") from error
            except (DocsReportError, ValueError) as error:
                raise DocsReportError(f"{doc}:{opened + 1}: {error}") from error
            found.append(
                Block(doc, opened + 1, marker, "".join(lines[opened + 1 : number]), generated)
            )
            opened = None
    if opened is not None:
        raise DocsReportError(f"{doc}:{opened + 1}: no {END} after the marker")
    return found


def documents(root: Path) -> list[Path]:
    """The markdown files that may hold generated tables: the README and ``docs/*.md``."""
    if not (root / "docs").is_dir():
        raise DocsReportError(f"{root} has no docs/ folder: run from the repository's root")
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.exists()]


def historical(root: Path) -> list[str]:
    """Where a table typed from a run whose data was not kept sits (``file:line``)."""
    return [
        f"{doc}:{number}"
        for doc in documents(root)
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        if line.strip() == HISTORICAL
    ]


def stale(root: Path) -> list[Block]:
    """The generated tables whose committed text differs from their data's."""
    return [
        block
        for doc in documents(root)
        for block in blocks(doc)
        if block.current != block.generated
    ]


def regenerate(root: Path) -> list[Block]:
    """Rewrite every stale table in place; the blocks rewritten. Every marker of every file
    is rendered before any file is written, so an error changes nothing."""
    changed = stale(root)
    for doc in dict.fromkeys(block.doc for block in changed):
        lines = doc.read_text().splitlines(keepends=True)
        for block in sorted((b for b in changed if b.doc == doc), key=lambda b: -b.line):
            end = block.line + len(block.current.splitlines())
            lines[block.line : end] = [block.generated]
        doc.write_text("".join(lines))
    return changed


# the summaries a finished experiment writes: ``table2`` (and ``learning-curve``'s
# baselines) and ``stealth``
SUMMARIES = ("table2.json", "stealth.json")


def keep_run(run: Path, dest: Path, command: str) -> Path:
    """Copy a harness run's summary (``RUN/table2.json`` or ``RUN/stealth.json``, without
    its per-cell records) into ``dest`` with its record: the model and scenario
    fingerprints of ``RUN/run.json``, the machine the summary names, the summary's date and
    ``command``. Refuses to overwrite."""
    key_path = run / "run.json"
    found = [run / name for name in SUMMARIES if (run / name).is_file()]
    if len(found) != 1 or not key_path.is_file():
        raise DocsReportError(
            f"{run} is not a finished harness run: it needs run.json and one of "
            f"{', '.join(SUMMARIES)}"
        )
    summary_path = found[0]
    if any((dest / name).exists() for name in (*SUMMARIES, RUN_FILE)):
        raise DocsReportError(f"{dest} already holds a kept run; choose another folder")
    summary = json.loads(summary_path.read_text())
    summary.pop("cells", None)
    key = json.loads(key_path.read_text())
    written = datetime.date.fromtimestamp(summary_path.stat().st_mtime)
    name = summary_path.name
    record = {
        "machine": summary.get("machine", "not recorded"),
        "model": key["model"],
        "scenario": key["scenario"],
        "files": {name: {"command": command, "date": written.isoformat(), "from": str(run)}},
    }
    dest.mkdir(parents=True, exist_ok=True)
    (dest / name).write_text(json.dumps(summary, indent=1) + "\n")
    (dest / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return dest / name


# --- the command -------------------------------------------------------------------------


def add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="regenerate the docs' tables from the data of the runs behind them"
    )
    report.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail naming each table that differs from its data",
    )
    report.add_argument(
        "--root", type=Path, default=Path("."), help="the repository (README.md and docs/)"
    )
    report.add_argument(
        "--keep",
        nargs=2,
        type=Path,
        metavar=("RUN", "DEST"),
        help="instead, copy a harness run's summary and record into DEST (e.g. docs/results/X)",
    )
    # not dest "command": that is the subcommand's name
    report.add_argument(
        "--command", dest="run_command", help="with --keep: the command that made the run"
    )


def run_report(args: argparse.Namespace) -> int:
    """``copyattack report [--check]``: 1 if ``--check`` found a table unlike its data."""
    if args.keep:
        if not args.run_command:
            raise DocsReportError("--keep needs --command: the command that made the run")
        run, dest = args.keep
        kept = keep_run(run, dest, args.run_command)
        print(f"wrote {kept} and its {RUN_FILE}: name it in a marker, then copyattack report")
        return 0
    changed = stale(args.root) if args.check else regenerate(args.root)
    state = "differs from its data" if args.check else "regenerated"
    for block in changed:
        print(f"{block.doc}:{block.line}: {state}: {block.marker}")
    if not changed:
        print("every generated table equals what its data gives")
    print(f"{len(historical(args.root))} tables marked historical (data not kept)")
    return 1 if args.check and changed else 0
