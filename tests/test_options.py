"""One source per setting: the options of ``copyattack experiment``, ``copyattack demo``,
``recsys-server train``, ``prepare`` and ``serve`` are generated from the settings they
fill (ExperimentConfig, CopyAttackArgs, PretrainArgs, DemoArgs, PinSageConfig, WalkConfig,
TrainConfig, the server's Settings), so every setting is reachable from the command line
and its help shows the default the code uses."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from attacker_client.cli import build_parser as copyattack_parser
from attacker_client.cli import experiment_config
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.demo import DemoArgs
from attacker_client.harness import ExperimentConfig
from attacker_client.pretrain import PretrainArgs
from recsys_server.cli import SERVE_FLAGS, _configs
from recsys_server.cli import build_parser as recsys_parser
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.settings import Settings
from recsys_server.training import TrainConfig
from shared.options import add_options, from_options, option, positive

# ExperimentConfig's fields that a command sets itself rather than through an option of
# the same name, each checked below through the option that reaches it
SET_BY_THE_COMMAND = {"server", "admin_token", "policies", "decile", "progress"}


def _subparser(root: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    parser = root
    for name in path:
        parser = next(
            action.choices[name]
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
        )
    return parser


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination."""
    return {action.dest: action for action in parser._actions if action.option_strings}


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """Every field of ``cls`` with the default it holds, nested dataclasses flattened."""
    found: dict[str, tuple[dataclasses.Field[Any], Any]] = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(typing.get_type_hints(cls)[field.name]):
            assert field.default_factory is not dataclasses.MISSING, field.name
            found |= _fields(type(field.default_factory()))
            continue
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        found[field.name] = (field, default)
    return found


