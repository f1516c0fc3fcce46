"""The SDK's CPU per ``/topk`` query with its lean keep-alive transport against httpx's
default transport (httpcore), in the same run, against the same server; and the wall
time of one reward step's queries in flight together (``topk_many``) against one after
another (the speed claim the tests leave to this script: they check only that the
queries overlap).

Starts ``recsys-server serve`` on the given artifact (rate limit lifted, so only CPU
counts), creates a world, then alternates rounds of ``topk_many`` over the 50 pretend
users with each transport, and of the 50 queries sent one at a time (lean transport).
Client CPU is this process's CPU time; the server's is read from /proc. Medians over
rounds; the last line is JSON.

    python benchmarks/client_transport.py --artifact artifacts/demo/primary/model.pt
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacker_client import AsyncAdminClient, AsyncClient
from attacker_client._transport import KeepAliveTransport
from shared.machine import machine
from shared.process import ServerProcess

ADMIN_TOKEN = "benchmark-admin-token-0123456789"


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, server_pid: int, rounds: int, per_round: int) -> dict:
    admin = AsyncAdminClient(url, ADMIN_TOKEN)
    world = await admin.create_world(
        n_pretend_users=50, budgets={"queries": 10**8, "injections": 1, "items": 1}
    )

    def httpcore() -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8)
        )

    def lean() -> httpx.AsyncBaseTransport:
        return KeepAliveTransport(max_connections=8)

    async def together(client: AsyncClient) -> None:
        await client.topk_many(world.pretend_users, 100)

    async def one_by_one(client: AsyncClient) -> None:
        for user in world.pretend_users:
            await client.topk(user, 100)

    modes = {
        "httpcore": (httpcore, together),
        "lean": (lean, together),
        "lean_one_by_one": (lean, one_by_one),
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {"client_ms": [], "server_ms": [], "wall_ms": []} for name in modes
    }
    for _ in range(rounds):
        for name, (make, step) in modes.items():
            async with AsyncClient(url, world.api_key, transport=make()) as client:
                await client.topk_many(world.pretend_users, 100)  # connections opened
                queries = per_round * len(world.pretend_users)
                wall, cpu, server = (
                    time.perf_counter(),
                    time.process_time(),
                    process_cpu(server_pid),
                )
                for _ in range(per_round):
                    await step(client)
                record = samples[name]
                record["wall_ms"].append((time.perf_counter() - wall) / queries * 1e3)
                record["client_ms"].append((time.process_time() - cpu) / queries * 1e3)
                record["server_ms"].append((process_cpu(server_pid) - server) / queries * 1e3)
    await admin.delete_world(world.world_id)
    await admin.aclose()
    medians = {
        name: {key: round(statistics.median(values), 3) for key, values in record.items()}
        for name, record in samples.items()
    }
    return {
        "per_query": medians,
        "client_cpu_httpcore_over_lean": round(
            medians["httpcore"]["client_ms"] / medians["lean"]["client_ms"], 2
        ),
        "wall_one_by_one_over_together": round(
            medians["lean_one_by_one"]["wall_ms"] / medians["lean"]["wall_ms"], 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20, help="topk_many calls per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            args.artifact,
            Path(tmp) / "ledger.sqlite3",
            admin_token=ADMIN_TOKEN,
            env={"RECSYS_RATE_LIMIT": "1000000/second"},
        ).start()
        try:
            assert server.process is not None
            result = asyncio.run(
                measure(server.url, server.process.pid, args.rounds, args.per_round)
            )
        finally:
            server.stop()
    print(json.dumps({"machine": machine(), **result}, indent=1))


if __name__ == "__main__":
    main()
