"""PinSage as a victim: the model of :mod:`recsys_server.pinsage`, served by its
incremental :class:`~recsys_server.pinsage.refresh.EmbeddingState`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSage, PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.train import train_pinsage
from recsys_server.training import History, TrainConfig
from recsys_server.victims.base import Victim


@dataclass
class PinSageVictim(Victim):
    model: PinSage
    name: ClassVar[str] = "pinsage"
    label: ClassVar[str] = "PinSage"

    @classmethod
    def default_config(cls) -> PinSageConfig:
        return PinSageConfig()

    @classmethod
    def train(
        cls, data: TargetData, config: PinSageConfig, train: TrainConfig
    ) -> tuple[PinSageVictim, History]:
        model, history = train_pinsage(data, config, train)
        return cls(model), history

    def serving_state(
        self, data: TargetData, graph: InteractionGraph | None = None
    ) -> EmbeddingState:
        graph = graph or InteractionGraph(data.train, data.n_users, data.n_items)
        return EmbeddingState(self.model, graph, data.content)

    def config_dict(self) -> dict[str, Any]:
        return self.model.config.to_dict()

    def to_payload(self) -> dict[str, Any]:
        return {
            "config": self.model.config.to_dict(),
            "n_content": self.model.n_content,
            "n_items": self.model.n_items,
            "state_dict": self.model.state_dict(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        config = PinSageConfig.from_dict(payload["config"])
        model = PinSage(config, payload["n_content"], payload["n_items"])
        model.load_state_dict(payload["state_dict"])
        return cls(model.eval())

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())
