"""Throughput and latency of the service through the full stack, against a no-op route of
the same app, in the same run, over 127.0.0.1.

Starts ``recsys-server serve`` on the given artifact, creates a world, then alternates
rounds of ``GET /livez`` (no auth, no model: the no-op baseline) and ``GET /topk/{user}``
(auth, rate limit, the query lease, model) at each concurrency, and finally times
``POST /inject_user`` with the incremental refresh. The client runs in this process, the
server in another; both share the machine, so only ratios within one run are compared.
Medians over rounds are reported. The last line is JSON.

    python benchmarks/service_throughput.py --artifact artifacts/demo/primary/model.pt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.machine import machine
from shared.process import ServerProcess

ADMIN_TOKEN = "benchmark-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class _Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams. httpx at 32 connections
    spends more CPU per request than the server does, and client and server share the
    two cores, so a heavy client would measure itself."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    async def __aenter__(self) -> _Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    async def get(self, path: str) -> int:
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        await self.reader.readexactly(length)
        return int(lines[0].split()[1])


async def _round(url: str, paths: list[str], headers: dict[str, str], concurrency: int) -> dict:
    """``len(paths)`` GETs over ``concurrency`` connections; throughput, latency quantiles."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(paths))

    async def worker() -> None:
        async with _Connection(host, int(port), headers) as connection:
            while queue:
                path = queue.pop()
                started = time.perf_counter()
                status = await connection.get(path)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "rps": len(paths) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": statuses,
    }


def _median_of(rounds: list[dict]) -> dict:
    return {
        key: round(statistics.median(r[key] for r in rounds), 3)
        for key in ("rps", "p50_ms", "p99_ms")
    } | {"rounds": len(rounds), "non_200": sum(
        n for r in rounds for status, n in r["statuses"].items() if status != 200
    )}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--injections", type=int, default=100)
    parser.add_argument("--profile-length", type=int, default=50)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(
            args.artifact,
            Path(folder) / "ledger.db",
            admin_token=ADMIN_TOKEN,
            env={"RECSYS_RATE_LIMIT": "1000000/second"},
        ).start(timeout=600)
        try:
            result = run(server.url, args)
        finally:
            server.stop()
    result["server_pid_cpu_count"] = os.cpu_count()
    print(json.dumps({"benchmark": "service_throughput", "machine": machine(), **result}))


def run(url: str, args: argparse.Namespace) -> dict:
    budgets = {"queries": 10**9, "injections": 10**6, "items": 10**9}
    world = httpx.post(f"{url}/admin/worlds", json={"budgets": budgets}, headers=ADMIN).json()
    key = {"X-API-Key": world["api_key"]}
    users = world["pretend_users"]
    topk = [f"/topk/{users[i % len(users)]}?k={args.k}" for i in range(args.requests)]
    noop = ["/livez"] * args.requests
    out: dict = {"k": args.k, "requests_per_round": args.requests, "concurrency": {}}
    for concurrency in args.concurrency:
        asyncio.run(_round(url, topk[:200], key, concurrency))  # warm-up
        asyncio.run(_round(url, noop[:200], {}, concurrency))
        rounds: dict[str, list[dict]] = {"noop": [], "topk": []}
        for _ in range(args.rounds):  # alternate, so drift hits both alike
            rounds["noop"].append(asyncio.run(_round(url, noop, {}, concurrency)))
            rounds["topk"].append(asyncio.run(_round(url, topk, key, concurrency)))
        summary = {name: _median_of(r) for name, r in rounds.items()}
        summary["topk_over_noop_rps"] = round(summary["topk"]["rps"] / summary["noop"]["rps"], 3)
        out["concurrency"][str(concurrency)] = summary
    out["inject_user"] = _injections(url, key, args)
    return out


def _injections(url: str, key: dict[str, str], args: argparse.Namespace) -> dict:
    n_items = httpx.get(f"{url}/admin/model", headers=ADMIN).json()["n_items"]
    rng = np.random.default_rng(0)
    latencies = []
    with httpx.Client(base_url=url, headers=key, timeout=120) as client:
        for _ in range(args.injections):
            profile = rng.choice(n_items, size=args.profile_length, replace=False).tolist()
            started = time.perf_counter()
            response = client.post("/inject_user", json={"items": profile})
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return {
        "profile_length": args.profile_length,
        "injections": args.injections,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }


if __name__ == "__main__":
    main()
