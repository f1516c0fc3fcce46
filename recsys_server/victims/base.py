"""What every victim recommender offers the service, the trainer and the probe.

A :class:`Victim` is a trained model (weights or statistics, and the configuration that
made them), stored in the model artifact. Its :class:`ServingState` is the model live on
an :class:`~recsys_server.graph.InteractionGraph`: the training users plus injected ones.
A state is forked (copy-on-write: a world holds only what its own injections changed),
takes users in and out exactly (the result equals a state built from scratch on the same
graph), scores any user, and can be fine-tuned on its own polluted graph as a scheduled
retrain would.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.training import History, TrainConfig


class VictimConfig(Protocol):
    """A family's settings: what the training key and ``GET /admin/model`` record."""

    def to_dict(self) -> dict[str, Any]: ...


class ServingState(ABC):
    graph: InteractionGraph

    @abstractmethod
    def fork(self) -> Self:
        """An independent state on a fork of the same graph: changes to either never
        reach the other."""

    @abstractmethod
    def add_user(self, items: np.ndarray) -> int:
        """Add a user holding ``items``; return its id."""

    @abstractmethod
    def remove_user(self, user: int) -> None:
        """Take an injected user out again, as if it had never been added."""

    @abstractmethod
    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores; higher is better."""

    @abstractmethod
    def retrained(self, data: TargetData, epochs: int) -> ServingState:
        """The scheduled-retrain threat model: a new state whose model was fine-tuned for
        ``epochs`` epochs on a fork of this state's graph (training users plus injected
        ones), keeping the epoch with the best validation HR@10. ``self`` is unchanged."""

    def scores_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), m) scores of each user's own ``items[r]`` row. Victims that can
        score a few items without the whole catalogue override this."""
        return np.take_along_axis(self.scores(users), np.asarray(items), axis=1)

    def topk(self, user: int, k: int) -> np.ndarray:
        """The k best items the user does not hold, best first (ties by item id)."""
        scores = self.scores(np.array([user]))[0]
        held = self.graph.profile(user)
        scores[held] = -np.inf
        n = min(k, len(scores) - len(held))
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        # the n-th best score, then the items at or above it sorted (fewer than n above
        # it, then the lowest ids tied with it): linear time, the tie-break of a full sort
        threshold = np.partition(scores, len(scores) - n)[len(scores) - n]
        chosen = np.flatnonzero(scores >= threshold)
        return chosen[np.lexsort((chosen, -scores[chosen]))][:n]


class Victim(ABC):
    """A trained recommender of one family (``name``), as the artifact stores it."""

    name: ClassVar[str]  # on command lines and in the artifact: "pinsage"
    label: ClassVar[str]  # in tables: "PinSage"

    @classmethod
    @abstractmethod
    def default_config(cls) -> VictimConfig:
        """The family's settings when no flag sets them."""

    @classmethod
    @abstractmethod
    def train(cls, data: TargetData, config: Any, train: TrainConfig) -> tuple[Self, History]:
        """Fit on ``data.train`` with early stopping on validation HR@10; ``config`` is the
        family's settings."""

    @abstractmethod
    def serving_state(
        self, data: TargetData, graph: InteractionGraph | None = None
    ) -> ServingState:
        """The model live on ``graph`` (default: the training graph of ``data``)."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The settings that made the model (shown by ``GET /admin/model``)."""

    @abstractmethod
    def to_payload(self) -> dict[str, Any]:
        """Everything :meth:`from_payload` needs, as tensors and plain values (what
        ``torch.load(weights_only=True)`` accepts)."""

    @classmethod
    @abstractmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self: ...

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The learned numbers, by name: what :meth:`fingerprint` hashes."""

    def fingerprint(self) -> str:
        """sha256 of the learned numbers: which model is served, whatever its file is
        called."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.tensors().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
