"""Training LightGCN: BPR on the final embeddings, the whole graph propagated at every
batch (the paper's full-graph training), L2 on the batch's ego rows, Adam, early stopping
on validation HR@10; the grid's best point on validation (:func:`train_tuned`).
:func:`scheduled_retrain` fine-tunes a trained model on a polluted graph, where the
injected users become trained users."""

from __future__ import annotations

import copy

import numpy as np
import torch

from recsys_server.cancellation import check_cancelled
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, LightGCNConfig, LightGCNGrid
from recsys_server.lightgcn.propagation import Propagation
from recsys_server.lightgcn.refresh import ego_users
from recsys_server.training import History, TrainConfig, fit_with_early_stopping
from shared.bpr import bpr_batches, bpr_loss
from shared.determinism import use_deterministic_torch


def train_lightgcn(
    data: TargetData,
    config: LightGCNConfig,
    train: TrainConfig,
    *,
    graph: InteractionGraph | None = None,
    model: LightGCN | None = None,
    desc: str = "LightGCN",
) -> tuple[LightGCN, History]:
    """Fit one configuration (``train``'s lr and weight decay are PinSage's; LightGCN's
    are ``config.lr`` and ``config.l2``)."""
    use_deterministic_torch()
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    graph = graph or InteractionGraph(data.train, data.n_users, data.n_items)
    model = model or LightGCN(config, graph.n_users, data.n_items)
    propagation = Propagation(graph)
    matrix = graph.user_item_matrix().tocoo()
    pairs = np.stack([matrix.row, matrix.col], axis=1).astype(np.int64)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)

    def run_epoch() -> float:
        total = 0.0
        for users, positives, negatives in bpr_batches(pairs, data.n_items, train.batch_size, rng):
            check_cancelled()
            user_final, item_final = model.final(propagation)
            u = user_final[users]
            loss = bpr_loss((u * item_final[positives]).sum(1), (u * item_final[negatives]).sum(1))
            egos = (
                model.user_ego(users).pow(2).sum()
                + model.item_ego(positives).pow(2).sum()
                + model.item_ego(negatives).pow(2).sum()
            )
            loss = loss + config.l2 * egos / (2 * len(users))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(users)
        return total / len(pairs)

    def validate() -> float:
        with torch.no_grad():
            user_final, item_final = model.final(propagation)
        return data.validation_hr10(lambda users: (user_final[users] @ item_final.T).numpy())

    history = fit_with_early_stopping(model, run_epoch, validate, train, desc=desc)
    model.fit_fold_in(graph)
    return model.eval(), history


def train_tuned(
    data: TargetData, grid: LightGCNGrid, train: TrainConfig
) -> tuple[LightGCN, History, dict[str, float]]:
    """One model per grid point (same seed); the best on validation HR@10, its history,
    and every point's validation HR@10 (keyed ``dim=..,lr=..,l2=..``)."""
    best: tuple[LightGCN, History] | None = None
    validation: dict[str, float] = {}
    configs = grid.configs()
    for i, config in enumerate(configs, 1):
        name = f"dim={config.dim},lr={config.lr:g},l2={config.l2:g}"
        model, history = train_lightgcn(
            data, config, train, desc=f"LightGCN {i}/{len(configs)} ({name})"
        )
        validation[name] = round(history.best, 4)
        if best is None or history.best > best[1].best:
            best = (model, history)
    assert best is not None  # a grid has at least one point
    return best[0], best[1], validation


def scheduled_retrain(
    model: LightGCN, data: TargetData, graph: InteractionGraph, epochs: int = 3
) -> LightGCN:
    """A copy of ``model`` fine-tuned for ``epochs`` epochs on ``graph`` (training users
    plus injected ones, which start from their fold-in rows and become trained users),
    keeping the epoch with the best validation HR@10."""
    tuned = LightGCN(model.config, graph.n_users, model.n_items)
    with torch.no_grad():
        tuned.user_ego.weight.copy_(torch.from_numpy(ego_users(model, graph)))
        tuned.item_ego.weight.copy_(model.item_ego.weight)
        tuned.fold_in.copy_(model.fold_in)
    train = TrainConfig(max_epochs=epochs, patience=epochs, progress=False)
    tuned, _ = train_lightgcn(data, model.config, train, graph=copy.deepcopy(graph), model=tuned)
    return tuned
