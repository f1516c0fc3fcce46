"""LightGCN as a victim: the model of :mod:`recsys_server.lightgcn`, tuned on validation
over a small grid, served by its exact incremental
:class:`~recsys_server.lightgcn.refresh.LightGCNState`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, LightGCNConfig, LightGCNGrid
from recsys_server.lightgcn.refresh import LightGCNState
from recsys_server.lightgcn.train import train_lightgcn, train_tuned
from recsys_server.training import History, TrainConfig
from recsys_server.victims.base import Victim


@dataclass
class LightGCNVictim(Victim):
    model: LightGCN
    # validation HR@10 of each grid point the model was chosen from (empty: no grid)
    grid_validation: dict[str, float] = field(default_factory=dict)
    name: ClassVar[str] = "lightgcn"
    label: ClassVar[str] = "LightGCN"

    @classmethod
    def default_config(cls) -> LightGCNGrid:
        return LightGCNGrid()

    @classmethod
    def train(
        cls, data: TargetData, config: LightGCNGrid | LightGCNConfig, train: TrainConfig
    ) -> tuple[LightGCNVictim, History]:
        if isinstance(config, LightGCNConfig):
            model, history = train_lightgcn(data, config, train)
            return cls(model), history
        model, history, validation = train_tuned(data, config, train)
        return cls(model, validation), history

    def serving_state(
        self, data: TargetData, graph: InteractionGraph | None = None
    ) -> LightGCNState:
        graph = graph or InteractionGraph(data.train, data.n_users, data.n_items)
        return LightGCNState(self.model, graph)

    def config_dict(self) -> dict[str, Any]:
        return {**self.model.config.to_dict(), "grid_validation_hr10": self.grid_validation}

    def to_payload(self) -> dict[str, Any]:
        return {
            "config": self.model.config.to_dict(),
            "n_users": self.model.n_users,
            "n_items": self.model.n_items,
            "state_dict": self.model.state_dict(),
            "grid_validation": self.grid_validation,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        config = LightGCNConfig.from_dict(payload["config"])
        model = LightGCN(config, payload["n_users"], payload["n_items"])
        model.load_state_dict(payload["state_dict"])
        return cls(model.eval(), dict(payload["grid_validation"]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())
