"""recsys-server: prepare the data, train the target model (a victim recommender, PinSage
by default) and serve it over HTTP.

    recsys-server train --scenario DIR --out FILE [--victim NAME] [--variant V] [--json]
    recsys-server prepare --pair primary|reverse|synthetic --workdir DIR [training options]
    recsys-server serve --artifact FILE [--host H] [--port P] [--ledger FILE]

``train`` fits the victim (``--victim``, default PinSage) with early stopping on
validation HR@10, evaluates it and the baselines (MostPopular, BPR-MF, EASE) on the test
split under both protocols, and writes the model artifact. On a terminal, progress lines
on stderr show each model's epochs, validation HR@10 and time left; with ``--json`` the
metrics as JSON are all it prints.

``prepare`` fetches missing data, builds the pair's scenario into ``DIR/scenario`` and
trains ``DIR/model.pt``, each only when not already current (the compose ``trainer``, and
the first step of ``make demo``).

``serve`` runs the black-box service. Every setting also comes from ``RECSYS_*``
environment variables (or ``.env``); the admin token only from ``RECSYS_ADMIN_TOKEN``,
never from a flag, so it does not show in process listings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recsys_server.artifact import ModelArtifact
from recsys_server.lightgcn.model import LightGCNGrid
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.prepare import prepare, train_artifact
from recsys_server.settings import Settings
from recsys_server.training import TrainConfig
from recsys_server.victims.base import VictimConfig
from recsys_server.victims.lightgcn import LightGCNVictim
from recsys_server.victims.pinsage import PinSageVictim
from recsys_server.victims.registry import VICTIMS
from shared.cli import Parser, add_year_tolerance, default_data_dir, run_command
from shared.datasets.pair import NAMED_PAIRS
from shared.errors import CopyAttackError
from shared.options import add_options, from_options, typed
from shared.process import scratch_removed_on_exit, watch_parent
from shared.scenario import ScenarioConfig, load_scenario

ADMIN_TOKEN_VARIABLE = "RECSYS_ADMIN_TOKEN"
SERVE_DESCRIPTION = (
    f"Serve a trained model over HTTP. Required: {ADMIN_TOKEN_VARIABLE}, the bearer token "
    "of the /admin routes (16 characters or more), from the environment or a .env file "
    "only, never from a flag (a flag would show in process listings). Every other setting "
    "also comes from the RECSYS_* variable its option names; a flag overrides its variable."
)


def serve_flag(name: str) -> str | None:
    """The ``serve`` option of the setting ``name``: its name in kebab case, or the one
    its field names; None for a setting read only from the environment."""
    extra = Settings.model_fields[name].json_schema_extra
    extra = extra if isinstance(extra, dict) else {}
    if extra.get("environment_only"):
        return None
    flag = extra.get("flag")
    return flag if isinstance(flag, str) else "--" + name.replace("_", "-")


def serve_variable(name: str) -> str:
    """The environment variable of the setting ``name`` (RECSYS_PORT)."""
    return f"{Settings.model_config['env_prefix']}{name.upper()}"


# every setting of ``serve`` that also has a flag: Settings field -> flag
SERVE_FLAGS = {
    name: flag for name in Settings.model_fields if (flag := serve_flag(name)) is not None
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="recsys-server", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a victim on a scenario, evaluate, save")
    train.add_argument(
        "--scenario", type=Path, required=True, help="a scenario folder (`scenario build`)"
    )
    train.add_argument("--out", type=Path, required=True, help="model artifact to write")
    _add_training_options(train)
    train.add_argument("--no-baselines", action="store_true", help="evaluate the victim only")
    train.add_argument(
        "--json", action="store_true", help="print only the metrics, as JSON (no progress)"
    )

    prepare = commands.add_parser(
        "prepare", help="fetch the data, build the scenario, train: each only if not current"
    )
    pair = prepare.add_mutually_exclusive_group(required=True)
    pair.add_argument("--pair", choices=sorted(NAMED_PAIRS), help="a named pair")
    pair.add_argument("--target", help="or: --target NAME --source NAME")
    prepare.add_argument("--source", help="the copied platform (with --target)")
    prepare.add_argument("--workdir", type=Path, required=True, help="scenario/ and model.pt")
    prepare.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset folder (default: $COPYATTACK_DATA_DIR, else ./data)",
    )
    prepare.add_argument("--scenario-seed", type=int, default=ScenarioConfig.seed,
                         help="seed of the split and target choice")  # fmt: skip
    prepare.add_argument(
        "--min-source-holders",
        type=int,
        default=ScenarioConfig.min_source_holders,
        help="cold targets are held by at least this many source users (30: targets with "
        "holders to choose between; the default draw is 1)",
    )
    add_year_tolerance(prepare)
    _add_training_options(prepare)
    prepare.add_argument(
        "--baselines", action="store_true", help="also evaluate the baselines (when training)"
    )
    prepare.add_argument(
        "--json", action="store_true", help="print only the outcome, as JSON (no progress)"
    )

    serve = commands.add_parser(
        "serve",
        help=f"serve a trained model over HTTP ({ADMIN_TOKEN_VARIABLE} required)",
        description=SERVE_DESCRIPTION,
    )
    _add_settings_options(serve)
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level",
    )
    return parser


def _add_settings_options(serve: argparse.ArgumentParser) -> None:
    """One option per setting (SERVE_FLAGS), its help the field's description. Its
    default is None, so that an unset option leaves the setting to its variable; the
    help shows the setting's own default."""
    for name, flag in SERVE_FLAGS.items():
        info = Settings.model_fields[name]
        variable = serve_variable(name)
        if info.is_required():
            where = f"required, here or as {variable}"
        elif info.default is None:  # the description says what it is
            where = f"or {variable}"
        else:
            where = f"default: {info.default}, or {variable}"
        help_text = f"{info.description} ({where})".replace("%", "%%")
        kwargs = typed(info.annotation, name)
        if "choices" not in kwargs:  # the option's name, not the field's (--ledger LEDGER)
            kwargs["metavar"] = flag[2:].upper().replace("-", "_")
        serve.add_argument(flag, dest=name, help=help_text, **kwargs)


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """The victim, and PinSage's and the training's settings (the walks' seed is the
    training's)."""
    parser.add_argument("--victim", choices=sorted(VICTIMS), default=PinSageVictim.name,
                        help="the recommender's family")  # fmt: skip
    add_options(parser, PinSageConfig, exclude=("walks",))
    add_options(parser, WalkConfig, exclude=("restart", "seed"))
    add_options(parser, LightGCNGrid, exclude=("n_layers",))
    add_options(parser, TrainConfig, exclude=("progress",))


