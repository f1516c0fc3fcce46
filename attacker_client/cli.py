"""``copyattack``: the data and scenario commands of ``shared``, the experiments, the demo.

    copyattack demo [--pair primary|reverse|synthetic] [--targets N] [--episodes E]

    copyattack experiment table2 --server URL --scenario DIR [--admin-token T]
        [--methods M ...] [--targets N] [--seeds S ...] [--budget B] [--out DIR]
    copyattack experiment depth ... [--depths 1 2 3 4]          (Fig. 3)
    copyattack experiment popularity ... [--deciles 0 1 ... 9]  (Fig. 4)
    copyattack experiment pretrain --scenario DIR [--backend server|surrogate] [--server URL]
        [--targets N] [--validation-targets N] [--min-holders N] [--passes N] --out DIR
    copyattack experiment table2 ... --methods ... CopyAttack-Amortised CopyAttack-Surrogate
        --amortised-policy DIR/policy-NNNN.pt --surrogate-policy DIR/policy-NNNN.pt
    copyattack experiment learning-curve --pretrained DIR [--baselines table2.json] ...
    copyattack experiment stealth --server URL --scenario DIR [--detectors D ...] [--json]
        (table2's options; generated-profile attacks and copies, judged by the detectors)

    copyattack experiment table2|depth|popularity|learning-curve ... --ray [auto|ADDRESS]
        --artifact MODEL.pt [--replicas N]     (the cells on server replicas on Ray)

    copyattack report [--check] [--root DIR]   (the docs' tables from their runs' data)

The experiments' options are the fields of ExperimentConfig, CopyAttackArgs and
PretrainArgs (``--help`` shows each with its default). The admin token also comes from
``RECSYS_ADMIN_TOKEN``. A run writes table2.md/.csv/.json, budget_curve.csv/.png and
cells.jsonl into ``--out``; run it again to resume.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, overload

from attacker_client._exceptions import APIError
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.demo import DemoArgs, run_demo
from attacker_client.docs_report import add_report_command, run_report
from attacker_client.harness import (
    ExperimentConfig,
    Servers,
    run_learning_curve,
    run_sweep,
    run_table2,
)
from attacker_client.pretrain import PretrainArgs, run_pretrain
from attacker_client.results import CellResult, read_cells
from attacker_client.stealth import STEALTH_METHODS, run_stealth
from shared import cli as shared_cli
from shared.errors import CopyAttackError
from shared.options import add_options, from_options, positive
from shared.schemas import DETECTOR_NAMES

N = TypeVar("N")  # a namespace class of parse_known_args's caller


class _CellsParser(shared_cli.Parser):
    """An experiment that runs cells needs --server, unless it runs them on Ray (--ray):
    argparse has no either-or of two options, so it is checked once parsed."""

    # argparse's own overloads: a namespace given is filled and returned, of its class
    @overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(self, args: Iterable[str] | None, namespace: N) -> tuple[N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: N) -> tuple[N, list[str]]: ...

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "ray", "") is None and not parsed.server:
            self.error(
                f"the following arguments are required: --server (or ${SERVER_VARIABLE}, or --ray)"
            )
        return parsed, extras


def add_attack_commands(commands: argparse._SubParsersAction) -> None:
    add_report_command(commands)
    demo = commands.add_parser(
        "demo", help="prepare, serve and attack on this machine: a quick Table 2 (make demo)"
    )
    add_options(demo, DemoArgs, exclude=("methods", "concurrency"))
    experiment = commands.add_parser("experiment", help="run the paper's experiments over HTTP")
    kinds = experiment.add_subparsers(
        dest="experiment_command", required=True, parser_class=_CellsParser
    )
    table2 = kinds.add_parser("table2", help="every method on every target item (Table 2)")
    _add_run_options(table2, Path("results/table2"))
    stealth = kinds.add_parser(
        "stealth", help="attacks judged by the server's shilling detectors (issue 19)"
    )
    _add_run_options(stealth, Path("results/stealth"), methods=STEALTH_METHODS)
    add_options(stealth, ExperimentConfig, only=("detectors", "defence"),
                defaults={"detectors": DETECTOR_NAMES})  # fmt: skip
    stealth.add_argument("--undefended", type=Path, metavar="DIR",
                         help="with --defence: the same run without defence (its --out); "
                              "states the share of each attack's lift it kept")  # fmt: skip
    stealth.add_argument("--json", action="store_true",
                         help="no progress bar; print the summary as JSON")  # fmt: skip
    depth = kinds.add_parser("depth", help="Table 2 per clustering-tree depth (Fig. 3)")
    _add_run_options(depth, Path("results/depth"))
    depth.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4],
                       help="tree depths to sweep")  # fmt: skip
    popularity = kinds.add_parser("popularity", help="Table 2 per popularity decile (Fig. 4)")
    _add_run_options(popularity, Path("results/popularity"))
    popularity.add_argument("--deciles", type=int, nargs="+", default=list(range(10)),
                            help="popularity deciles to sweep")  # fmt: skip
    pretrain = kinds.add_parser(
        "pretrain",
        help="train one policy across training targets (server or surrogate), with snapshots",
    )
    add_options(pretrain, CopyAttackArgs)
    _add_server(pretrain, "base URL of the service (backend server)", required=False)
    pretrain.add_argument("--scenario", type=Path, required=True, help="the scenario folder")
    pretrain.add_argument("--out", type=Path, default=Path("results/pretrain"),
                          help="policy snapshots and pretrain.json")  # fmt: skip
    pretrain.add_argument("--cache-dir", type=Path, help="where the source MF is kept")
    pretrain.add_argument("--json", action="store_true", help="no progress; the summary as JSON")
    add_options(pretrain, PretrainArgs)
    curve = kinds.add_parser(
        "learning-curve",
        help="Table 2 of each snapshot of a pretrained policy on the evaluated targets",
    )
    _add_run_options(curve, Path("results/learning_curve"))
    curve.add_argument("--pretrained", type=Path, required=True, help="a pretrain --out folder")
    curve.add_argument(
        "--baselines", type=Path, help="a table2.json whose methods are drawn as flat lines"
    )


# the service's base URL: the same variable for the CLI, the README's SDK example and the
# notebook (compose sets it for the notebook)
SERVER_VARIABLE = "COPYATTACK_SERVER"
# ExperimentConfig's fields that are not an option of every command that runs cells:
# the service (``_add_server``: from the environment, or Ray's replicas), the pretrained
# policies (an option per kind), the swept decile (popularity --deciles), the progress bar
# (stealth --json), the detectors and the defence (stealth's options)
_NOT_RUN_OPTIONS = ("server", "admin_token", "ready_timeout", "policies", "decile", "progress",
                    "detectors", "defence")  # fmt: skip


def _add_server(parser: argparse.ArgumentParser, help_text: str, *, required: bool) -> None:
    default = os.environ.get(SERVER_VARIABLE) or None
    parser.add_argument("--server", default=default, required=required and default is None,
                        help=f"{help_text} (default: ${SERVER_VARIABLE})")  # fmt: skip
    parser.add_argument("--admin-token", default=os.environ.get("RECSYS_ADMIN_TOKEN"),
                        help="default: $RECSYS_ADMIN_TOKEN")  # fmt: skip
    add_options(parser, ExperimentConfig, only=("ready_timeout",))


def _add_run_options(parser: argparse.ArgumentParser, out: Path, **defaults: Any) -> None:
    """The options of a command that runs cells: ExperimentConfig's, with the attack's
    (``defaults``: this command's own)."""
    _add_server(parser, "base URL of the recommender service (unless --ray)", required=False)
    add_options(parser, ExperimentConfig, exclude=_NOT_RUN_OPTIONS,
                defaults={"out": out, **defaults})  # fmt: skip
    for kind in ("amortised", "surrogate"):
        parser.add_argument(
            f"--{kind}-policy",
            type=Path,
            help=f"the saved policy of CopyAttack-{kind.title()}[+FT]",
        )
    cluster = parser.add_argument_group("on a Ray cluster (the extra: pip install -e '.[ray]')")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="auto|ADDRESS",
        help="run the cells on replicas of --artifact on a Ray cluster instead of --server: "
        "auto joins this machine's cluster or starts a local one",
    )
    cluster.add_argument(
        "--artifact", type=Path, help="with --ray: the model.pt every replica serves"
    )
    cluster.add_argument(
        "--replicas",
        type=positive,
        help="with --ray: server replicas, one actor and 1 CPU each (default: the cluster's CPUs); "
        "--concurrency worlds at once on each",
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C (servers started here stop), through SIGINT's handler:
    inside ``asyncio.run`` that one cancels the main task, so no task is left pending."""
    on_sigint = signal.getsignal(signal.SIGINT)
    if not callable(on_sigint):
        raise KeyboardInterrupt
    on_sigint(signal.SIGINT, frame)


def build_parser() -> argparse.ArgumentParser:
    return shared_cli.build_parser(add_attack_commands)


def run_demo_command(args: argparse.Namespace) -> None:
    demo = from_options(DemoArgs, args)
    # SIGTERM (a CI timeout, an IDE's stop) unwinds like Ctrl-C, so the server stops
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        run_demo(demo)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def run_pretrain_command(args: argparse.Namespace) -> int:
    try:
        pretrain_args = from_options(PretrainArgs, args)
    except ValueError as exc:
        raise CopyAttackError(str(exc)) from None
    summary = asyncio.run(
        run_pretrain(
            args.scenario,
            args.out,
            from_options(CopyAttackArgs, args),
            pretrain_args,
            server=args.server,
            admin_token=args.admin_token,
            cache_dir=args.cache_dir,
            progress=not args.json,
            ready_timeout=args.ready_timeout,
        )
    )
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    else:
        print(
            f"wrote {args.out}/pretrain.json and {len(summary['snapshots'])} policy snapshots "
            f"({summary['queries']} target queries, {summary['injections']} injections, "
            f"{summary['seconds']} s)"
        )
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    if args.experiment_command == "pretrain":
        return run_pretrain_command(args)
    if args.ray is None:
        if not args.admin_token:
            raise CopyAttackError("the admin token: --admin-token or RECSYS_ADMIN_TOKEN")
        if args.artifact or args.replicas:
            raise CopyAttackError("--artifact and --replicas go with --ray")
        return _run_cells(args, args.server, args.admin_token, None)
    if args.artifact is None:
        raise CopyAttackError("--ray needs --artifact: the model.pt every replica serves")
    from attacker_client.cluster import RayServers  # imports Ray: only with --ray

    # each replica has its own admin token; --server names the cluster in the run's record
    with RayServers(args.artifact, args.ray, args.replicas).started() as servers:
        return _run_cells(args, f"ray:{args.ray}", "", servers)


def _undefended_cells(args: argparse.Namespace) -> list[CellResult] | None:
    """The cells of the run ``--undefended`` names (None without it), read and checked
    before the defended run starts."""
    if args.undefended is None:
        return None
    if args.defence == "none":
        raise CopyAttackError("--undefended goes with --defence: it is the defended run's baseline")
    cells, record = args.undefended / "cells.jsonl", args.undefended / "run.json"
    if not cells.is_file() or not record.is_file():
        raise CopyAttackError(
            f"--undefended {args.undefended}: no cells.jsonl and run.json there "
            "(it should be the --out folder of a stealth run without --defence)"
        )
    defence = json.loads(record.read_text()).get("defence", "none")
    if defence != "none":
        raise CopyAttackError(f"--undefended {args.undefended}: that run was defended ({defence})")
    return read_cells(cells)


def experiment_config(args: argparse.Namespace, server: str, admin_token: str) -> ExperimentConfig:
    """The run's settings: its options, the service it runs on."""
    return from_options(
        ExperimentConfig,
        args,
        server=server,
        admin_token=admin_token,
        progress=not getattr(args, "json", False),
        policies={
            kind: path
            for kind in ("amortised", "surrogate")
            if (path := getattr(args, f"{kind}_policy")) is not None
        },
    )


def _run_cells(
    args: argparse.Namespace, server: str, admin_token: str, servers: Servers | None
) -> int:
    config = experiment_config(args, server, admin_token)
    if args.experiment_command == "learning-curve":
        rows = asyncio.run(run_learning_curve(config, args.pretrained, args.baselines, servers))
        print(f"wrote {args.out}/learning_curve.csv and .png ({len(rows)} snapshots)")
        return 0
    if args.experiment_command == "depth":
        asyncio.run(run_sweep(config, "depth", args.depths, servers))
        print(f"wrote {args.out}/depth_sweep.csv and .png")
        return 0
    if args.experiment_command == "popularity":
        asyncio.run(run_sweep(config, "decile", args.deciles, servers))
        print(f"wrote {args.out}/decile_sweep.csv and .png")
        return 0
    if args.experiment_command == "stealth":
        stealth = asyncio.run(run_stealth(config, servers, _undefended_cells(args)))
        if args.json:
            print(json.dumps({k: v for k, v in stealth.items() if k != "config"}))
        else:
            print((args.out / "stealth.md").read_text())
            print(f"wrote {args.out}/stealth.md, .csv, .json, .png, cells.jsonl "
                  f"({stealth['wall_seconds_this_run']} s)")  # fmt: skip
        return 0
    summary = asyncio.run(run_table2(config, servers))
    print((args.out / "table2.md").read_text())
    print(
        f"wrote {args.out}/table2.md, .csv, .json and budget_curve.csv/.png "
        f"({summary.wall_seconds_this_run} s)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> int:
        if args.command == "experiment":
            return run_experiment(args)
        if args.command == "demo":
            run_demo_command(args)
            return 0
        if args.command == "report":
            return run_report(args)
        return shared_cli.run(args)

    return shared_cli.run_command("copyattack", command, (CopyAttackError, APIError))


if __name__ == "__main__":
    sys.exit(main())
