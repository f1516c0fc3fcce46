"""Load-test the query and injection budgets of one attacker key with locust (``make loadtest``).

Why: the service promises that budgets are counted exactly under concurrency (a refused
request counts nothing, an idempotent replay counts nothing) and that an over-eager key
is slowed down with 429 ``rate-limited`` while a spent budget answers 429
``quota-exceeded``. The deterministic pytest test checks the exact budget with one burst;
this runs many concurrent clients for a while, with both limits really hit, and checks
the server's own usage counters against what the clients saw answered.

Steps: start ``recsys-server serve`` on 127.0.0.1 (a fresh ledger in a temporary folder,
a random admin token, a tight ``RECSYS_RATE_LIMIT``), create one world whose budgets run
out within the run, run locust headless on ``loadtests/locustfile.py`` as a subprocess
(its gevent monkey-patching must not reach this process or pytest), read locust's CSV
and ``GET /admin/worlds/{id}/usage``, then write ``OUT/summary.json`` and print a short
summary. Exit status 1 when the usage counters differ from locust's answered requests,
when any request failed unexpectedly or when locust did not finish; the server is
stopped in every case.

    python -m loadtests.run --artifact artifacts/demo/primary/model.pt --out results/loadtest
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attacker_client import AdminClient
from shared.machine import machine
from shared.process import ServerProcess

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
# request names of loadtests/locustfile.py; each outcome of a route is a row of its own
ROUTES = {
    "topk": "GET /topk/[user]",
    "inject_user": "POST /inject_user",
    "inject_user_replay": "POST /inject_user [replay]",
}
KINDS_429 = ("rate-limited", "quota-exceeded")


@dataclass
class LoadTestConfig:
    """One run's settings. ``query_budget`` None: 40% of what the rate limit lets through
    in ``run_time``, so the budget runs out mid-run while rate 429s happen throughout."""

    artifact: Path
    out: Path
    users: int = 8
    spawn_rate: float = 8.0
    run_time: int = 20  # seconds of load
    rate_limit: str = "50/second"  # per key, the server's RECSYS_RATE_LIMIT
    query_budget: int | None = None
    injection_budget: int = 10
    item_budget: int | None = None  # None: the server's default (never the binding one)
    pretend_users: int = 20
    seed: int = 0
    weights: str = "topk=40,inject=2,replay=1"
    profile_size: str = "2-5"  # items per injected profile, min-max
    stop_timeout: int = 10  # seconds users get to finish the request in flight at the end
    locust_timeout: float = 90.0  # on top of run_time + stop_timeout: then locust is killed

    def __post_init__(self) -> None:
        # locust runs in a scratch folder: a relative --out would land there
        self.artifact, self.out = Path(self.artifact).resolve(), Path(self.out).resolve()

    def budgets(self) -> dict[str, int]:
        queries = self.query_budget
        if queries is None:
            queries = max(1, int(0.4 * allowed_per_second(self.rate_limit) * self.run_time))
        budgets = {"queries": queries, "injections": self.injection_budget}
        if self.item_budget is not None:
            budgets["items"] = self.item_budget
        return budgets


def allowed_per_second(rate_limit: str) -> float:
    """The sustained requests/s a ``limits`` spec lets through (its tightest window)."""
    from limits import parse_many  # a server dependency, installed with the project

    return min(item.amount / item.get_expiry() for item in parse_many(rate_limit))


# --- locust's CSV ------------------------------------------------------------------------


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    """``*_stats.csv`` rows by request name (``Aggregated`` included)."""
    with path.open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def read_failures(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            {
                "method": row.get("Method"),
                "name": row.get("Name"),
                "error": row.get("Error"),
                "occurrences": int(row.get("Occurrences") or 0),
            }
            for row in csv.DictReader(handle)
        ]


def route_summary(stats: dict[str, dict[str, str]], name: str) -> dict[str, Any]:
    """One route: answered requests (2xx, as the locustfile judged them), unexpected
    failures, latency of those, and the two kinds of 429 (their own rows)."""
    row = stats.get(name, {})
    requests = int(row.get("Request Count") or 0)
    failures = int(row.get("Failure Count") or 0)
    out: dict[str, Any] = {
        "answered": requests - failures,
        "failures": failures,
        "p50_ms": _number(row.get("50%")),
        "p99_ms": _number(row.get("99%")),
        "max_ms": _number(row.get("Max Response Time")),
        "answered_per_second": None,
    }
    rps, fps = _number(row.get("Requests/s")), _number(row.get("Failures/s"))
    if rps is not None:
        out["answered_per_second"] = round(rps - (fps or 0.0), 2)
    for kind in KINDS_429:
        kind_row = stats.get(f"{name} [{kind}]", {})
        out[kind] = int(kind_row.get("Request Count") or 0)
        # a 429 row is all successes by construction; a failure there would be a bug here
        out["failures"] += int(kind_row.get("Failure Count") or 0)
    return out


# --- the check -----------------------------------------------------------------------------


def compare_usage(
    routes: dict[str, dict[str, Any]],
    used: dict[str, int],
    total: dict[str, int],
    injected_items: int | None,
) -> list[str]:
    """Mismatches between the server's counters and what locust saw answered; empty when
    every answered /topk and every fresh injection was counted once, and nothing else."""
    expected = {
        "queries": routes["topk"]["answered"],
        # replays are answered 201 too, but the server must not count them
        "injections": routes["inject_user"]["answered"],
    }
    if injected_items is not None:
        expected["items"] = injected_items
    problems = []
    for counter, locust in expected.items():
        if used.get(counter) != locust:
            problems.append(
                f"server used.{counter} = {used.get(counter)}, locust answered {locust}"
            )
        if total.get(counter) != used.get(counter):
            problems.append(
                f"server total.{counter} = {total.get(counter)} != used.{counter} "
                f"= {used.get(counter)} (no reset happened)"
            )
    return problems


# --- the run -------------------------------------------------------------------------------


def run_locust(
    config: LoadTestConfig, url: str, env: dict[str, str], workdir: Path
) -> tuple[int | None, float]:
    """Locust headless as a subprocess; its exit code (None if killed on timeout), seconds."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(config.users),
        "-r",
        str(config.spawn_rate),
        "-t",
        f"{config.run_time}s",
        "--stop-timeout",
        str(config.stop_timeout),
        "--host",
        url,
        "--csv",
        str(config.out / "locust"),
        "--only-summary",
        "--logfile",
        str(config.out / "locust.log"),
    ]
    timeout = config.run_time + config.stop_timeout + config.locust_timeout
    started = time.monotonic()
    with (config.out / "locust.out").open("wb") as log:
        try:
            code: int | None = subprocess.run(
                command,
                env={**os.environ, **env},
                cwd=workdir,  # no locust.conf / pyproject.toml of anyone else is read
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:  # subprocess.run killed it
            code = None
    return code, time.monotonic() - started


def run_loadtest(config: LoadTestConfig) -> dict[str, Any]:
    """Start the server, create the world, run locust, compare; returns the summary
    (also written to ``config.out / "summary.json"``)."""
    config.out.mkdir(parents=True, exist_ok=True)
    for stale in [*config.out.glob("locust*"), config.out / "summary.json"]:
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    budgets = config.budgets()
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        workdir = Path(tmp)
        admin_token = secrets.token_urlsafe(24)
        server = ServerProcess(
            config.artifact,
            workdir / "ledger.sqlite3",
            admin_token=admin_token,
            env={"RECSYS_RATE_LIMIT": config.rate_limit},
        )
        server.start()
        try:
            with AdminClient(server.url, admin_token) as admin:
                n_items = admin.model_info().n_items
                world = admin.create_world(
                    n_pretend_users=config.pretend_users, seed=config.seed, budgets=budgets
                )
                counters_path = workdir / "counters.json"
                env = {
                    "LOADTEST_API_KEY": world.api_key,
                    "LOADTEST_USERS": ",".join(map(str, world.pretend_users)),
                    "LOADTEST_N_ITEMS": str(n_items),
                    "LOADTEST_WEIGHTS": config.weights,
                    "LOADTEST_PROFILE_SIZE": config.profile_size,
                    "LOADTEST_COUNTERS": str(counters_path),
                }
                exit_code, locust_seconds = run_locust(config, server.url, env, workdir)
                usage = admin.usage(world.world_id)
            counters = json.loads(counters_path.read_text()) if counters_path.exists() else None
        finally:
            server_exit = server.stop()

    # the final stats, written by the locustfile once every user stopped; locust's own
    # locust_stats.csv is rewritten once a second and misses the end of the run
    stats_path = config.out / "locust_final_stats.csv"
    stats = read_stats(stats_path) if stats_path.exists() else {}
    routes = {key: route_summary(stats, name) for key, name in ROUTES.items()}
    aggregated = stats.get("Aggregated", {})
    failures = read_failures(config.out / "locust_final_failures.csv")
    periodic_path = config.out / "locust_stats.csv"
    periodic = read_stats(periodic_path) if periodic_path.exists() else {}
    injected_items = counters.get("injected items", 0) if counters is not None else None
    used, total = usage.used.model_dump(), usage.total.model_dump()
    problems = compare_usage(routes, used, total, injected_items)
    if usage.injected_users != used["injections"]:
        problems.append(f"{usage.injected_users} injected users live, {used['injections']} counted")
    errors = []
    if exit_code is None:
        errors.append("locust did not finish in time and was killed")
    if not stats:
        errors.append(f"locust wrote no {stats_path.name} (see {config.out / 'locust.out'})")
    unexpected = sum(route["failures"] for route in routes.values())
    unexpected = max(unexpected, int(aggregated.get("Failure Count") or 0))
    if unexpected:
        errors.append(f"{unexpected} unexpected failures")
    notes = [f"{name}: {count}" for name, count in (counters or {}).items() if ":" in name]

    summary: dict[str, Any] = {
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
            "budgets": budgets,
            "n_items": n_items,
            "machine": machine(),
        },
        "wall_seconds": round(time.monotonic() - started, 2),
        "locust_seconds": round(locust_seconds, 2),
        "locust_exit_code": exit_code,
        "server_exit_code": server_exit,
        "requests": int(aggregated.get("Request Count") or 0),
        "requests_per_second": _number(aggregated.get("Requests/s")),
        # what locust's periodic locust_stats.csv holds: fewer when it missed the end
        "periodic_csv_requests": int(periodic.get("Aggregated", {}).get("Request Count") or 0),
        "routes": routes,
        "rate_limited": sum(route["rate-limited"] for route in routes.values()),
        "quota_exceeded": sum(route["quota-exceeded"] for route in routes.values()),
        "answered": sum(route["answered"] for route in routes.values()),
        "unexpected_failures": unexpected,
        "failure_details": failures,
        "client_counters": counters,
        "header_notes": notes,
        "server_usage": {
            "used": used,
            "total": total,
            "remaining": usage.remaining.model_dump(),
            "budgets": usage.budgets.model_dump(),
            "injected_users": usage.injected_users,
        },
        "usage_check": {"passed": not problems, "problems": problems},
        "errors": errors,
        "passed": not problems and not errors,
    }
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def print_summary(summary: dict[str, Any], out: Path) -> None:
    settings = summary["settings"]
    print(
        f"locust: {settings['users']} users, {settings['run_time']} s, rate limit "
        f"{settings['rate_limit']}, budgets {settings['budgets']} ({settings['machine']})"
    )
    print(
        f"  {summary['requests']} requests, {summary['requests_per_second'] or 0:.1f} requests/s; "
        f"answered {summary['answered']}, 429 rate-limited {summary['rate_limited']}, "
        f"429 quota-exceeded {summary['quota_exceeded']}, "
        f"unexpected failures {summary['unexpected_failures']}"
    )
    for key, route in summary["routes"].items():
        print(
            f"  {ROUTES[key]:<28} answered {route['answered']:>6}  p50 {_ms(route['p50_ms']):>8}"
            f"  p99 {_ms(route['p99_ms']):>8}  rate-limited {route['rate-limited']:>6}"
            f"  quota-exceeded {route['quota-exceeded']:>6}  failures {route['failures']}"
        )
    for failure in summary["failure_details"]:
        print(
            f"  failure: {failure['method']} {failure['name']}: {failure['error']} "
            f"x{failure['occurrences']}"
        )
    for note in summary["header_notes"]:
        print(f"  note: {note}")
    for kind in KINDS_429:
        if not summary[kind.replace("-", "_")]:
            print(f"  warning: no {kind} 429 happened; these settings do not exercise it")
    used, routes = summary["server_usage"]["used"], summary["routes"]
    counters = summary["client_counters"] or {}
    check = summary["usage_check"]
    print(
        f"  server usage: queries {used['queries']} (locust answered "
        f"{routes['topk']['answered']}), injections {used['injections']} (locust "
        f"{routes['inject_user']['answered']}, replays {routes['inject_user_replay']['answered']}"
        f" not counted), items {used['items']} (locust {counters.get('injected items', '?')}):"
        f" {'PASS' if check['passed'] else 'FAIL'}"
    )
    for problem in check["problems"] + summary["errors"]:
        print(f"  FAIL: {problem}")
    print(f"{'PASS' if summary['passed'] else 'FAIL'} (summary: {out / 'summary.json'})")