def _configs(args: argparse.Namespace) -> tuple[VictimConfig, TrainConfig]:
    """The victim's settings and the training settings, from the flags (the model flags
    are PinSage's, and LightGCN's grid; the other families train with their own defaults,
    tuned on validation)."""
    try:
        config: VictimConfig = VICTIMS[args.victim].default_config()
        # --layers is PinSage's; LightGCN keeps the paper's 3
        grid = from_options(LightGCNGrid, args, n_layers=LightGCNGrid.n_layers)
        if args.victim != LightGCNVictim.name and grid != LightGCNGrid():
            raise ValueError(
                "--lightgcn-dims, --lightgcn-lrs and --lightgcn-l2s go with --victim lightgcn"
            )
        if args.victim == PinSageVictim.name:
            walks = from_options(WalkConfig, args, seed=args.seed)
            config = from_options(PinSageConfig, args, walks=walks)
        elif args.victim == LightGCNVictim.name:
            config = grid
        # progress lines on a terminal only, and never around JSON
        train = from_options(TrainConfig, args, progress=sys.stderr.isatty() and not args.json)
    except ValueError as exc:
        raise CopyAttackError(str(exc)) from None
    return config, train


def train_command(args: argparse.Namespace) -> None:
    config, train = _configs(args)
    results = train_artifact(
        load_scenario(args.scenario),
        args.victim,
        config,
        train,
        args.out,
        baselines=not args.no_baselines,
    )
    if args.json:
        print(json.dumps(results))
        return
    print(format_metrics(results))
    print(f"model written to {args.out}")


