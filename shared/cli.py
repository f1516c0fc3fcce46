"""``copyattack``: the data and scenario commands.

    copyattack data list
    copyattack data fetch NAME [--from DIR] [--force]
    copyattack data table1 --target NAME --source NAME [--json]
    copyattack scenario build --target NAME --source NAME --seed N --out DIR
    copyattack scenario show DIR [--json]

Bad input ends with one line on stderr naming what is wrong, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.datasets.fetch import fetch_dataset
from shared.datasets.pair import SyntheticOptions, load_pair
from shared.datasets.registry import DATA_DIR_VARIABLE, dataset_names, get_spec
from shared.errors import CopyAttackError
from shared.scenario import (
    Scenario,
    ScenarioConfig,
    build_scenario,
    read_manifest,
    save_scenario,
)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, when it has one to show (not None, not
    a flag's False) and may show (not a token's value, read from the environment)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "token" in action.dest:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose help shows the defaults. Its subcommands are parsers of the
    same class (``add_subparsers`` makes them of ``type(self)``), so they show theirs too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_VARIABLE, "data"))


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset folder (default: $COPYATTACK_DATA_DIR, else ./data)",
    )


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="attacked dataset: movietweetings-100k")
    parser.add_argument("--source", required=True, help="copied dataset: ml-latest-small")
    _add_data_dir(parser)
    parser.add_argument(
        "--seed", type=int, default=ScenarioConfig.seed, help="seed of every random choice"
    )
    parser.add_argument(
        "--top-rating-only",
        action="store_true",
        help="keep only top ratings (the paper's filter) instead of 'liked' ones",
    )
    parser.add_argument("--target-threshold", type=float, help="target 'liked' rating threshold")
    parser.add_argument("--source-threshold", type=float, help="source 'liked' rating threshold")
    parser.add_argument(
        "--n-target-items",
        type=int,
        default=ScenarioConfig.n_target_items,
        help="cold target items",
    )
    parser.add_argument(
        "--cold-max-interactions",
        type=int,
        default=ScenarioConfig.cold_max_interactions,
        help="target items have fewer target interactions than this",
    )
    parser.add_argument(
        "--min-source-holders",
        type=int,
        default=ScenarioConfig.min_source_holders,
        help="cold targets are held by at least this many source users",
    )
    add_year_tolerance(parser)
    parser.add_argument(
        "--pretend-pool-size",
        type=int,
        default=ScenarioConfig.pretend_pool_size,
        help="established target users that pretend users (the top-k probes) are drawn from",
    )
    parser.add_argument(
        "--domain-shift", type=float, help="synthetic pairs: taste shift of the source (0..1)"
    )
    parser.add_argument(
        "--synthetic-seed",
        type=int,
        default=SyntheticOptions.seed,
        help="synthetic pairs: data seed",
    )


def build_parser(
    extra: Callable[[argparse._SubParsersAction], None] | None = None,
) -> argparse.ArgumentParser:
    """The ``copyattack`` parser; ``extra`` adds commands of packages that build on
    ``shared`` (the attacker's ``experiment`` and ``demo``)."""
    description = "CopyAttack simulator: datasets (data) and scenarios (scenario)"
    if extra is not None:
        description += (
            "; the paper's experiments against a running recsys-server, over HTTP "
            "(experiment); and all of it on this machine in one command (demo)"
        )
    parser = Parser(prog="copyattack", description=description + ".")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets: list, fetch, Table 1").add_subparsers(
        dest="data_command", required=True
    )
    listing = data.add_parser("list", help="known datasets and whether they are present")
    _add_data_dir(listing)
    fetch = data.add_parser("fetch", help="download (or copy) a dataset, verified by sha256")
    fetch.add_argument("name", help=f"one of: {', '.join(dataset_names())}")
    _add_data_dir(fetch)
    fetch.add_argument(
        "--from", dest="from_path", type=Path, help="local folder or archive instead of a download"
    )
    fetch.add_argument("--force", action="store_true", help="replace an existing copy")
    table1 = data.add_parser("table1", help="the paper's Table 1 for a pair")
    _add_pair_options(table1)
    table1.add_argument("--json", action="store_true", help="print JSON")

    scenario = commands.add_parser("scenario", help="build and inspect scenarios")
    scenario_commands = scenario.add_subparsers(dest="scenario_command", required=True)
    build = scenario_commands.add_parser("build", help="build a scenario deterministically")
    _add_pair_options(build)
    build.add_argument("--out", type=Path, required=True, help="scenario folder to write")
    build.add_argument("--force", action="store_true", help="replace an existing scenario")
    show = scenario_commands.add_parser("show", help="print a scenario's manifest summary")
    show.add_argument("folder", type=Path, help="a folder written by `scenario build`")
    show.add_argument("--json", action="store_true", help="the whole manifest as JSON")

    if extra is not None:
        extra(commands)
    return parser


