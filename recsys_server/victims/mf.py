"""Matrix factorisation as a victim: the project's BPR-MF
(:class:`~recsys_server.reference_recommenders.BPRMF`, L2 weight tuned on validation over its grid),
with injected users folded in.

Fold-in rule: an injected user's vector is the mean of its items' factors (zero for an
empty profile, which then scores by the item bias alone). It needs no solver and no
sampling, so it is exact and order-free, it is the rule PinSage applies to every user,
and BPR pulls a user's vector towards its items' factors. How much it loses against a
learned row, on validation, is what ``benchmarks/mf_fold_in.py`` measures.

Under the frozen model a user's scores depend only on its own vector and the item
table, so an injection cannot move any other user's scores. :meth:`MFState.retrained`
fine-tunes on the polluted graph, the injected users as trained rows (starting from
their fold-in), and that can move everyone's lists.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.reference_recommenders import BPRMF, BPRConfig
from recsys_server.training import History, TrainConfig
from recsys_server.victims.base import ServingState, Victim


@dataclass(frozen=True)
class MFConfig:
    dim: int = BPRConfig.dim
    l2: float | None = None  # None: chosen on validation HR@10 over BPRMF.L2_GRID

    def __post_init__(self) -> None:
        if self.dim < 1 or (self.l2 is not None and self.l2 < 0):
            raise ValueError(f"dim must be >= 1 and l2 >= 0, got {self.dim} and {self.l2}")

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "l2": self.l2}


class MFState(ServingState):
    def __init__(self, model: BPRMF, graph: InteractionGraph) -> None:
        self.model = model.eval()
        self.graph = graph
        self.item_factors = model.items.weight.detach().numpy()
        self.item_bias = model.item_bias.weight.detach().numpy()[:, 0]
        # learned rows: the training users, and the injected users a retrain trained
        self.user_rows = model.users.weight.detach().numpy()

    def fork(self) -> MFState:
        """Shares the (never written) tables; only the graph is the fork's own."""
        other = copy.copy(self)
        other.graph = self.graph.fork()
        return other

    def add_user(self, items: np.ndarray) -> int:
        return self.graph.add_user(np.asarray(items, dtype=np.int64))

    def remove_user(self, user: int) -> None:
        self.graph.remove_user(user)

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        vectors = np.empty((len(users), self.item_factors.shape[1]), dtype=np.float32)
        learned = users < len(self.user_rows)
        vectors[learned] = self.user_rows[users[learned]]
        for position in np.flatnonzero(~learned).tolist():
            vectors[position] = self.fold_in(self.graph.profile(int(users[position])))
        return vectors

    def fold_in(self, items: np.ndarray) -> np.ndarray:
        """The mean of the items' factors (module docstring)."""
        if len(items) == 0:
            return np.zeros(self.item_factors.shape[1], dtype=np.float32)
        return self.item_factors[items].mean(axis=0)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_vectors(users) @ self.item_factors.T + self.item_bias

    def scores_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        vectors = self.user_vectors(users)
        table = self.item_factors[items]  # (len(users), m, dim)
        return np.matmul(table, vectors[:, :, None])[:, :, 0] + self.item_bias[items]

    def retrained(self, data: TargetData, epochs: int) -> MFState:
        """BPR epochs on the polluted graph, from the current model: every user id the
        graph has handed out gets a row (injected users start from their fold-in,
        removed ones hold nothing and are never sampled)."""
        graph = self.graph.fork()
        model = BPRMF(graph.n_users, graph.n_items, self.model.config)
        injected = np.array(graph.injected_users, dtype=np.int64)
        with torch.no_grad():
            model.items.weight.copy_(torch.from_numpy(self.item_factors))
            model.item_bias.weight.copy_(torch.from_numpy(self.item_bias[:, None]))
            model.users.weight[: len(self.user_rows)] = torch.from_numpy(self.user_rows)
            if len(injected):
                model.users.weight[injected] = torch.from_numpy(self.user_vectors(injected))
        matrix = graph.user_item_matrix().tocoo()
        pairs = np.stack([matrix.row, matrix.col], axis=1).astype(np.int64)
        train = TrainConfig(max_epochs=epochs, patience=epochs, progress=False)
        model.fit(data, train, "MF retrain", pairs=pairs)
        return MFState(model, graph)


@dataclass
class MFVictim(Victim):
    model: BPRMF
    validation: dict[float, float] = field(default_factory=dict)  # HR@10 of each L2 weight
    name: ClassVar[str] = "mf"
    label: ClassVar[str] = "MF"

    @classmethod
    def default_config(cls) -> MFConfig:
        return MFConfig()

    @classmethod
    def train(
        cls, data: TargetData, config: MFConfig, train: TrainConfig
    ) -> tuple[MFVictim, History]:
        if config.l2 is None:
            model, validation = BPRMF.tuned(data, train, dim=config.dim)
        else:
            model = BPRMF.trained(data, BPRConfig(dim=config.dim, l2=config.l2), train, "MF")
            validation = {config.l2: model.history.best}
        return cls(model, validation), model.history

    def serving_state(self, data: TargetData, graph: InteractionGraph | None = None) -> MFState:
        graph = graph or InteractionGraph(data.train, data.n_users, data.n_items)
        return MFState(self.model, graph)

    def config_dict(self) -> dict[str, Any]:
        return {
            "dim": self.model.config.dim,
            "l2": self.model.config.l2,
            "l2_grid": list(BPRMF.L2_GRID),
            "validation_hr10": {f"{l2:g}": hr for l2, hr in self.validation.items()},
            "fold_in": "mean of the profile's item factors",
        }

    def to_payload(self) -> dict[str, Any]:
        return {
            "dim": self.model.config.dim,
            "l2": self.model.config.l2,
            "validation": {float(l2): float(hr) for l2, hr in self.validation.items()},
            **self.tensors(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        users, items = payload["users.weight"], payload["items.weight"]
        config = BPRConfig(dim=payload["dim"], l2=payload["l2"])
        model = BPRMF(len(users), len(items), config)
        model.load_state_dict({name: payload[name] for name in model.state_dict()})
        return cls(model.eval(), dict(payload["validation"]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())
