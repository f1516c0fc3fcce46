"""Package boundaries. ``shared`` is imported by both sides and imports neither; the
attacker never imports the server, nor the server the attacker (the black box is an HTTP
boundary); where one side starts the other it does so as a process, by a module name
that must exist and run as a program."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "recsys_server", "attacker_client")
FORBIDDEN = {
    "shared": ("recsys_server", "attacker_client"),
    "attacker_client": ("recsys_server",),
    "recsys_server": ("attacker_client",),
}
# the domain knows nothing of HTTP: the API edge maps its errors to problems
DOMAIN = (
    "recsys_server/worlds",
    "recsys_server/domain_errors.py",
    "recsys_server/ledger.py",
    "recsys_server/detection",
)
HTTP = ("fastapi", "starlette", "recsys_server.api")
MODULE_NAME = re.compile(r"^(?:recsys_server|attacker_client)(?:\.\w+)+$")


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def _launched_modules(tree: ast.AST) -> list[str]:
    """Module names written as strings (``[python, "-m", "recsys_server.cli", ...]``)."""
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and MODULE_NAME.match(node.value)
    ]


def test_each_package_imports_only_what_its_side_may() -> None:
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(ast.parse(path.read_text())):
                if name.split(".")[0] in forbidden:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_the_domain_imports_nothing_of_http() -> None:
    offenders = []
    for part in DOMAIN:
        root = ROOT / part
        assert root.exists(), part  # a moved module would silently leave the rule
        for path in [root] if root.is_file() else root.rglob("*.py"):
            for name in _imports(ast.parse(path.read_text())):
                if any(name == http or name.startswith(http + ".") for http in HTTP):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_a_process_launched_by_module_name_exists_and_runs_as_a_program() -> None:
    launched: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for module in _launched_modules(ast.parse(path.read_text())):
                launched.setdefault(module, []).append(str(path.relative_to(ROOT)))
    # the server is started by name from the shared launcher and the demo
    assert "recsys_server.cli" in launched
    for module, where in launched.items():
        source = ROOT / (module.replace(".", "/") + ".py")
        assert source.is_file(), f"{where} launch {module}, which does not exist"
        assert '__name__ == "__main__"' in source.read_text(), (
            f"{where} launch {module}, which does not run as a program"
        )


def test_the_layout_check_sees_a_forbidden_import_and_a_missing_launch_target() -> None:
    """The checks above can fail: the same helpers on code that breaks each rule."""
    tree = ast.parse(
        "import recsys_server.worlds\nfrom recsys_server import app\nfrom . import x\n"
        'cmd = ["python", "-m", "recsys_server.no_such_module"]\n'
    )
    assert _imports(tree) == ["recsys_server.worlds", "recsys_server"]
    assert _launched_modules(tree) == ["recsys_server.no_such_module"]
    assert not (ROOT / "recsys_server/no_such_module.py").exists()


def test_the_packages_share_no_module_name_but_their_entry_points() -> None:
    """A traceback, a doc or a review names a file without its package: two sides'
    modules of one name (once, two ``baselines.py``: recommenders and attacks) read as one."""
    packages_of: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            packages_of.setdefault(path.stem, []).append(package)
    shared_names = {name for name, packages in packages_of.items() if len(packages) > 1}
    assert shared_names <= {"__init__", "cli"}, {name: packages_of[name] for name in shared_names}


def test_the_fast_loops_marks_name_modules_that_exist() -> None:
    """`make test-fast` leaves out the modules conftest marks: a renamed module would
    silently join the fast loop."""
    from tests.conftest import PROCESS_MODULES, SLOW_MODULES

    for module in PROCESS_MODULES | SLOW_MODULES:
        assert (ROOT / "tests" / f"{module}.py").is_file(), module
