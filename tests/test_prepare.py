"""``recsys-server prepare``: fetch, build and train once; reuse what is current."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from recsys_server.artifact import ModelArtifact
from recsys_server.cli import main as recsys_main
from shared.scenario import read_manifest

# a cheap model: the caching is under test, not the quality
CHEAP = ["--dim", "8", "--walks", "16", "--neighbours", "5", "--max-epochs", "1"]


def prepare(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert recsys_main(["prepare", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.realdata
def test_prepare_builds_trains_then_reuses_on_the_primary_pair(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "primary"
    pair = ["--pair", "primary", "--workdir", str(work), "--data-dir", str(real_data_dir)]
    first = prepare(capsys, *pair, *CHEAP)
    assert not first["scenario_reused"] and not first["model_reused"]
    assert first["metrics"]["PinSage"]["all"]["sampled"]["HR@10"] > 0
    manifest = read_manifest(work / "scenario")
    assert manifest["target"] == "movietweetings-100k" and manifest["source"] == "ml-latest-small"
    assert manifest["fingerprint"] == first["fingerprint"]
    # the served model belongs to the written scenario
    ModelArtifact.load(work / "model.pt", expected_fingerprint=first["fingerprint"])
    stamp = (work / "model.pt").stat().st_mtime_ns

    second = prepare(capsys, *pair, *CHEAP)
    assert second["scenario_reused"] and second["model_reused"] and second["metrics"] is None
    assert (work / "model.pt").stat().st_mtime_ns == stamp

    # another training setting retrains on the same scenario
    third = prepare(capsys, *pair, *CHEAP[:-1], "2")
    assert third["scenario_reused"] and not third["model_reused"]
    assert third["metrics"]["PinSage"]["epochs"] == 2


def test_a_torn_scenario_or_model_is_rebuilt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "tiny"
    pair = ["--target", "synthetic:tiny", "--source", "synthetic:tiny", "--workdir", str(work)]
    first = prepare(capsys, *pair, *CHEAP)
    (work / "scenario" / "manifest.json").write_text("{ torn")
    (work / "model.pt").write_bytes(b"torn")
    again = prepare(capsys, *pair, *CHEAP)
    assert not again["scenario_reused"] and not again["model_reused"]
    assert again["fingerprint"] == first["fingerprint"]  # deterministic build
    assert read_manifest(work / "scenario")["fingerprint"] == first["fingerprint"]
    # a model written over it by hand (no training key inside) is not taken for current
    by_hand = ["--scenario", str(work / "scenario"), "--out", str(work / "model.pt")]
    assert recsys_main(["train", *by_hand, "--no-baselines", *CHEAP]) == 0
    capsys.readouterr()
    assert not prepare(capsys, *pair, *CHEAP)["model_reused"]
    # another scenario seed: another split, retrained
    other = prepare(capsys, *pair, *CHEAP, "--scenario-seed", "1")
    assert other["fingerprint"] != first["fingerprint"] and not other["model_reused"]


def test_json_mode_prints_the_json_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # even on a terminal: no progress lines on stderr, no summary lines on stdout
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    pair = ["--target", "synthetic:tiny", "--source", "synthetic:tiny", "--workdir",
            str(tmp_path / "tiny")]  # fmt: skip
    assert recsys_main(["prepare", *pair, *CHEAP, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    [line] = out.splitlines()
    assert json.loads(line)["metrics"]["PinSage"]["epochs"] == 1
    # without --json the same command talks (on stdout; the model is reused, so no training)
    assert recsys_main(["prepare", *pair, *CHEAP]) == 0
    assert "model reused" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "synthetic:tiny"], "--target needs --source"),
        (["--pair", "primary", "--source", "ml-latest-small"], "--source goes with --target"),
        (["--target", "synthetic:tiny", "--source", "synthetic:paper"], "same synthetic source"),
    ],
)
def test_prepare_names_what_is_wrong(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert recsys_main(["prepare", *args, "--workdir", str(tmp_path / "w")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w" / "model.pt").exists()
