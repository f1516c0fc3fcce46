from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attacker_client.cli import build_parser as copyattack_parser
from recsys_server.cli import build_parser as recsys_parser
from recsys_server.cli import main as recsys_main
from shared.cli import main
from tests import upstream_fixtures as fx


def test_table1_json_on_a_synthetic_pair(capsys) -> None:
    assert (
        main(
            ["data", "table1", "--target", "synthetic:tiny", "--source", "synthetic:tiny", "--json"]
        )
        == 0
    )
    table = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert table["target_users"] == 200 and table["overlapping_items"] > 0
    assert table["alignment"]["by_imdb"] == table["alignment"]["matched"]


def test_scenario_build_and_show(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scenario"
    args = ["scenario", "build", "--target", "synthetic:tiny", "--source", "synthetic:tiny"]
    assert main([*args, "--seed", "5", "--out", str(out), "--n-target-items", "7"]) == 0
    assert "written to" in capsys.readouterr().out
    assert len(json.loads((out / "attacker" / "target_items.json").read_text())["cold"]) == 7
    assert main(["scenario", "show", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["config"]["seed"] == 5 and len(manifest["fingerprint"]) == 64
    # an existing scenario is not overwritten without --force
    assert main([*args, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_year_tolerance_reaches_the_scenario(tmp_path: Path, capsys) -> None:
    args = ["scenario", "build", "--target", "synthetic:tiny", "--source", "synthetic:tiny"]
    assert main([*args, "--year-tolerance", "1", "--out", str(tmp_path / "s")]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["config"]["year_tolerance"] == 1
    assert manifest["counts"]["alignment"]["by_title_near_year"] == 0
    assert main([*args, "--year-tolerance", "-1", "--out", str(tmp_path / "t")]) == 2
    assert "year_tolerance must be 0 or more" in capsys.readouterr().err
    parsed = recsys_parser().parse_args(
        ["prepare", "--pair", "tiny", "--workdir", "w", "--year-tolerance", "1"]
    )
    assert parsed.year_tolerance == 1


def test_mixed_synthetic_and_real_pair_is_refused(capsys) -> None:
    assert main(["data", "table1", "--target", "synthetic:tiny", "--source", "ml-1m"]) == 2
    assert "same synthetic source" in capsys.readouterr().err


def test_bad_row_stops_the_build_and_writes_nothing(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    fx.movietweetings(data / "movietweetings-100k")
    fx.ml_csv(data / "ml-1m")  # wrong format for ml-1m: ratings.dat is missing
    fx.ml_dat(data / "ml-1m")
    fx.write(data / "ml-1m" / "ratings.dat", "1::1193::5::978300760\n1,661,3,978302109\n")
    out = tmp_path / "out"
    code = main(
        ["scenario", "build", "--target", "movietweetings-100k", "--source", "ml-1m",
         "--data-dir", str(data), "--out", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "ml-1m/ratings.dat:2" in err and "','" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [data]


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    env = {**os.environ, "COPYATTACK_DATA_DIR": str(tmp_path / "nothing-here")}
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "data", "table1", "--target", "netflix", "--source",
         "flixster"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    # a missing dataset is fetched; Netflix has no verifiable download, and the error says
    # how to bring a local copy instead (no network is touched)
    assert done.returncode == 2
    assert done.stderr.startswith("copyattack: error: dataset netflix is not in ")
    assert "has no official download" in done.stderr
    assert "--from DIR" in done.stderr
    assert not (tmp_path / "nothing-here" / "netflix").exists()


@pytest.mark.parametrize("module", ["shared.cli", "attacker_client.cli"])
def test_a_reader_that_left_stops_the_command_quietly(module: str) -> None:
    # the pipe's read end is closed before the command starts, so its first write fails
    # (as `copyattack report --check | head -1` once ended in a traceback)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "data", "table1", "--target", "synthetic:tiny",
             "--source", "synthetic:tiny"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every (sub)command's parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("build", [copyattack_parser, recsys_parser], ids=["copyattack", "recsys"])
def test_every_option_and_command_has_help(build: Callable[[], argparse.ArgumentParser]) -> None:
    root = build()
    assert root.description and "``" not in root.description
    undocumented = []
    for parser in _parsers(root):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                # each subcommand's line in its parent's help
                undocumented += [
                    f"{parser.prog} {choice.dest}"
                    for choice in action._choices_actions
                    if not (choice.help or "").strip()
                ]
            elif not (action.help or "").strip():
                undocumented.append(
                    f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
                )
    assert undocumented == []


def test_help_shows_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # the admin token is read from the environment when a command runs, so its value
    # never shows in --help
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "a-secret-token-value")
    helps = {parser.prog: parser.format_help() for build in (copyattack_parser, recsys_parser)
             for parser in _parsers(build())}  # fmt: skip
    assert "(default: 200)" in helps["recsys-server train"]  # --max-epochs
    assert "(default: primary)" in helps["copyattack demo"]
    assert "(default: 50)" in helps["copyattack experiment table2"]
    assert not any("a-secret-token-value" in text for text in helps.values())
    assert not any("(default: None)" in text or "(default: False)" in text
                   for text in helps.values())  # fmt: skip


def test_serve_help_and_error_name_the_admin_token_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = next(p for p in _parsers(recsys_parser()) if p.prog == "recsys-server serve")
    assert "Required: RECSYS_ADMIN_TOKEN" in " ".join(serve.format_help().split())
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("RECSYS_ADMIN_TOKEN", raising=False)
    assert recsys_main(["serve", "--artifact", str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recsys-server: error: RECSYS_ADMIN_TOKEN: Field required")
    assert "flags" not in err
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "short")
    monkeypatch.delenv("RECSYS_ARTIFACT", raising=False)
    assert recsys_main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "--artifact or RECSYS_ARTIFACT: Field required" in err
    assert "RECSYS_ADMIN_TOKEN: Value should have at least 16" in err


def test_the_server_url_is_copyattack_server_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One name for the service's URL: the CLI's default, the notebook's and the README's."""
    monkeypatch.setenv("COPYATTACK_SERVER", "http://example.test:9")
    args = copyattack_parser().parse_args(["experiment", "table2", "--scenario", "s"])
    assert args.server == "http://example.test:9"
    args = copyattack_parser().parse_args(["experiment", "pretrain", "--scenario", "s"])
    assert args.server == "http://example.test:9"
    monkeypatch.delenv("COPYATTACK_SERVER")
    with pytest.raises(SystemExit):
        copyattack_parser().parse_args(["experiment", "table2", "--scenario", "s"])
    assert "--server" in capsys.readouterr().err
    root = Path(__file__).resolve().parent.parent
    notebook = (root / "notebooks" / "attack_from_notebook.ipynb").read_text()
    assert "COPYATTACK_SERVER" in notebook
    assert "RECSYS_URL" not in (root / "README.md").read_text() + notebook
