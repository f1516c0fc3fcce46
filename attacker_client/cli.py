"""``copyattack``: the data and scenario commands of ``shared``, the experiments, the demo.

    copyattack demo [--pair primary|reverse|synthetic] [--targets N] [--episodes E]

    copyattack experiment table2 --server URL --scenario DIR [--admin-token T]
        [--methods M ...] [--targets N] [--seeds S ...] [--budget B] [--out DIR]
    copyattack experiment depth ... [--depths 1 2 3 4]          (Fig. 3)
    copyattack experiment popularity ... [--deciles 0 1 ... 9]  (Fig. 4)
    copyattack experiment pretrain --scenario DIR [--backend server|surrogate] [--server URL]
        [--targets 40] [--validation-targets 10] [--min-holders N] [--passes 3] --out DIR
    copyattack experiment table2 ... --methods ... CopyAttack-Amortised CopyAttack-Surrogate
        --amortised-policy DIR/policy-NNNN.pt --surrogate-policy DIR/policy-NNNN.pt
    copyattack experiment learning-curve --pretrained DIR [--baselines table2.json] ...
    copyattack experiment stealth --server URL --scenario DIR [--detectors D ...] [--json]
        (table2's options; generated-profile attacks and copies, judged by the detectors)

    copyattack experiment table2|depth|popularity|learning-curve ... --ray [auto|ADDRESS]
        --artifact MODEL.pt [--replicas N]     (the cells on server replicas on Ray)

    copyattack report [--check] [--root DIR]   (the docs' tables from their runs' data)

The admin token also comes from ``RECSYS_ADMIN_TOKEN``. A run writes table2.md/.csv/.json,
budget_curve.csv/.png and cells.jsonl into ``--out``; run it again to resume.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from attacker_client._exceptions import APIError
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.demo import DemoArgs, run_demo
from attacker_client.docs_report import add_report_command, run_report
from attacker_client.harness import (
    ALL_METHODS,
    METHODS,
    ExperimentConfig,
    Servers,
    run_learning_curve,
    run_sweep,
    run_table2,
)
from attacker_client.pretrain import PretrainArgs, run_pretrain
from attacker_client.readiness import READY_TIMEOUT
from attacker_client.stealth import STEALTH_METHODS, run_stealth
from shared import cli as shared_cli
from shared.datasets.pair import NAMED_PAIRS
from shared.errors import CopyAttackError
from shared.profiles import WINDOW_SHARES
from shared.schemas import DETECTOR_NAMES


class _CellsParser(shared_cli.Parser):
    """An experiment that runs cells needs --server, unless it runs them on Ray (--ray):
    argparse has no either-or of two options, so it is checked once parsed."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
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
    demo.add_argument("--pair", choices=sorted(NAMED_PAIRS), default=DemoArgs.pair,
                      help="target <- source platforms")  # fmt: skip
    demo.add_argument(
        "--data-dir", type=Path, help="dataset folder (default: $COPYATTACK_DATA_DIR, else ./data)"
    )
    demo.add_argument("--workdir", type=Path, default=DemoArgs.workdir, help="model cache")
    demo.add_argument("--out", type=Path, default=DemoArgs.out, help="tables and plots")
    demo.add_argument("--targets", type=_positive, default=DemoArgs.targets,
                      help="cold target items")  # fmt: skip
    demo.add_argument("--episodes", type=_positive, default=DemoArgs().attack.episodes,
                      help="CopyAttack's training episodes")  # fmt: skip
    experiment = commands.add_parser("experiment", help="run the paper's experiments over HTTP")
    kinds = experiment.add_subparsers(
        dest="experiment_command", required=True, parser_class=_CellsParser
    )
    table2 = kinds.add_parser("table2", help="every method on every target item (Table 2)")
    _add_run_options(table2, Path("results/table2"))
    stealth = kinds.add_parser(
        "stealth", help="attacks judged by the server's shilling detectors (issue 19)"
    )
    _add_run_options(stealth, Path("results/stealth"))
    stealth.set_defaults(methods=list(STEALTH_METHODS))
    stealth.add_argument("--detectors", nargs="+", choices=DETECTOR_NAMES,
                         default=list(DETECTOR_NAMES), help="run on each world")  # fmt: skip
    stealth.add_argument("--defence", choices=("none", *DETECTOR_NAMES), default="none",
                         help="every world defended by this detector (learners adapt)")  # fmt: skip
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
    _add_attack_options(pretrain)
    _add_server(pretrain, "base URL of the service (backend server)", required=False)
    pretrain.add_argument("--admin-token", default=os.environ.get("RECSYS_ADMIN_TOKEN"),
                          help="default: $RECSYS_ADMIN_TOKEN")  # fmt: skip
    pretrain.add_argument("--scenario", type=Path, required=True, help="the scenario folder")
    pretrain.add_argument("--out", type=Path, default=Path("results/pretrain"),
                          help="policy snapshots and pretrain.json")  # fmt: skip
    pretrain.add_argument("--cache-dir", type=Path, help="where the source MF is kept")
    pretrain.add_argument("--json", action="store_true", help="no progress; the summary as JSON")
    defaults = PretrainArgs()
    for name, help_text in (
        ("backend", "server: worlds on the target; surrogate: offline, zero target queries"),
        ("targets", "training targets, from the cold pool less the evaluated ones"),
        ("validation_targets", "targets set aside (disjoint) for choosing settings"),
        ("min_holders", "a training target is held by at least this many source users"),
        ("passes", "passes over the training targets"),
        ("group", "episodes per target per pass (their mean return is the baseline)"),
        ("batch", "targets per policy update"),
        ("snapshots", "policies saved evenly over training (the learning curve)"),
        ("budget", "profiles per training episode"),
        ("pretend_users", "pretend users per training world"),
        ("seed", "seed of the split, the episodes and the policy"),
    ):
        default = getattr(defaults, name)
        option = "--" + name.replace("_", "-")
        if name == "backend":
            pretrain.add_argument(
                option, choices=("server", "surrogate"), default=default, help=help_text
            )
        else:
            pretrain.add_argument(option, type=int, default=default, help=help_text)
    curve = kinds.add_parser(
        "learning-curve",
        help="Table 2 of each snapshot of a pretrained policy on the evaluated targets",
    )
    _add_run_options(curve, Path("results/learning_curve"))
    curve.add_argument("--pretrained", type=Path, required=True, help="a pretrain --out folder")
    curve.add_argument(
        "--baselines", type=Path, help="a table2.json whose methods are drawn as flat lines"
    )


