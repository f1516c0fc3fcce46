"""The LightGCN model: ego (layer-0) embeddings of users and items, no weights, no
non-linearity; a node's final embedding is the mean of its layers 0..n_layers on the
normalised graph, and score(user, item) = <final user, final item>.

A user injected after training has no trained ego row. It gets one by the **fold-in
rule**: the mean of its items' ego rows times a d x d map ``fold_in``, the least-squares
map from each training user's item mean to its trained ego row (fitted once, after
training). The rule reads only frozen item ego rows, so an injection changes layer 0 in
one row (its own) and is exact and cheap to refresh; the map puts injected users where a
trained user with the same items would most likely sit (the plain mean is the special case
``fold_in = I``, and worse on the training users by construction). From layer 1 on the
injected user propagates like every other user.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.propagation import Propagation
from shared.options import option


@dataclass(frozen=True)
class LightGCNConfig:
    dim: int = 64
    n_layers: int = 3  # the paper's choice
    lr: float = 0.005  # Adam
    l2: float = 1e-4  # on the batch's ego rows, as the paper regularises

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_layers < 1 or self.lr <= 0 or self.l2 < 0:
            raise ValueError(f"invalid LightGCN settings: {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LightGCNConfig:
        return cls(**data)


@dataclass(frozen=True)
class LightGCNGrid:
    """The family's default: one model per point of a small grid, the best on validation
    HR@10 kept. Small because every epoch propagates over the whole graph per batch on a
    2-core machine (docs/victims.md, "LightGCN"); narrower on the command line where even
    that is too dear (the synthetic ``paper`` preset)."""

    dims: tuple[int, ...] = option(
        (32, 64), "LightGCN's grid: embedding sizes", flag="--lightgcn-dims"
    )
    lrs: tuple[float, ...] = option(
        (0.001, 0.005), "LightGCN's grid: Adam learning rates", flag="--lightgcn-lrs"
    )
    l2s: tuple[float, ...] = option(
        (1e-4, 1e-2), "LightGCN's grid: L2 weights on the batch's ego rows", flag="--lightgcn-l2s"
    )
    n_layers: int = 3  # the paper's choice, not a grid axis

    def __post_init__(self) -> None:
        if not (self.dims and self.lrs and self.l2s):
            raise ValueError("every axis of LightGCN's grid needs at least one value")
        self.configs()  # each point's own checks, now rather than after hours of training

    def configs(self) -> list[LightGCNConfig]:
        return [
            LightGCNConfig(dim=dim, n_layers=self.n_layers, lr=lr, l2=l2)
            for dim, lr, l2 in itertools.product(self.dims, self.lrs, self.l2s)
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LightGCN(nn.Module):
    fold_in: torch.Tensor  # (dim, dim), registered as a buffer in __init__

    def __init__(self, config: LightGCNConfig, n_users: int, n_items: int) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.user_ego = nn.Embedding(n_users, config.dim)
        self.item_ego = nn.Embedding(n_items, config.dim)
        # Gaussian (0, 0.1), as the reference implementation initialises
        nn.init.normal_(self.user_ego.weight, std=0.1)
        nn.init.normal_(self.item_ego.weight, std=0.1)
        # the fold-in map (module docstring); a buffer, so it is saved and fingerprinted
        self.register_buffer("fold_in", torch.eye(config.dim))

    def final(self, propagation: Propagation) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's and item's final embedding: the mean of layers 0..n_layers."""
        users, items = propagation.layers(
            self.user_ego.weight, self.item_ego.weight, self.config.n_layers
        )
        return torch.stack(users).mean(0), torch.stack(items).mean(0)

    @torch.no_grad()
    def fit_fold_in(self, graph: InteractionGraph) -> None:
        """The least-squares map from the trained users' item means to their ego rows."""
        users = np.array([*range(graph.n_base_users), *graph.injected_users], dtype=np.int64)
        users = users[users < self.n_users]
        users = users[graph.profile_length(users) > 0]
        means = item_means(self.item_ego.weight.numpy(), graph, users)
        egos = self.user_ego.weight.numpy()[users].astype(np.float64)
        solution, *_ = np.linalg.lstsq(means.astype(np.float64), egos, rcond=None)
        self.fold_in.copy_(torch.from_numpy(solution.astype(np.float32)))


def item_means(item_ego: np.ndarray, graph: InteractionGraph, users: np.ndarray) -> np.ndarray:
    """Each user's mean of its items' ego rows (zeros for an empty profile)."""
    indptr, items = graph.profiles_of(np.asarray(users, dtype=np.int64))
    # a zero row at the end keeps reduceat's indices in range when trailing profiles are empty
    gathered = np.zeros((len(items) + 1, item_ego.shape[1]), dtype=np.float32)
    gathered[:-1] = item_ego[items]
    sums = np.add.reduceat(gathered, indptr[:-1], axis=0)
    sums[np.diff(indptr) == 0] = 0.0
    return sums / np.maximum(np.diff(indptr), 1)[:, None].astype(np.float32)


def folded_in(
    item_ego: np.ndarray, fold_in: np.ndarray, graph: InteractionGraph, users: np.ndarray
) -> np.ndarray:
    """The fold-in rule's ego rows of ``users`` (their profiles in ``graph``)."""
    return item_means(item_ego, graph, users) @ fold_in
