"""Training PinSage with BPR: each user is the mean of its other items (leave the positive
out, so a user never explains an item by itself), Adam, early stopping on validation
HR@10. :func:`scheduled_retrain` fine-tunes a trained model on a polluted graph, as a
nightly job would: the second threat model beside the paper's frozen one."""

from __future__ import annotations

import copy

import numpy as np
import torch

from recsys_server.cancellation import check_cancelled
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import (
    GraphTensors,
    PinSage,
    PinSageConfig,
    degree_features,
    id_mask,
)
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.sampler import neighbourhoods_of
from recsys_server.training import (
    History,
    TrainConfig,
    fit_with_early_stopping,
)
from shared.bpr import bpr_batches, bpr_loss
from shared.determinism import use_deterministic_torch


def train_pinsage(
    data: TargetData,
    config: PinSageConfig,
    train: TrainConfig,
    *,
    graph: InteractionGraph | None = None,
    model: PinSage | None = None,
) -> tuple[PinSage, History]:
    use_deterministic_torch()
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    graph = graph or InteractionGraph(data.train, data.n_users, data.n_items)
    model = model or PinSage(config, data.content.shape[1], data.n_items)
    config = model.config
    hoods = neighbourhoods_of(graph, config.walks, np.arange(data.n_items))
    tensors = GraphTensors(
        content=torch.as_tensor(data.content),
        degree=torch.as_tensor(degree_features(graph.degree, config.degree_steps_per_octave)),
        id_mask=torch.as_tensor(id_mask(config, graph.train_degree)),
        neighbour_index=torch.from_numpy(hoods.index),
        neighbour_weight=torch.from_numpy(hoods.weight),
    )
    matrix = graph.user_item_matrix().tocoo()
    pairs = np.stack([matrix.row, matrix.col], axis=1).astype(np.int64)
    user_items = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([matrix.row, matrix.col])),
        torch.ones(len(pairs), dtype=torch.float32),
        matrix.shape,
        check_invariants=True,
    ).coalesce()
    lengths = torch.as_tensor(np.asarray(matrix.tocsr().sum(axis=1)).ravel(), dtype=torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    def run_epoch() -> float:
        total = 0.0
        batches = bpr_batches(pairs, data.n_items, train.batch_size, rng)
        for users, positives, negatives in batches:
            check_cancelled()
            z, bias = model.item_table(tensors, drop_ids=config.id_dropout)
            sums = torch.sparse.mm(user_items, z)
            others = (lengths[users] - 1).unsqueeze(1)
            vectors = torch.where(
                others > 0, (sums[users] - z[positives]) / others.clamp(min=1), model.default_user
            )
            positive = (vectors * z[positives]).sum(1) + bias[positives]
            negative = (vectors * z[negatives]).sum(1) + bias[negatives]
            loss = bpr_loss(positive, negative)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(users)
        return total / len(pairs)

    def validate() -> float:
        state = EmbeddingState(model, graph, data.content, neighbourhoods=hoods)
        return data.validation_hr10(state.scores)

    history = fit_with_early_stopping(model, run_epoch, validate, train, desc="PinSage")
    return model.eval(), history


def scheduled_retrain(
    model: PinSage, data: TargetData, graph: InteractionGraph, epochs: int = 3
) -> PinSage:
    """A copy of ``model`` fine-tuned for ``epochs`` epochs on ``graph`` (training users
    plus injected ones), keeping the epoch with the best validation HR@10."""
    train = TrainConfig(max_epochs=epochs, patience=epochs, progress=False)
    tuned, _ = train_pinsage(
        data, model.config, train, graph=copy.deepcopy(graph), model=copy.deepcopy(model)
    )
    return tuned
