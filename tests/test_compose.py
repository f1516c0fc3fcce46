"""The container setup, checked offline (no Docker engine here: nothing is built or run).

docker-compose.yml is validated against the Compose Specification's JSON schema (the copy
vendored in check-jsonschema); every service's command is parsed by the project's own
argparse parser, with each ``${VAR:-default}`` replaced by its default; and the
properties users rely on (start order, read-only mounts, no token in the files, ports on
127.0.0.1, the CPU torch and a non-root user in the Dockerfile) are asserted.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

SERVER, TRAINER, ATTACKER, NOTEBOOK = "recsys-server", "trainer", "attacker", "notebook"
TOKEN = "RECSYS_ADMIN_TOKEN"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# the Compose Specification's schema as vendored in check-jsonschema: no network needed
SCHEMA = "vendor.compose-spec"
# third-party programs a service may run: program -> (extra of pyproject, distribution)
THIRD_PARTY = {"jupyter": ("notebook", "jupyterlab")}

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_?KEY", re.IGNORECASE)


# --- helpers ------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMA, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _defaults(value: str) -> str:
    """``value`` as compose would interpolate it with an empty environment: ``${VAR:-d}``
    and ``${VAR-d}`` become ``d``; a variable without a default fails the test."""

    def substitute(match: re.Match[str]) -> str:
        if match["op"] in (":-", "-"):
            return match["arg"]
        raise AssertionError(f"{match[0]} in {value!r} has no default")

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def _strings(node: Any) -> list[str]:
    """Every string of a loaded YAML document, keys and values (comments are gone)."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [_defaults(arg) for arg in argv]


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {name: value if sep else None for name, sep, value in pairs}
    return {name: None if value is None else str(value) for name, value in environment.items()}


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Every mount in the long syntax (short ``source:target[:mode]`` strings converted)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
            volume = {"type": kind, "source": source, "target": target}
            volume["read_only"] = bool(mode) and "ro" in mode[0].split(",")
        mounts.append(volume)
    return mounts


def _mount_of(service: dict[str, Any], path: str) -> dict[str, Any]:
    """The mount ``path`` lives on in the container of ``service``."""
    candidates = [
        mount
        for mount in _volumes(service)
        if PurePosixPath(path).is_relative_to(PurePosixPath(mount["target"]))
    ]
    assert candidates, f"{path} is not on any mount of the service"
    return max(candidates, key=lambda mount: len(mount["target"]))


def _seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def _project_packages() -> list[str]:
    """The top-level packages pyproject.toml ships."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
    )


def _parser_of(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The project's parser behind a command line and the arguments it gets: a console
    script of pyproject.toml, or ``python -m`` one of the project's modules."""
    scripts = PYPROJECT["project"]["scripts"]
    if argv[0] in scripts:
        module, args = scripts[argv[0]].partition(":")[0], argv[1:]
    else:
        assert argv[0] in ("python", "python3") and argv[1] == "-m", (
            f"{argv[0]} is neither a console script of pyproject.toml nor python -m"
        )
        module, args = argv[2], argv[3:]
        assert module.split(".")[0] in _project_packages(), f"{module} is not the project's"
    builder = getattr(importlib.import_module(module), "build_parser", None)
    assert builder is not None, f"{module} has no build_parser()"
    return _exact(builder()), args


