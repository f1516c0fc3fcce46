"""``recsys-server``: train the target model, and serve it.

    recsys-server train --scenario DIR --out FILE [--variant V] [--json]
    recsys-server serve --artifact FILE [--host H] [--port P] [--ledger FILE]

``train`` fits PinSage with early stopping on validation HR@10, evaluates it and the
baselines (MostPopular, BPR-MF, EASE) on the test split under both protocols, and writes
the model artifact. With ``--json`` the last line is the metrics as JSON.

``serve`` runs the black-box service. Every setting also comes from ``RECSYS_*``
environment variables (or ``.env``); the admin token only from ``RECSYS_ADMIN_TOKEN``,
never from a flag, so it does not show in process listings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys_server.artifact import ModelArtifact
from recsys_server.baselines import BPRMF, EASE, BPRConfig, MostPopular
from recsys_server.data import TargetData
from recsys_server.pinsage.graph import InteractionGraph
from recsys_server.pinsage.model import VARIANTS, PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.pinsage.train import train_pinsage
from recsys_server.training import TrainConfig
from shared.errors import CopyAttackError
from shared.metrics import ACTIVE_MIN_TRAIN, ScoreFn, evaluate
from shared.scenario import load_scenario


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-server", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train PinSage on a scenario, evaluate, save")
    train.add_argument("--scenario", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True, help="model artifact to write")
    train.add_argument("--variant", choices=VARIANTS, default=PinSageConfig.variant)
    train.add_argument("--warm-threshold", type=int, default=PinSageConfig.warm_threshold)
    train.add_argument(
        "--no-degree", action="store_true", help="no popularity feature in the item input"
    )
    train.add_argument(
        "--degree-steps",
        type=int,
        default=PinSageConfig.degree_steps_per_octave,
        help="round the degree feature to 1/N octave (0: continuous; N > 0: local refresh)",
    )
    train.add_argument("--residual", action="store_true", help="add the input to the output")
    train.add_argument("--id-dropout", type=float, default=0.0)
    train.add_argument("--dim", type=int, default=PinSageConfig.dim, help="paper: 8")
    train.add_argument("--layers", type=int, default=PinSageConfig.n_layers)
    train.add_argument("--walks", type=int, default=WalkConfig.n_walks)
    train.add_argument("--hops", type=int, default=WalkConfig.max_hops)
    train.add_argument("--neighbours", type=int, default=WalkConfig.n_neighbours)
    train.add_argument("--lr", type=float, default=TrainConfig.lr)
    train.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    train.add_argument("--max-epochs", type=int, default=TrainConfig.max_epochs)
    train.add_argument("--patience", type=int, default=TrainConfig.patience)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-baselines", action="store_true", help="evaluate PinSage only")
    train.add_argument("--json", action="store_true", help="last line: metrics as JSON")

    serve = commands.add_parser("serve", help="serve a trained model over HTTP")
    serve.add_argument("--artifact", type=Path, help="model file (RECSYS_ARTIFACT)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--ledger", type=Path, dest="ledger_path", help="SQLite ledger file")
    serve.add_argument("--max-k", type=int, help="largest k of /topk (default 100)")
    serve.add_argument("--rate-limit", help="per key, e.g. '200/second;6000/minute'")
    serve.add_argument("--log-level", default="info")
    return parser


def _evaluate_split(data: TargetData, score: ScoreFn, seed: int) -> dict[str, Any]:
    """Test metrics on every case, and on the cases of users with 3+ training items."""
    train_counts = np.bincount(data.train[:, 0], minlength=data.n_users)
    active = data.test[train_counts[data.test[:, 0]] >= ACTIVE_MIN_TRAIN]
    return {
        "all": evaluate(score, data.test, data.known, seed=seed),
        f"users_with_{ACTIVE_MIN_TRAIN}+_train": evaluate(score, active, data.known, seed=seed),
    }


def train_command(args: argparse.Namespace) -> dict[str, Any]:
    scenario = load_scenario(args.scenario)
    data = TargetData.from_scenario(scenario)
    try:
        config = PinSageConfig(
            variant=args.variant,
            warm_threshold=args.warm_threshold,
            use_degree=not args.no_degree,
            degree_steps_per_octave=args.degree_steps,
            dim=args.dim,
            n_layers=args.layers,
            residual=args.residual,
            id_dropout=args.id_dropout,
            walks=WalkConfig(
                n_walks=args.walks,
                max_hops=args.hops,
                n_neighbours=args.neighbours,
                seed=args.seed,
            ),
        )
    except ValueError as exc:
        raise CopyAttackError(str(exc)) from None
    train = TrainConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    started = time.perf_counter()
    model, history = train_pinsage(data, config, train)
    seconds = time.perf_counter() - started
    state = EmbeddingState(model, InteractionGraph(data.train, data.n_users, data.n_items),
                           data.content)  # fmt: skip
    results: dict[str, Any] = {
        "PinSage": {
            **_evaluate_split(data, state.scores, args.seed),
            "train_seconds": round(seconds, 1),
            "epochs": len(history.validation_hr10),
            "best_epoch": history.best_epoch,
            "validation_hr10": round(history.best, 4),
            "config": config.to_dict(),
        }
    }
    if not args.no_baselines:
        results["MostPopular"] = _evaluate_split(data, MostPopular(data).score, args.seed)
        bpr = BPRMF(data, BPRConfig(), TrainConfig(seed=args.seed, progress=False))
        results["BPR-MF"] = _evaluate_split(data, bpr.score, args.seed)
        ease = EASE(data)
        results["EASE"] = {**_evaluate_split(data, ease.score, args.seed), "l2": ease.l2}
    ModelArtifact(model, scenario.fingerprint, metrics=results, data=data).save(args.out)
    return results


def format_metrics(results: dict[str, Any]) -> str:
    lines = [
        f"{'model':<12}{'cases':<22}{'HR@10 sampled':>14}{'HR@10 full':>12}{'NDCG@10 full':>14}"
    ]
    for name, result in results.items():
        for cases, metrics in result.items():
            if not isinstance(metrics, dict) or "sampled" not in metrics:
                continue
            lines.append(
                f"{name:<12}{cases:<22}{metrics['sampled']['HR@10']:>14.4f}"
                f"{metrics['full']['HR@10']:>12.4f}{metrics['full']['NDCG@10']:>14.4f}"
            )
    return "\n".join(lines)


def serve_command(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from recsys_server.app import create_app
    from recsys_server.settings import Settings

    flags = ("artifact", "host", "port", "ledger_path", "max_k", "rate_limit")
    overrides = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise CopyAttackError(
            f"{problems} (flags, or RECSYS_* variables: RECSYS_ARTIFACT, RECSYS_ADMIN_TOKEN, ...)"
        ) from None
    # fail before listening, with the reason, rather than serve a model that cannot load
    ModelArtifact.load(settings.artifact)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve_command(args)
            return 0
        results = train_command(args)
    except CopyAttackError as exc:
        print(f"recsys-server: error: {exc}", file=sys.stderr)
        return 2
    print(format_metrics(results))
    print(f"model written to {args.out}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
