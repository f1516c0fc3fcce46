"""The PinSage model: item input, stacked weighted-SAGE convolutions, output projection,
item bias, and users as the mean of their items' final embeddings.

score(user, item) = <user vector, z_item> + bias_item. A user with an empty profile gets
a learned default vector (most MovieTweetings users hold a single liked movie, so the
default carries the popularity that dominates there). Users never enter the item graph
except through walks, so an injected user changes other users' lists only through new
walks, new neighbourhoods and new item embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from recsys_server.pinsage.layers import ItemInput, WeightedSAGEConv
from recsys_server.pinsage.sampler import WalkConfig
from shared.options import option

VARIANTS = ("content", "content+id-warm", "content+id")


@dataclass(frozen=True)
class PinSageConfig:
    variant: str = option(
        "content+id-warm",
        "item input: content only, plus an id embedding (for warm items, or for all)",
        choices=VARIANTS,
    )
    warm_threshold: int = option(
        10, "content+id-warm: items with this many training interactions get an id"
    )
    use_degree: bool = option(
        True, "the popularity feature (the item's current degree) in the item input",
        flag="--degree",
    )  # fmt: skip
    # > 0: the degree feature is piecewise constant, so an injection's refresh stays local
    degree_steps_per_octave: int = option(
        4, "round the degree feature to 1/N octave (0: continuous; N > 0: local refresh)",
        flag="--degree-steps",
    )  # fmt: skip
    dim: int = option(32, "embedding size (paper: 8)")
    n_layers: int = option(2, "graph convolution layers", flag="--layers")
    residual: bool = option(
        False, "add the input to the output (DGL's example) instead of Ying's design"
    )
    id_dropout: float = option(0.0, "dropout of the id embeddings in training")
    walks: WalkConfig = field(default_factory=WalkConfig)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.n_layers < 1 or self.dim < 1:
            raise ValueError("n_layers and dim must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PinSageConfig:
        return cls(**{**data, "walks": WalkConfig(**data["walks"])})


DEGREE_FEATURES = 2


def degree_features(degree: np.ndarray, steps_per_octave: int = 0) -> np.ndarray:
    """log2(1 + degree), scaled, and its square; rounded down to ``1 / steps_per_octave``
    when that is positive.

    Rounding makes the feature piecewise constant: one more holder changes it for a cold
    item (3 -> 4 holders is another step) but rarely for a popular one (a step at 1,000
    holders is ~190 wide at 4 steps an octave), so an injection's refresh stays local
    instead of reaching the whole catalogue through the popular items that are everyone's
    neighbours (the refresh speed it buys: docs/victims.md, "Attackability"). It costs a
    little quality (sampled HR@10 0.703 against 0.710 on MovieTweetings-100K when it
    became the default, commit 791c397).
    """
    octaves = np.log2(1.0 + degree.astype(np.float64))
    if steps_per_octave > 0:
        octaves = np.floor(steps_per_octave * octaves) / steps_per_octave
    scaled = octaves / 16.0
    return np.stack([scaled, scaled**2], axis=1).astype(np.float32)


def id_mask(config: PinSageConfig, train_degree: np.ndarray) -> np.ndarray:
    """1 where an item has an id embedding: all items, warm items, or none."""
    if config.variant == "content+id":
        return np.ones(len(train_degree), dtype=np.float32)
    if config.variant == "content+id-warm":
        return (train_degree >= config.warm_threshold).astype(np.float32)
    return np.zeros(len(train_degree), dtype=np.float32)


@dataclass
class GraphTensors:
    """Everything the item forward pass reads that comes from the data or the graph."""

    content: torch.Tensor  # (n_items, n_content)
    degree: torch.Tensor  # (n_items, DEGREE_FEATURES) degree features
    id_mask: torch.Tensor  # (n_items,)
    neighbour_index: torch.Tensor  # (n_items, T)
    neighbour_weight: torch.Tensor  # (n_items, T)


class PinSage(nn.Module):
    def __init__(self, config: PinSageConfig, n_content: int, n_items: int) -> None:
        super().__init__()
        self.config = config
        self.n_content, self.n_items = n_content, n_items
        use_ids = config.variant != "content"
        self.input = ItemInput(
            n_content, n_items, config.dim, DEGREE_FEATURES, use_ids=use_ids,
            use_degree=config.use_degree,
        )  # fmt: skip
        self.convs = nn.ModuleList(
            WeightedSAGEConv(config.dim, config.dim) for _ in range(config.n_layers)
        )
        self.output = nn.Linear(config.dim, config.dim)
        self.bias_degree = nn.Linear(DEGREE_FEATURES, 1) if config.use_degree else None
        self.bias_id = nn.Embedding(n_items, 1) if use_ids else None
        self.default_user = nn.Parameter(torch.zeros(config.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian init, mean 0 and std 0.1 (the paper), biases at 0."""
        for name, parameter in self.named_parameters():
            if name.endswith("bias") or name.startswith("bias_id"):
                nn.init.zeros_(parameter)
            else:
                nn.init.normal_(parameter, mean=0.0, std=0.1)

    # --- partial computations: each argument holds one row per item of ``rows`` -----

    def input_rows(
        self, rows: torch.Tensor, content: torch.Tensor, degree: torch.Tensor,
        id_mask: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """Layer 0 of items ``rows``."""
        return self.input(rows, content, degree, id_mask)

    def conv_rows(
        self, k: int, previous: torch.Tensor, neighbour_messages: torch.Tensor,
        neighbour_weight: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """Layer k >= 1 from the rows' layer k - 1 (R, d), their neighbours' layer-k
        messages (``self.conv(k).message`` of the neighbours' layer k - 1; (R, T, d))
        and visit counts (R, T)."""
        return self.conv(k)(previous, neighbour_messages, neighbour_weight)

    def conv(self, k: int) -> WeightedSAGEConv:
        """Layer k's convolution (k >= 1)."""
        # a ModuleList types its items as Module; __init__ fills it with WeightedSAGEConv
        return cast(WeightedSAGEConv, self.convs[k - 1])

    def final(self, last: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """z from the last layer's (and, with the residual variant, the input's) rows."""
        z = self.output(last)
        return z + first if self.config.residual else z

    def final_rows(self, last_changed: np.ndarray, input_changed: np.ndarray) -> np.ndarray:
        """The items whose ``final`` changes when these rows of the last layer and of the
        input changed: what ``final`` reads, stated once, here, for the refresh."""
        if self.config.residual:
            return np.union1d(last_changed, input_changed).astype(np.int64)
        return last_changed

    def bias_rows(
        self, rows: torch.Tensor, degree: torch.Tensor, id_mask: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros(len(rows))
        if self.bias_degree is not None:
            out = out + self.bias_degree(degree).squeeze(-1)
        if self.bias_id is not None:
            out = out + self.bias_id(rows).squeeze(-1) * id_mask
        return out

    def item_table(
        self, g: GraphTensors, drop_ids: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's final embedding and bias (training and full recompute)."""
        _, z, bias = self.all_layers(g, drop_ids)
        return z, bias

    def all_layers(
        self, g: GraphTensors, drop_ids: float = 0.0
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Every item's layers 0..n_layers, final embedding and bias."""
        rows = torch.arange(len(g.content))
        mask = g.id_mask
        if drop_ids > 0:
            mask = mask * (torch.rand(len(rows)) >= drop_ids).float()
        hidden = [self.input_rows(rows, g.content, g.degree, mask)]
        for k in range(1, self.config.n_layers + 1):
            messages = self.conv(k).message(hidden[-1])
            hidden.append(
                self.conv_rows(k, hidden[-1], messages[g.neighbour_index], g.neighbour_weight)
            )
        return hidden, self.final(hidden[-1], hidden[0]), self.bias_rows(rows, g.degree, mask)
