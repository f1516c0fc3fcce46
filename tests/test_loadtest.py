"""The locust load test (``make loadtest``), short and bounded, on the tiny model.

One world, a tight rate limit and small budgets, so that within a few seconds both kinds
of 429 surely happen (``rate-limited`` all along, ``quota-exceeded`` once the 30 queries
and 2 injections are spent), then the server's usage counters must equal what locust saw
answered. Locust runs as a subprocess of the runner (its gevent patching would break
pytest); the runner itself runs here as a subprocess too, exactly as ``make loadtest``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.run import ROUTES, compare_usage

ROOT = Path(__file__).resolve().parents[1]
RUN_TIME = 7  # seconds of load
# seconds for everything, above the runner's own bounds (server start 120 s, locust
# run time + stop timeout + 90 s): a hung run fails here, its process group killed
BOUND = 300.0
QUERY_BUDGET = 30
INJECTION_BUDGET = 2
# at 15 requests/s and these weights, ~90 /topk and ~15 injection attempts are let through
# in 7 s: far beyond the budgets, while 4 users at full speed send hundreds per second (90
# with both cores of the 2-core machine kept busy by two other processes, measured)
SETTINGS = [
    "--users", "4",
    "--spawn-rate", "4",
    "--run-time", str(RUN_TIME),
    "--rate-limit", "15/second",
    "--query-budget", str(QUERY_BUDGET),
    "--injection-budget", str(INJECTION_BUDGET),
    "--pretend-users", "5",
    "--weights", "topk=10,inject=2,replay=1",
    "--stop-timeout", "5",
]  # fmt: skip


def test_locust_run_hits_both_429s_and_the_counters_match(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "loadtest"
    # relative paths, as `make loadtest` gives them, from another working directory
    command = [
        sys.executable,
        "-m",
        "loadtests.run",
        "--artifact",
        str(artifact),
        "--out",
        "loadtest",
    ]
    runner = subprocess.Popen(
        [*command, *SETTINGS],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its server and locust are in its process group
    )
    try:
        stdout, stderr = runner.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.communicate()
        pytest.fail(f"the load test did not finish within {BOUND:.0f} s")
    report = f"stdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"
    assert runner.returncode == 0, report
    assert "PASS" in stdout.splitlines()[-1], report

    summary = json.loads((out / "summary.json").read_text())
    for field in (
        "requests_per_second",
        "routes",
        "rate_limited",
        "quota_exceeded",
        "answered",
        "unexpected_failures",
        "server_usage",
        "usage_check",
        "passed",
    ):
        assert field in summary, field
    assert RUN_TIME <= summary["locust_seconds"] < BOUND
    assert summary["locust_exit_code"] == 0
    assert summary["requests_per_second"] > 0

    routes = summary["routes"]
    assert set(routes) == set(ROUTES)
    for route in ("topk", "inject_user"):
        assert routes[route]["p50_ms"] is not None and routes[route]["p99_ms"] is not None
    # both kinds of 429 happened, each told apart by the problem type
    assert summary["rate_limited"] > 0 and summary["quota_exceeded"] > 0
    assert routes["topk"]["rate-limited"] > 0
    assert routes["topk"]["quota-exceeded"] > 0
    assert routes["inject_user"]["quota-exceeded"] > 0
    # nothing else went wrong
    assert summary["unexpected_failures"] == 0, summary["failure_details"]
    assert summary["failure_details"] == []
    assert summary["errors"] == []

    # the server counted exactly what locust saw answered: fresh injections, not replays
    used = summary["server_usage"]["used"]
    assert summary["usage_check"] == {"passed": True, "problems": []}
    assert used["queries"] == routes["topk"]["answered"]
    assert used["injections"] == routes["inject_user"]["answered"]
    assert used["items"] == summary["client_counters"]["injected items"]
    assert summary["passed"] is True


def test_the_usage_check_catches_a_mismatch() -> None:
    routes = {
        "topk": {"answered": 40},
        "inject_user": {"answered": 2},
        "inject_user_replay": {"answered": 3},
    }
    counts = {"queries": 40, "injections": 2, "items": 7}
    assert compare_usage(routes, counts, counts, injected_items=7) == []
    # one query counted that locust never saw answered (or vice versa)
    off_by_one = {**counts, "queries": 41}
    assert compare_usage(routes, off_by_one, off_by_one, injected_items=7)
    # replays counted as injections by the server
    replays_counted = {**counts, "injections": 5}
    assert compare_usage(routes, replays_counted, replays_counted, injected_items=7)
    assert compare_usage(routes, counts, counts, injected_items=8)
    assert compare_usage(routes, counts, {**counts, "queries": 39}, injected_items=7)