def _another_value(action: argparse.Action) -> tuple[list[str], Any]:
    """Command-line words that set ``action`` to a value other than its default, and
    that value as the setting holds it."""
    flag, default = action.option_strings[0], action.default
    if isinstance(action, argparse.BooleanOptionalAction):
        return [f"--no-{flag[2:]}"], False
    if isinstance(action, argparse._StoreTrueAction):
        return [flag], True
    if action.choices is not None:
        value = next(c for c in reversed(list(action.choices)) if c != default and [c] != default)
        if action.nargs == "+":
            return [flag, str(value)], (value,)
        return [flag, str(value)], value
    kind = action.type
    if kind is Path:
        return [flag, "elsewhere"], Path("elsewhere")
    if action.nargs == "+":
        return [flag, "7", "8"], (7, 8)
    value = (default or 0) + (1 if kind in (int, positive) else 0.25)
    return [flag, str(value)], value


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help as ``--help`` prints it (defaults filled in), unwrapped."""
    return parser._get_formatter()._expand_help(action)


def _default_shown(default: Any) -> str:
    return str(list(default) if isinstance(default, tuple) else default)


def test_every_experiment_setting_is_an_option_that_reaches_the_run() -> None:
    table2 = _subparser(copyattack_parser(), "experiment", "table2")
    actions = _actions(table2)
    fields = _fields(ExperimentConfig)
    unreachable = set(fields) - set(actions) - SET_BY_THE_COMMAND - {"detectors", "defence"}
    assert unreachable == set()
    argv = ["--scenario", "s", "--server", "http://x", "--amortised-policy", "a.pt"]
    expected: dict[str, Any] = {}
    for name in fields.keys() - SET_BY_THE_COMMAND - {"scenario", "detectors", "defence"}:
        words, expected[name] = _another_value(actions[name])
        argv += words
    config = experiment_config(table2.parse_args(argv), "http://x", "token")
    got = {name: getattr(config, name, getattr(config.attack, name, None)) for name in expected}
    assert got == expected
    for name, value in expected.items():
        assert value != fields[name][1], f"{name}: the test must set another value"
    assert config.policies == {"amortised": Path("a.pt")}
    assert (config.server, config.admin_token, config.progress) == ("http://x", "token", True)
    # the stealth command's own: detectors, the defence, and --json (no progress bar)
    stealth = _subparser(copyattack_parser(), "experiment", "stealth")
    args = stealth.parse_args(
        ["--scenario", "s", "--server", "x", "--detectors", "pca", "--defence", "ecod", "--json"]
    )
    config = experiment_config(args, "x", "token")
    assert (config.detectors, config.defence, config.progress) == (("pca",), "ecod", False)
    # the swept decile: one per value of popularity --deciles
    popularity = _subparser(copyattack_parser(), "experiment", "popularity")
    args = popularity.parse_args(["--scenario", "s", "--server", "x", "--deciles", "2", "5"])
    assert args.deciles == [2, 5]


@pytest.mark.parametrize("command", ["table2", "depth", "popularity", "learning-curve", "stealth"])
def test_the_help_shows_each_experiment_default_the_dataclass_holds(command: str) -> None:
    parser = _subparser(copyattack_parser(), "experiment", command)
    actions = _actions(parser)
    # a command's own defaults: its output folder, stealth's methods and detectors
    own = {"out"} | ({"methods", "detectors"} if command == "stealth" else set())
    checked = 0
    for name, (_, default) in _fields(ExperimentConfig).items():
        if name not in actions or name in own:
            continue
        shown = _help_of(parser, actions[name])
        if default is None or default is False or default is dataclasses.MISSING:
            assert "(default: None)" not in shown and "(default: False)" not in shown
        else:
            assert shown.endswith(f"(default: {_default_shown(default)})"), (name, shown)
            checked += 1
    assert checked >= 20


def test_pretrain_options_are_pretrain_args_and_the_attack_args() -> None:
    parser = _subparser(copyattack_parser(), "experiment", "pretrain")
    actions = _actions(parser)
    argv = ["--scenario", "s"]
    expected: dict[tuple[str, str], Any] = {}
    for cls in (PretrainArgs, CopyAttackArgs):
        for name, (_, default) in _fields(cls).items():
            if default is not None and default is not False:
                assert _help_of(parser, actions[name]).endswith(
                    f"(default: {_default_shown(default)})"
                ), name
            words, expected[cls.__name__, name] = _another_value(actions[name])
            argv += words
    args = parser.parse_args(argv)
    for cls in (PretrainArgs, CopyAttackArgs):
        built = from_options(cls, args)
        for name in _fields(cls):
            assert getattr(built, name) == expected[cls.__name__, name], name


def _check_defaults_and_another_value(
    parser: argparse.ArgumentParser, cls: type, exclude: set[str], argv: list[str]
) -> dict[str, Any]:
    """Every field of ``cls`` but ``exclude`` is an option of ``parser`` whose default is
    the field's, shown in its help; adds to ``argv`` the words that set another value and
    returns those values by field."""
    actions = _actions(parser)
    expected: dict[str, Any] = {}
    for name, (_, default) in _fields(cls).items():
        if name in exclude:
            continue
        action = actions[name]
        assert action.default == (list(default) if isinstance(default, tuple) else default), name
        if default is not None and default is not False:
            assert _help_of(parser, action).endswith(f"(default: {_default_shown(default)})"), name
        words, expected[name] = _another_value(action)
        assert expected[name] != default, f"{name}: the test must set another value"
        argv += words
    return expected


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_training_options_are_the_victim_and_training_settings(command: str) -> None:
    parser = _subparser(recsys_parser(), command)
    required = {"train": ["--scenario", "s", "--out", "m.pt"],
                "prepare": ["--pair", "primary", "--workdir", "w"]}  # fmt: skip
    argv = required[command]
    expected = {
        cls: _check_defaults_and_another_value(parser, cls, exclude, argv)
        for cls, exclude in (
            # its walks' fields are WalkConfig's, next
            (PinSageConfig, {field.name for field in dataclasses.fields(WalkConfig)}),
            (WalkConfig, {"restart", "seed"}),  # the walks' seed is the training's
            (TrainConfig, {"progress"}),
        )
    }
    config, train = _configs(parser.parse_args([*argv, "--json"]))
    assert isinstance(config, PinSageConfig)
    for cls, built in ((PinSageConfig, config), (WalkConfig, config.walks), (TrainConfig, train)):
        for name, value in expected[cls].items():
            assert getattr(built, name) == value, (cls.__name__, name)
    assert config.walks.seed == train.seed == expected[TrainConfig]["seed"]
    assert train.progress is False  # --json: no progress lines


def test_demo_options_are_demo_args() -> None:
    parser = _subparser(copyattack_parser(), "demo")
    argv: list[str] = []
    expected = _check_defaults_and_another_value(parser, DemoArgs, {"methods", "concurrency"}, argv)
    demo = from_options(DemoArgs, parser.parse_args(argv))
    assert {name: getattr(demo, name) for name in expected} == expected
    assert demo.attack == CopyAttackArgs(episodes=expected["episodes"], k=100, reward="rank")
    with pytest.raises(SystemExit):
        parser.parse_args(["--targets", "0"])


def test_every_server_setting_but_the_token_is_a_serve_option_with_its_default() -> None:
    serve = _subparser(recsys_parser(), "serve")
    actions = _actions(serve)
    assert set(Settings.model_fields) - set(SERVE_FLAGS) == {"admin_token"}
    assert SERVE_FLAGS["ledger_path"] == "--ledger"  # the option's name since before
    for name, info in Settings.model_fields.items():
        if name == "admin_token":
            assert not any("token" in flag for flag in SERVE_FLAGS.values())
            continue
        action = actions[name]
        assert action.option_strings == [SERVE_FLAGS[name]]
        # unset, the option leaves the setting to its RECSYS_ variable
        assert action.default is None
        shown = _help_of(serve, action)
        assert info.description and shown.startswith(info.description)
        assert f"RECSYS_{name.upper()}" in shown
        if info.default is not None and not info.is_required():
            assert f"(default: {info.default}, or RECSYS_" in shown, shown


def test_a_serve_option_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "x" * 16)
    argv = ["serve", "--artifact", "m.pt", "--ledger", "l.db", "--ledger-synchronous", "FULL",
            "--max-body-bytes", "5000", "--eval-seed", "3", "--max-retrain-jobs", "2"]  # fmt: skip
    args = recsys_parser().parse_args(argv)
    settings = Settings(**{name: getattr(args, name) for name in SERVE_FLAGS
                           if getattr(args, name) is not None})  # fmt: skip
    assert (settings.ledger_path, settings.ledger_synchronous, settings.max_body_bytes) == (
        Path("l.db"),
        "FULL",
        5000,
    )
    assert (settings.eval_seed, settings.max_retrain_jobs, settings.port) == (3, 2, 8000)


# --- the generator itself ----------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    scenario: Path = option(help="required: no default")
    mode: Literal["a", "b"] = option("a", "a Literal gives the choices")
    seeds: tuple[int, ...] = option((0,), "a tuple takes one or more")
    on: bool = option(True, "on by default: --on/--no-on")
    share: float | None = option(None, "optional", flag="--window")


def test_options_follow_the_annotations() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, Example)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --scenario is required
    with pytest.raises(SystemExit):
        parser.parse_args(["--scenario", "s", "--mode", "c"])
    args = parser.parse_args(
        ["--scenario", "s", "--mode", "b", "--seeds", "1", "2", "--no-on", "--window", "0.5"]
    )
    assert from_options(Example, args) == Example(Path("s"), "b", (1, 2), False, 0.5)
    assert from_options(Example, parser.parse_args(["--scenario", "s"])) == Example(Path("s"))


def test_a_field_without_help_is_refused() -> None:
    @dataclass
    class Undocumented:
        budget: int = 30

    with pytest.raises(TypeError, match=r"Undocumented\.budget has no help"):
        add_options(argparse.ArgumentParser(), Undocumented)
    with pytest.raises(TypeError, match="needs its help"):
        option(30)