def parse_args(argv: list[str] | None = None) -> LoadTestConfig:
    defaults = LoadTestConfig(artifact=Path(), out=Path())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True, help="model artifact to serve")
    parser.add_argument("--out", type=Path, default=Path("results/loadtest"))
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--spawn-rate", type=float, default=defaults.spawn_rate)
    parser.add_argument("--run-time", type=int, default=defaults.run_time, help="seconds")
    parser.add_argument("--rate-limit", default=defaults.rate_limit, help="e.g. 50/second")
    parser.add_argument(
        "--query-budget", type=int, default=None, help="default: 40%% of what the rate allows"
    )
    parser.add_argument("--injection-budget", type=int, default=defaults.injection_budget)
    parser.add_argument("--item-budget", type=int, default=None)
    parser.add_argument("--pretend-users", type=int, default=defaults.pretend_users)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--weights", default=defaults.weights, help="topk=N,inject=N,replay=N")
    parser.add_argument("--profile-size", default=defaults.profile_size, help="min-max items")
    parser.add_argument("--stop-timeout", type=int, default=defaults.stop_timeout)
    args = parser.parse_args(argv)
    return LoadTestConfig(
        artifact=args.artifact,
        out=args.out,
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time=args.run_time,
        rate_limit=args.rate_limit,
        query_budget=args.query_budget,
        injection_budget=args.injection_budget,
        item_budget=args.item_budget,
        pretend_users=args.pretend_users,
        seed=args.seed,
        weights=args.weights,
        profile_size=args.profile_size,
        stop_timeout=args.stop_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if not config.artifact.is_file():
        print(f"no artifact at {config.artifact}", file=sys.stderr)
        return 2
    summary = run_loadtest(config)
    print_summary(summary, config.out)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
