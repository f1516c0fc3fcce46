"""The walkthrough notebook, executed headless (nbclient, the venv's ipykernel) against the
session's tiny server with small knobs; and committed without outputs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from attacker_client import AdminClient
from shared.process import ServerProcess
from tests.service_fixtures import ADMIN_TOKEN

KERNEL = "copyattack-test"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "attack_from_notebook.ipynb"


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _text(output: dict[str, Any]) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    return output.get("data", {}).get("text/plain", "")


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in _code_cells(nb):
        assert cell.outputs == [], cell.source[:60]
        assert cell.execution_count is None, cell.source[:60]


def _world_ids(url: str) -> set[str]:
    with AdminClient(url, ADMIN_TOKEN) as admin:
        return {world.world_id for world in admin.list_worlds()}


def test_notebook_runs_headless(
    scenario_dir: Path, server: ServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = {
        "COPYATTACK_SERVER": server.url,
        "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
        "COPYATTACK_SCENARIO": str(scenario_dir),
        "COPYATTACK_EPISODES": "1",
        "COPYATTACK_BUDGET": "6",
        "COPYATTACK_K": "20",
        "COPYATTACK_PRETEND_USERS": "10",
    }
    for name, value in settings.items():  # the kernel inherits the environment
        monkeypatch.setenv(name, value)
    # a kernel of this very interpreter: "python3" may resolve to a user-level kernelspec
    # of another Python when the machine has Jupyter installed globally
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python",
                                                  "display_name": KERNEL}))  # fmt: skip
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # first, which Python runs the kernel: it must be this venv's
    probe = nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)")
    nb.cells.insert(0, probe)
    worlds_before = _world_ids(server.url)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()  # raises CellExecutionError, with the cell's traceback, on error
    finally:
        worlds_after = _world_ids(server.url)
        leaked = worlds_after - worlds_before
        with AdminClient(server.url, ADMIN_TOKEN) as admin:
            for world_id in leaked:  # a failed run must not leave worlds to later tests
                admin.delete_world(world_id)

    assert probe.outputs[0]["text"].strip() == sys.prefix
    outputs = [output for cell in _code_cells(nb) for output in cell.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "\n".join(_text(output) for output in outputs)
    # the reward plot, inline
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert "reward per query round" in "\n".join(cell.source for cell in nb.cells)
    # HR@20 before and after, both protocols
    assert re.search(r"^all\s+sampled\s+\d+\s+[\d.]+\s+[\d.]+$", text, re.MULTILINE)
    assert re.search(r"^all\s+full\s+\d+\s+[\d.]+\s+[\d.]+$", text, re.MULTILINE)
    # the injected profiles next to their sources: 6 rows, each matched to a source profile
    assert "kept/original" in text
    rows = re.findall(r"^\s*\d+\s+\d+\s+(\S+)\s+(\d+)/(\d+)\s+\S", text, re.MULTILINE)
    assert len(rows) == 6
    assert all(source != "?" and int(kept) <= int(n) for source, kept, n in rows)
    # the world was created, then deleted by the last cell
    match = re.search(r"^world_id = (\S+)$", text, re.MULTILINE)
    assert match is not None
    assert match.group(1) not in worlds_after
    assert not leaked