def _exact(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` and its subparsers without prefix matching, so that ``--episode`` does
    not pass for ``--episodes``: a compose file spells flags out."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _exact(subparser)
    return parser


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


# --- the schema ---------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = _validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("    depends_on:\n", "    depend_on:\n", "depend_on"),  # a misspelled key
        ("service_healthy", "service_happy", "service_happy"),  # a value out of its enum
        ("        read_only: true\n", "        read_only: [true]\n", "read_only"),  # a type
    ],
)
def test_the_validator_rejects_a_broken_copy(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new))
    result = _validate(broken)
    assert result.returncode != 0 and complaint in result.stdout + result.stderr, result.stdout


# --- commands -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_services()))
def test_the_command_parses(name: str) -> None:
    service = _services()[name]
    argv = _argv(service)
    if argv[0] in THIRD_PARTY:
        extra, distribution = THIRD_PARTY[argv[0]]
        names = [_requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
        assert distribution in names, f"{argv[0]} comes from {distribution}, not in [{extra}]"
        extras = str(service["build"]["args"]["EXTRAS"]).split(",")
        assert extra in extras, f"{name}'s image is not built with the {extra} extra"
        return
    parser, args = _parser_of(argv)
    try:
        parser.parse_args(args)
    except SystemExit as exc:  # argparse's error exit; its message is in captured stderr
        pytest.fail(f"{name}: {shlex.join(argv)} does not parse (exit {exc.code})")


def test_a_misspelled_flag_fails_to_parse() -> None:
    """The check above can fail: the same parser refuses a misspelled flag."""
    argv = _argv(_services()[ATTACKER])
    argv[argv.index("--episodes")] = "--episode"  # a prefix: refused all the same
    parser, args = _parser_of(argv)
    with pytest.raises(SystemExit):
        parser.parse_args(args)


def test_paths_agree_between_trainer_server_attacker_and_notebook() -> None:
    from recsys_server.prepare import MODEL_FILE, SCENARIO_DIR

    services = _services()
    trainer = _parser_of(_argv(services[TRAINER]))
    serve = _parser_of(_argv(services[SERVER]))
    attack = _parser_of(_argv(services[ATTACKER]))
    prepared = trainer[0].parse_args(trainer[1])
    served = serve[0].parse_args(serve[1])
    attacked = attack[0].parse_args(attack[1])

    workdir = PurePosixPath(prepared.workdir)
    assert PurePosixPath(served.artifact) == workdir / MODEL_FILE
    scenario = workdir / SCENARIO_DIR
    assert PurePosixPath(attacked.scenario) == scenario
    notebook = _environment(services[NOTEBOOK])
    assert PurePosixPath(str(notebook["COPYATTACK_SCENARIO"])) == scenario

    # what the trainer writes on the models volume is what the others read from it
    assert _mount_of(services[TRAINER], str(workdir))["source"] == "models"
    for name, path in [(SERVER, served.artifact), (ATTACKER, attacked.scenario)]:
        assert _mount_of(services[name], str(path))["source"] == "models", name
    assert _mount_of(services[NOTEBOOK], str(scenario))["source"] == "models"
    assert _mount_of(services[TRAINER], str(prepared.data_dir))["type"] == "bind"
    # Jupyter serves the checkout's notebooks (a bind mount compose does not create)
    jupyter = _argv(services[NOTEBOOK])
    notebooks = _mount_of(services[NOTEBOOK], jupyter[jupyter.index("--notebook-dir") + 1])
    assert notebooks["type"] == "bind" and (ROOT / notebooks["source"]).is_dir()

    # the clients reach the server by its service name, on the port it listens on
    url = f"http://{SERVER}:{served.port}"
    assert attacked.server == url and notebook["COPYATTACK_SERVER"] == url
    assert served.host == "0.0.0.0"  # reachable from the other containers
    published = [_defaults(str(p)).rsplit(":", 1)[-1] for p in services[SERVER]["ports"]]
    assert str(served.port) in published


# --- what users rely on -------------------------------------------------------------------


def test_start_order() -> None:
    services = _services()
    assert services[SERVER]["depends_on"] == {
        TRAINER: {"condition": "service_completed_successfully"}
    }
    for name in (ATTACKER, NOTEBOOK):
        assert services[name]["depends_on"][SERVER] == {"condition": "service_healthy"}, name
    assert services[TRAINER].get("depends_on") is None


def test_server_healthcheck_runs_python_on_readyz() -> None:
    server = _services()[SERVER]
    parser, args = _parser_of(_argv(server))
    port = parser.parse_args(args).port
    health = server["healthcheck"]
    test = health["test"]
    assert isinstance(test, list) and test[0] == "CMD" and test[1] in ("python", "python3")
    command = shlex.join(test)
    assert "curl" not in command and "wget" not in command
    assert f"http://127.0.0.1:{port}/readyz" in command
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in health, key
    assert _seconds(health["start_period"]) >= 60  # the model loads, the ledger replays
    assert _seconds(health["timeout"]) <= _seconds(health["interval"])
    # the image's HEALTHCHECK probes the service; other roles switch it off
    for name, service in _services().items():
        if name != SERVER:
            assert service["healthcheck"] == {"disable": True}, name


def test_mounts() -> None:
    compose = _compose()
    services = compose["services"]
    # only the trainer writes the models volume
    for name, service in services.items():
        models = [m for m in _volumes(service) if m["source"] == "models"]
        assert len(models) == 1, name
        assert models[0].get("read_only", False) is (name != TRAINER), name
    # the ledger has a volume of its own, mounted by the server alone, read-write
    served = _parser_of(_argv(services[SERVER]))
    ledger = _mount_of(services[SERVER], str(served[0].parse_args(served[1]).ledger_path))
    assert ledger["type"] == "volume" and ledger["source"] == "ledger"
    assert not ledger.get("read_only", False)
    for name, service in services.items():
        if name != SERVER:
            assert all(m["source"] != "ledger" for m in _volumes(service)), name
    assert {"models", "ledger"} <= set(compose["volumes"])
    # results land in the checkout
    results = _mount_of(services[ATTACKER], "/results/table2")
    assert results["type"] == "bind" and results["source"] == "./results"
    assert not results.get("read_only", False)


def test_no_token_is_written_into_the_files() -> None:
    for name, service in _services().items():
        for variable, value in _environment(service).items():
            if _SECRET_NAME.search(variable):
                assert value is not None and re.fullmatch(r"\$\{[^}]+\}", value), (name, variable)
    # the clients and the server get the token, and compose stops when it is unset
    required = re.compile(rf"\$\{{{TOKEN}:\?[^}}]+\}}")
    for name in (SERVER, ATTACKER, NOTEBOOK):
        assert required.fullmatch(str(_environment(_services()[name]).get(TOKEN))), name
    for keyword, arguments in _instructions():
        if keyword in ("ENV", "ARG"):
            assert not _SECRET_NAME.search(arguments), f"{keyword} {arguments}"


def test_notebook_is_behind_a_profile_and_the_rest_is_not() -> None:
    for name, service in _services().items():
        assert service.get("profiles") == ([NOTEBOOK] if name == NOTEBOOK else None), name


def test_ports_are_published_on_localhost_only() -> None:
    published = 0
    for name, service in _services().items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                parts = _defaults(str(port)).split(":")
                assert len(parts) == 3 and parts[0] == "127.0.0.1", (name, port)
    assert published >= 2  # the service and Jupyter


def test_one_build_for_one_image() -> None:
    """Services that run the same image tag build it the same way; the notebook's image is
    the same build with the notebook extra."""
    builds: dict[str, Any] = {}
    for name, service in _services().items():
        assert builds.setdefault(service["image"], service["build"]) == service["build"], name
    main, notebook = (_services()[n]["build"] for n in (SERVER, NOTEBOOK))
    assert main["args"]["EXTRAS"] == ""
    assert {**main["args"], "EXTRAS": "notebook"} == notebook["args"]
    assert {k: v for k, v in main.items() if k != "args"} == {
        k: v for k, v in notebook.items() if k != "args"
    }


def test_every_variable_is_documented_in_env_example() -> None:
    used = {match["name"] for text in _strings(_compose()) for match in _VARIABLE.finditer(text)}
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used <= documented, sorted(used - documented)
    gitignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert gitignored & {".env", "/.env"}, ".env must be git-ignored"


# --- the Dockerfile -----------------------------------------------------------------------


def test_dockerfile_installs_cpu_torch_first_then_the_project() -> None:
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "RUN"]
    pip_runs = [(i, args) for i, args in runs if "pip install" in args]
    pin = next(
        r for r in PYPROJECT["project"]["dependencies"] if _requirement_name(r) == "torch"
    ).split(";")[0]
    first, torch_run = pip_runs[0]
    tokens = shlex.split(torch_run)
    assert tokens[:2] == ["pip", "install"] and "&&" not in tokens, torch_run
    index = tokens.index("--index-url")
    assert tokens[index + 1] == CPU_INDEX
    del tokens[index : index + 2]
    assert sorted(tokens[2:]) == ["--no-deps", pin.strip()], "torch alone, pinned as in pyproject"
    # then torch's dependencies from the default index: the pin, already satisfied by the
    # CPU build, so pip adds only what torch needs
    assert shlex.split(pip_runs[1][1]) == ["pip", "install", pin.strip()]
    pip_runs = pip_runs[1:]
    project = [
        i for i, args in pip_runs if re.search(r"pip install( --?[\w-]+)* \.(\s|$|\[)", args)
    ]
    assert project and project[0] > first, "the project is installed after torch"
    # dependencies come from pyproject.toml, copied before the code (cache-friendly)
    copies = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "COPY"]
    assert copies[0][1].split()[0] == "pyproject.toml"
    code = [i for i, args in copies if args.split()[0] in _project_packages()]
    assert sorted(args.split()[0] for i, args in copies if i in code) == _project_packages()
    assert copies[0][0] < pip_runs[1][0] < min(code) < project[0]


def test_dockerfile_runs_as_a_non_root_user_with_a_python_healthcheck() -> None:
    instructions = _instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (health,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    command = health.split(" CMD ", 1)[1]
    assert command.startswith('["python", "-c"') and "/readyz" in command
    assert "curl" not in health and "wget" not in health
    assert not any(keyword == "ENV" and TOKEN in args for keyword, args in instructions)


def test_dockerignore_lets_in_only_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything else (.env, data, .venv) stays out"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", *_project_packages()}