def _add_attack_options(parser: argparse.ArgumentParser) -> None:
    """The learner's settings (CopyAttackArgs)."""
    parser.add_argument(
        "--episodes",
        type=int,
        default=CopyAttackArgs.episodes,
        help="training episodes per target (pretrained: fine-tune episodes)",
    )
    parser.add_argument("--k", type=int, default=CopyAttackArgs.k, help="top-k of the reward")
    parser.add_argument("--reward", choices=("hit", "rank"), default=CopyAttackArgs.reward,
                        help="hit: the target in a top-k; rank: (k - position) / k")  # fmt: skip
    parser.add_argument("--depth", type=int, default=CopyAttackArgs.depth,
                        help="clustering tree depth")  # fmt: skip
    parser.add_argument("--lr", type=float, default=CopyAttackArgs.lr, help="Adam step size")
    parser.add_argument(
        "--entropy",
        type=float,
        default=CopyAttackArgs.entropy,
        help="weight of the policies' entropy bonus",
    )
    parser.add_argument(
        "--crafting-prior",
        type=float,
        choices=WINDOW_SHARES,
        metavar="SHARE",
        help="the window share crafting starts preferring, of 0.1 .. 1.0 (default: uniform)",
    )
    parser.add_argument("--online", action="store_true", help="no world resets")


def _attack_args(args: argparse.Namespace) -> CopyAttackArgs:
    return CopyAttackArgs(
        episodes=args.episodes,
        k=args.k,
        reward=args.reward,
        depth=args.depth,
        lr=args.lr,
        entropy=args.entropy,
        crafting_prior=args.crafting_prior,
        online=args.online,
    )


def _add_wait_ready(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-ready",
        type=_seconds,
        default=READY_TIMEOUT,
        metavar="SECONDS",
        help="wait this long for the server's /readyz (backoff, 0.5 s to 10 s)",
    )


# the service's base URL: the same variable for the CLI, the README's SDK example and the
# notebook (compose sets it for the notebook)
SERVER_VARIABLE = "COPYATTACK_SERVER"


def _add_server(parser: argparse.ArgumentParser, help_text: str, *, required: bool) -> None:
    default = os.environ.get(SERVER_VARIABLE) or None
    parser.add_argument("--server", default=default, required=required and default is None,
                        help=f"{help_text} (default: ${SERVER_VARIABLE})")  # fmt: skip
    _add_wait_ready(parser)


