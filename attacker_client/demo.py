"""``copyattack demo``: the compose topology on one machine, without containers.

1. trainer: ``recsys-server prepare`` fetches missing data, builds the pair's scenario and
   trains the target model, each only when not already current (a second demo reuses
   the model of the first);
2. target: ``recsys-server serve`` as a child process on 127.0.0.1 with a fresh ledger and
   a random admin token, until ``/readyz`` answers;
3. attacker: a quick Table 2 (a few cold target items, every method) over HTTP, as
   ``copyattack experiment table2`` runs it;
4. the table, where the files are, the server stopped whatever happened.

The trainer and the server run as processes, as they do in compose: the attacker side
imports nothing of the server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from attacker_client.copyattack import CopyAttackArgs
from attacker_client.harness import ExperimentConfig, run_table2
from attacker_client.methods import METHODS
from shared.datasets.pair import NAMED_PAIRS
from shared.errors import CopyAttackError
from shared.options import option, positive
from shared.process import ServerProcess, run_tied


@dataclass(frozen=True)
class DemoArgs:
    pair: str = option("primary", "target <- source platforms", choices=sorted(NAMED_PAIRS))
    data_dir: Path | None = option(
        None, "dataset folder (default: $COPYATTACK_DATA_DIR, else ./data)"
    )
    workdir: Path = option(Path("artifacts/demo"), "model cache (the scenario and model, per pair)")
    out: Path = option(Path("results/demo"), "tables and plots (per pair)")
    targets: int = option(3, "cold target items (the full Table 2 uses 50)", parse=positive)
    episodes: int = option(2, "CopyAttack's training episodes", parse=positive)
    methods: tuple[str, ...] = METHODS
    concurrency: int = 4

    @property
    def attack(self) -> CopyAttackArgs:
        """The real pairs' settings of the README's Table 2 ("Results"), with fewer training
        episodes."""
        return CopyAttackArgs(episodes=self.episodes, k=100, reward="rank")


def _prepare(args: DemoArgs) -> Path:
    """The trainer step, as a process; returns the pair's work folder."""
    workdir = args.workdir / args.pair
    command = [sys.executable, "-m", "recsys_server.cli", "prepare", "--pair", args.pair,
               "--workdir", str(workdir)]  # fmt: skip
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    print(f"[1/3] trainer: {' '.join(command[2:])}", flush=True)
    # unbuffered: its lines show as they happen, not all at the end; tied to this process:
    # it ends with it, even on SIGKILL
    if run_tied(command, {**os.environ, "PYTHONUNBUFFERED": "1"}) != 0:
        raise CopyAttackError("the trainer step failed (its error is above)")
    return workdir


def run_demo(args: DemoArgs) -> Path:
    """Run the three steps; returns the folder of the results."""
    started = time.perf_counter()
    workdir = _prepare(args)
    out = args.out / args.pair
    # a demo attacks afresh every time (the model is what is cached); an interrupted
    # demo starts its attack over rather than mixing runs
    shutil.rmtree(out, ignore_errors=True)
    token = secrets.token_urlsafe(32)
    # a fresh ledger in a temporary folder, which the server deletes when it ends: also
    # when this process is SIGKILLed (the server then ends too: it is tied to this process)
    server = ServerProcess(workdir / "model.pt", None, admin_token=token)
    print(f"[2/3] target: recsys-server serve on {server.url}", flush=True)
    try:
        server.start()
        config = ExperimentConfig(
            server=server.url,
            admin_token=token,
            scenario=workdir / "scenario",
            out=out,
            methods=args.methods,
            targets=args.targets,
            concurrency=args.concurrency,
            attack=args.attack,
        )
        print(f"[3/3] attacker: Table 2 on {args.targets} cold targets, "
              f"{len(args.methods)} methods, over HTTP", flush=True)  # fmt: skip
        summary = asyncio.run(run_table2(config))
    finally:  # also on Ctrl-C, and on SIGTERM (the CLI handles it as Ctrl-C)
        server.stop()
    print()
    print((out / "table2.md").read_text())
    print(f"tables: {out}/table2.md, .csv, .json; budget curve: {out}/budget_curve.png")
    print(f"attack {summary.wall_seconds_this_run} s; "
          f"demo {time.perf_counter() - started:.0f} s in all")  # fmt: skip
    return out
