"""Processes for ``tests/test_tied_children.py`` to signal, run as
``python -m tests.tied_children MODE ARGS``; each prints a line when it is in place.

- ``demo WORKDIR OUT``: ``copyattack demo --pair tiny`` on the model already prepared in
  ``WORKDIR/tiny`` (the trainer step is skipped), whose attack never ends (pending tasks,
  as the harness's cells are) once the server is up: prints ``ATTACKING URL``;
- ``server-from-a-thread ARTIFACT``: a :class:`ServerProcess` without a ledger, started
  from a thread other than the main one (so tied by the child's watchdog, not by the
  parent-death signal): prints ``SERVING PID``, then waits.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

from shared.process import ServerProcess


async def attack_forever(config: Any) -> dict:
    print(f"ATTACKING {config.server}", flush=True)
    await asyncio.gather(*(asyncio.sleep(3600) for _ in range(4)))
    raise AssertionError("unreachable")


def run_demo(workdir: str, out: str) -> int:
    # imported here: the other mode does without the attacker's (slow) imports
    import attacker_client.demo as demo
    from attacker_client.cli import main as copyattack_main

    demo._prepare = lambda args: args.workdir / args.pair
    demo.run_table2 = attack_forever  # type: ignore[assignment]
    return copyattack_main(["demo", "--pair", "tiny", "--targets", "1", "--workdir", workdir,
                            "--out", out])  # fmt: skip


def serve_from_a_thread(artifact: str) -> int:
    server = ServerProcess(Path(artifact), None, admin_token="a-test-token-of-enough-length")
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()  # the thread that started the server is gone
    assert server.process is not None
    print(f"SERVING {server.process.pid}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    sys.exit(run_demo(*args) if mode == "demo" else serve_from_a_thread(*args))