def add_year_tolerance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--year-tolerance",
        type=int,
        default=ScenarioConfig.year_tolerance,
        help="also match titles whose years differ by up to this much (opt-in; the matches "
        "it adds are counted in the alignment report)",
    )


def _config(args: argparse.Namespace) -> ScenarioConfig:
    try:
        return ScenarioConfig(
            seed=args.seed,
            top_rating_only=args.top_rating_only,
            target_like_threshold=args.target_threshold,
            source_like_threshold=args.source_threshold,
            n_target_items=args.n_target_items,
            cold_max_interactions=args.cold_max_interactions,
            min_source_holders=args.min_source_holders,
            pretend_pool_size=args.pretend_pool_size,
            year_tolerance=args.year_tolerance,
        )
    except ValueError as exc:
        raise CopyAttackError(str(exc)) from None


def _build_from_args(args: argparse.Namespace, data_dir: Path) -> Scenario:
    synthetic = SyntheticOptions(domain_shift=args.domain_shift, seed=args.synthetic_seed)
    pair = load_pair(args.target, args.source, data_dir, fetch_missing=True, synthetic=synthetic)
    return build_scenario(*pair, _config(args))


def format_table1(table: dict[str, Any]) -> str:
    alignment = table["alignment"]
    rows = [
        ("Target domain", f"{table['target']}", ""),
        ("", "# of users", f"{table['target_users']:,}"),
        ("", "# of items", f"{table['target_items']:,}"),
        ("", "# of interactions", f"{table['target_interactions']:,}"),
        ("Source domain", f"{table['source']}", ""),
        ("", "# of users", f"{table['source_users']:,}"),
        ("", "# of overlapping items", f"{table['overlapping_items']:,}"),
        ("", "# of interactions", f"{table['source_interactions']:,}"),
        ("", "profile length (median / mean / max)",
         f"{table['source_profile_length_median']:g} / {table['source_profile_length_mean']:g}"
         f" / {table['source_profile_length_max']}"),
        ("Alignment", "catalogue matches (IMDb id + title/year)",
         f"{alignment['matched']:,} ({alignment['by_imdb']:,} + {alignment['by_title_year']:,}),"
         f" {alignment['ambiguous_left_out']} ambiguous left out"),
    ]  # fmt: skip
    return "\n".join(f"{a:<15}{b:<42}{c}".rstrip() for a, b, c in rows)


def _show(manifest: dict[str, Any]) -> str:
    config = manifest["config"]
    lines = [
        f"scenario {manifest['fingerprint'][:16]}  seed {config['seed']}",
        format_table1(manifest["counts"]),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    if args.command == "data" and args.data_command == "list":
        for name in dataset_names():
            spec = get_spec(name)
            present = "present" if (data_dir / name).is_dir() else "missing"
            how = "download" if spec.downloadable else "--from only"
            print(f"{name:<22}{present:<9}{how:<13}{spec.citation}")
    elif args.command == "data" and args.data_command == "fetch":
        folder = fetch_dataset(
            get_spec(args.name), data_dir, from_path=args.from_path, force=args.force
        )
        print(f"{args.name}: verified files in {folder}")
    elif args.command == "data" and args.data_command == "table1":
        table = _build_from_args(args, data_dir).table1()
        print(json.dumps(table) if args.json else format_table1(table))
    elif args.command == "scenario" and args.scenario_command == "build":
        scenario = _build_from_args(args, data_dir)
        save_scenario(scenario, args.out, force=args.force)
        print(_show(read_manifest(args.out)))
        print(f"written to {args.out}")
    elif args.command == "scenario" and args.scenario_command == "show":
        manifest = read_manifest(args.folder)
        print(json.dumps(manifest, indent=2) if args.json else _show(manifest))
    return 0


def run_command(
    prog: str,
    body: Callable[[], int],
    errors: tuple[type[Exception], ...] = (CopyAttackError,),
) -> int:
    """A console script's exit code: ``body()``'s, or one line on stderr instead of a
    traceback: 2 for bad input (``errors``), 130 for Ctrl-C or SIGTERM, and 141 (a shell's
    128 + SIGPIPE, as any tool a closed pipe stops) when the reader left early (``| head``).
    """
    try:
        code = body()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the unwritten rest would raise again in the exit's own flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("copyattack", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