def prepare_command(args: argparse.Namespace) -> None:
    if args.target is not None and args.source is None:
        raise CopyAttackError("--target needs --source (or use --pair)")
    if args.pair is not None and args.source is not None:
        raise CopyAttackError("--source goes with --target, not with --pair")
    target, source = NAMED_PAIRS[args.pair] if args.pair else (args.target, args.source)
    config, train = _configs(args)
    try:
        scenario_config = ScenarioConfig(
            seed=args.scenario_seed,
            min_source_holders=args.min_source_holders,
            year_tolerance=args.year_tolerance,
        )
    except ValueError as exc:
        raise CopyAttackError(str(exc)) from None
    prepared = prepare(
        target,
        source,
        args.data_dir or default_data_dir(),
        args.workdir,
        args.victim,
        config,
        train,
        scenario_config=scenario_config,
        baselines=args.baselines,
    )
    if args.json:
        print(json.dumps({**asdict(prepared), "scenario_dir": str(prepared.scenario_dir),
                          "artifact": str(prepared.artifact)}))  # fmt: skip
        return
    what = "reused" if prepared.scenario_reused else "built"
    print(f"scenario {prepared.fingerprint[:16]} ({target} <- {source}) {what}: "
          f"{prepared.scenario_dir}")  # fmt: skip
    if prepared.metrics is not None:
        print(format_metrics(prepared.metrics))
    what = "reused (same scenario and settings)" if prepared.model_reused else "trained"
    if prepared.model_reused and args.baselines:
        what += "; --baselines is evaluated only when training (see `recsys-server train`)"
    print(f"model {what}: {prepared.artifact} ({prepared.seconds} s)")


def format_metrics(results: dict[str, Any]) -> str:
    lines = [
        f"{'model':<12}{'cases':<22}{'HR@10 sampled':>14}{'HR@10 full':>12}{'NDCG@10 full':>14}"
    ]
    for name, result in results.items():
        for cases, metrics in result.items():
            if not isinstance(metrics, dict) or "sampled" not in metrics:
                continue
            lines.append(
                f"{name:<12}{cases:<22}{metrics['sampled']['HR@10']:>14.4f}"
                f"{metrics['full']['HR@10']:>12.4f}{metrics['full']['NDCG@10']:>14.4f}"
            )
    return "\n".join(lines)


def limit_compute_threads(threads: int) -> None:
    """Process-wide: the refresh and evaluation workers run side by side with the event
    loop, so one BLAS/torch thread each keeps them from oversubscribing the cores (on 2
    cores the same attack took 19% less server CPU than with the default 2 threads)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def serve_command(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from recsys_server.app import create_app
    from recsys_server.http_protocol import ProblemH11Protocol

    overrides = {name: getattr(args, name) for name in SERVE_FLAGS
                 if getattr(args, name) is not None}  # fmt: skip
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise CopyAttackError("; ".join(map(_setting_problem, exc.errors()))) from None
    # a demo's server deletes its temporary ledger when it ends, however it is stopped
    with scratch_removed_on_exit():
        # fail before listening, with the reason, rather than serve a model that cannot load
        ModelArtifact.load(settings.artifact)
        limit_compute_threads(settings.compute_threads)
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=10,
            # h11, always (not httptools when installed): its parser errors are problem+json
            http=ProblemH11Protocol,
        )


def _setting_problem(error: Any) -> str:
    """One invalid or missing setting, named as the user sets it: the variable (and flag)."""
    field = ".".join(map(str, error["loc"]))
    if not field:
        return f"settings: {error['msg']}"
    variable = serve_variable(field)
    if variable == ADMIN_TOKEN_VARIABLE:
        return f"{variable}: {error['msg']} (the admin token is read only from the environment)"
    flag = SERVE_FLAGS.get(field)
    return f"{flag} or {variable}: {error['msg']}" if flag else f"{variable}: {error['msg']}"


def main(argv: Sequence[str] | None = None) -> int:
    watch_parent()  # started by the demo (or a test): end with it
    args = build_parser().parse_args(argv)
    commands = {"serve": serve_command, "train": train_command, "prepare": prepare_command}

    def command() -> int:
        commands[args.command](args)
        return 0

    return run_command("recsys-server", command)


if __name__ == "__main__":
    sys.exit(main())
