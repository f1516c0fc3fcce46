"""Reference recommenders on the same split: MostPopular, BPR-MF and EASE.

Each is fitted on the training split (tuning on the validation split only) and exposes
``score(users) -> (len(users), n_items)``, the form :mod:`shared.metrics` evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_server.cancellation import check_cancelled
from recsys_server.data import TargetData
from recsys_server.training import (
    History,
    TrainConfig,
    fit_with_early_stopping,
    progress_bar,
)
from shared.bpr import bpr_batches, bpr_loss
from shared.determinism import use_deterministic_torch


class MostPopular:
    def __init__(self, data: TargetData) -> None:
        self.popularity = np.bincount(data.train[:, 1], minlength=data.n_items).astype(float)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity)))


class EASE:
    """Steck 2019: closed-form item-item weights, ``B = I - P / diag(P)``, ``P = (X'X + l I)^-1``;
    the L2 weight ``l`` picked on validation HR@10 from a grid."""

    GRID = (50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)

    def __init__(
        self, data: TargetData, l2: float | None = None, *, progress: bool = False
    ) -> None:
        self.matrix = data.train_matrix().astype(np.float64)
        gram = (self.matrix.T @ self.matrix).toarray()
        self.validation: dict[float, float] = {}
        candidates = (l2,) if l2 is not None else self.GRID
        with progress_bar(len(candidates), "EASE", "L2 weight", enabled=progress) as bar:
            for candidate in candidates:
                self.weights = self._fit(gram, candidate)
                self.validation[candidate] = data.validation_hr10(self.score)
                bar.set_postfix_str(
                    f"l2 {candidate:g}: val HR@10 {self.validation[candidate]:.4f}", refresh=False
                )
                bar.update()
        self.l2 = max(self.validation, key=self.validation.__getitem__)
        self.weights = self._fit(gram, self.l2)

    @staticmethod
    def _fit(gram: np.ndarray, l2: float) -> np.ndarray:
        regularised = gram + l2 * np.eye(len(gram))
        inverse = np.linalg.inv(regularised)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        return weights

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[users] @ self.weights)


@dataclass(frozen=True)
class BPRConfig:
    dim: int = 64
    l2: float = 1e-2


class BPRMF(nn.Module):
    """Matrix factorisation with an item bias, trained with BPR and early stopping."""

    def __init__(self, n_users: int, n_items: int, config: BPRConfig, seed: int = 0) -> None:
        """Untrained: normal(0, 0.1) factors, zero biases (see :meth:`trained`)."""
        super().__init__()
        use_deterministic_torch()
        # a generator of its own: building (or loading) a model leaves the process's
        # global RNG alone. It draws what the global-seed version drew, in its order (each
        # table's N(0, 1) default init, then the factors' N(0, 0.1)), so a seed gives the
        # same model as before and the BPR-MF and MF numbers of docs/victims.md ("Quality on
        # the real targets", "Item-kNN and MF") still reproduce.
        generator = torch.Generator().manual_seed(seed)
        for shape in ((n_users, config.dim), (n_items, config.dim), (n_items, 1)):
            torch.empty(shape).normal_(generator=generator)
        users = torch.empty(n_users, config.dim).normal_(std=0.1, generator=generator)
        items = torch.empty(n_items, config.dim).normal_(std=0.1, generator=generator)
        self.users = nn.Embedding(n_users, config.dim, _weight=users)
        self.items = nn.Embedding(n_items, config.dim, _weight=items)
        self.item_bias = nn.Embedding(n_items, 1, _weight=torch.zeros(n_items, 1))
        self.config = config
        self.l2 = config.l2
        self.history = History()

    @classmethod
    def trained(
        cls, data: TargetData, config: BPRConfig, train: TrainConfig, desc: str = "BPR-MF"
    ) -> BPRMF:
        model = cls(data.n_users, data.n_items, config, train.seed)
        model.fit(data, train, desc)
        return model

    def fit(
        self, data: TargetData, train: TrainConfig, desc: str, pairs: np.ndarray | None = None
    ) -> History:
        """Train on ``pairs`` (user, item; default: the training split's) with early
        stopping on validation HR@10; the model keeps its best epoch."""
        rng = np.random.default_rng(train.seed)
        pairs = np.unique(data.train[:, :2], axis=0) if pairs is None else pairs
        optimiser = torch.optim.Adam(self.parameters(), lr=train.lr)
        l2 = self.config.l2

        def run_epoch() -> float:
            total = 0.0
            for users, positives, negatives in bpr_batches(
                pairs, data.n_items, train.batch_size, rng
            ):
                check_cancelled()
                u = self.users(users)
                pos, neg = self.items(positives), self.items(negatives)
                positive = (u * pos).sum(1) + self.item_bias(positives).squeeze(1)
                negative = (u * neg).sum(1) + self.item_bias(negatives).squeeze(1)
                penalty = l2 * (u.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum())
                loss = bpr_loss(positive, negative) + penalty / len(users)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(users)
            return total / len(pairs)

        self.history = fit_with_early_stopping(
            self, run_epoch, lambda: data.validation_hr10(self.score), train, desc=desc
        )
        return self.history

    @torch.no_grad()
    def score(self, users: np.ndarray) -> np.ndarray:
        u = self.users(torch.as_tensor(users))
        return (u @ self.items.weight.T + self.item_bias.weight.T).numpy()

    # The L2 weight decides most of BPR-MF's quality on these sparse targets (most users
    # hold one to three items): on MovieTweetings' validation split 1e-4 gave HR@10
    # 0.634 / 0.101 (sampled / full), 1e-2 gave 0.702 / 0.171.
    L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

    @classmethod
    def tuned(
        cls, data: TargetData, train: TrainConfig, dim: int = BPRConfig.dim
    ) -> tuple[BPRMF, dict[float, float]]:
        """The model of the L2 weight with the best validation HR@10 (sampled), and every
        weight's validation HR@10."""
        grid = cls.L2_GRID
        fits = {
            l2: cls.trained(
                data, BPRConfig(dim=dim, l2=l2), train, f"BPR-MF {i}/{len(grid)} (l2 {l2:g})"
            )
            for i, l2 in enumerate(grid, 1)
        }
        validation = {l2: model.history.best for l2, model in fits.items()}
        return fits[max(validation, key=validation.__getitem__)], validation