def _add_run_options(table2: argparse.ArgumentParser, out: Path) -> None:
    _add_server(table2, "base URL of the recommender service (unless --ray)", required=False)
    table2.add_argument("--admin-token", default=os.environ.get("RECSYS_ADMIN_TOKEN"),
                        help="default: $RECSYS_ADMIN_TOKEN")  # fmt: skip
    table2.add_argument("--scenario", type=Path, required=True, help="the scenario folder")
    table2.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS),
                        metavar="METHOD", help=f"of: {', '.join(ALL_METHODS)}")  # fmt: skip
    table2.add_argument("--targets", type=int, default=50, help="cold target items")
    table2.add_argument(
        "--target-seed",
        type=int,
        default=0,
        help="fewer targets than the scenario lists: the seed of their draw",
    )
    table2.add_argument("--seeds", type=int, nargs="+", default=[0], help="world seeds")
    table2.add_argument("--budget", type=int, default=30, help="profiles per attack")
    table2.add_argument("--pretend-users", type=int, default=50, help="per world")
    table2.add_argument("--concurrency", type=int, default=4, help="worlds at once")
    table2.add_argument(
        "--checkpoint-every",
        type=int,
        default=ExperimentConfig.checkpoint_every,
        help="evaluate the budget curve every this many profiles (the budget: only at the end)",
    )
    _add_attack_options(table2)
    for kind in ("amortised", "surrogate"):
        table2.add_argument(
            f"--{kind}-policy",
            type=Path,
            help=f"the saved policy of CopyAttack-{kind.title()}[+FT]",
        )
    table2.add_argument(
        "--threat-model",
        choices=("frozen", "retrain"),
        default="frozen",
        help="retrain: fine-tune the model on the polluted graph before evaluating",
    )
    table2.add_argument("--out", type=Path, default=out, help="results (resumed)")
    table2.add_argument(
        "--cache-dir", type=Path, help="where the source MF is kept between runs (default: --out)"
    )
    cluster = table2.add_argument_group("on a Ray cluster (the extra: pip install -e '.[ray]')")
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
        type=_positive,
        help="with --ray: server replicas, one actor and 1 CPU each (default: the cluster's CPUs); "
        "--concurrency worlds at once on each",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C (servers started here stop), through SIGINT's handler:
    inside ``asyncio.run`` that one cancels the main task, so no task is left pending."""
    on_sigint = signal.getsignal(signal.SIGINT)
    if not callable(on_sigint):
        raise KeyboardInterrupt
    on_sigint(signal.SIGINT, frame)


def build_parser() -> argparse.ArgumentParser:
    return shared_cli.build_parser(add_attack_commands)


def run_demo_command(args: argparse.Namespace) -> None:
    demo = DemoArgs(
        pair=args.pair,
        data_dir=args.data_dir,
        workdir=args.workdir,
        out=args.out,
        targets=args.targets,
        attack=dataclasses.replace(DemoArgs().attack, episodes=args.episodes),
    )
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
        pretrain_args = PretrainArgs(
            **{name: getattr(args, name) for name in PretrainArgs.__dataclass_fields__}
        )
    except ValueError as exc:
        raise CopyAttackError(str(exc)) from None
    summary = asyncio.run(
        run_pretrain(
            args.scenario,
            args.out,
            _attack_args(args),
            pretrain_args,
            server=args.server,
            admin_token=args.admin_token,
            cache_dir=args.cache_dir,
            progress=not args.json,
            ready_timeout=args.wait_ready,
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


def _run_cells(
    args: argparse.Namespace, server: str, admin_token: str, servers: Servers | None
) -> int:
    config = ExperimentConfig(
        server=server,
        admin_token=admin_token,
        scenario=args.scenario,
        out=args.out,
        methods=tuple(args.methods),
        targets=args.targets,
        seeds=tuple(args.seeds),
        budget=args.budget,
        pretend_users=args.pretend_users,
        concurrency=args.concurrency,
        checkpoint_every=args.checkpoint_every,
        threat_model=args.threat_model,
        cache_dir=args.cache_dir,
        attack=_attack_args(args),
        target_seed=args.target_seed,
        ready_timeout=args.wait_ready,
        detectors=tuple(getattr(args, "detectors", ())),
        defence=getattr(args, "defence", "none"),
        progress=not getattr(args, "json", False),
        policies={
            kind: path
            for kind in ("amortised", "surrogate")
            if (path := getattr(args, f"{kind}_policy")) is not None
        },
    )
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
        summary = asyncio.run(run_stealth(config, servers))
        if args.json:
            print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
        else:
            print((args.out / "stealth.md").read_text())
            print(f"wrote {args.out}/stealth.md, .csv, .json, .png, cells.jsonl "
                  f"({summary['wall_seconds_this_run']} s)")  # fmt: skip
        return 0
    summary = asyncio.run(run_table2(config, servers))
    print((args.out / "table2.md").read_text())
    print(
        f"wrote {args.out}/table2.md, .csv, .json and budget_curve.csv/.png "
        f"({summary['wall_seconds_this_run']} s)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "experiment":
            return run_experiment(args)
        if args.command == "demo":
            run_demo_command(args)
            return 0
        if args.command == "report":
            return run_report(args)
        return shared_cli.run(args)
    except (CopyAttackError, APIError) as exc:
        print(f"copyattack: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: one line, not a traceback
        print("copyattack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
