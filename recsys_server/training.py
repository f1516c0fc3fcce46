"""What every trained recommender here shares: BPR triples, the BPR loss, and early
stopping on validation HR@10 (sampled protocol) with patience (paper: 5)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from recsys_server.cancellation import check_cancelled
from shared.options import option


@dataclass(frozen=True)
class TrainConfig:
    # Adam. The paper uses 0.001; 0.005 was chosen on the validation split of both real
    # targets (0.001 stops early, before it converges, with patience 5). --lr 0.001 to follow it.
    lr: float = option(0.005, "Adam's learning rate")
    batch_size: int = option(1024, "BPR triples per step")
    max_epochs: int = option(200, "at most this many")
    patience: int = option(5, "stop after this many epochs without a better validation HR@10")
    # Adam's L2 weight, chosen on validation HR@10 (sampled / full): on MovieTweetings 1e-4
    # gave 0.701 / 0.165 against 0.693 / 0.153 without (1e-3 and 3e-4 were level with 1e-4),
    # on ml-latest-small 0.689 / 0.086 against 0.684 / 0.087.
    weight_decay: float = option(1e-4, "Adam's L2 weight")
    seed: int = option(0, "seed of the weights and walks")
    progress: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight decay >= 0, got {self.lr} and "
                             f"{self.weight_decay}")  # fmt: skip
        if min(self.batch_size, self.max_epochs, self.patience) < 1:
            raise ValueError("batch size, max epochs and patience must be at least 1")


@dataclass
class History:
    validation_hr10: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best(self) -> float:
        return self.validation_hr10[self.best_epoch] if self.best_epoch >= 0 else float("nan")


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool) -> tqdm:
    """A progress line on stderr, redrawn at every step (steps here take seconds to
    minutes, so none is skipped): "desc: unit i/N, postfix [elapsed, time left]"."""
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        leave=True,
        mininterval=0,
        miniters=1,
        bar_format="{desc}: " + unit + " {n_fmt}/{total_fmt}{postfix} "
        "[{elapsed} elapsed, {remaining} left]",
    )


def fit_with_early_stopping(
    model: torch.nn.Module,
    run_epoch: Callable[[], float],
    validate: Callable[[], float],
    config: TrainConfig,
    desc: str,
) -> History:
    """Epochs until validation HR@10 has not improved for ``patience`` epochs; the model
    ends with the weights of its best epoch.

    With ``config.progress``, one line on stderr shows the epoch, the validation HR@10 and
    the time left. Early stopping makes the last epoch unknown in advance: the line counts
    towards the epoch at which training stops if validation does not improve again (best
    epoch + patience, at most ``max_epochs``), so the time left is that of the shortest
    remaining run; each improvement pushes it back."""
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    bar = progress_bar(
        min(config.patience + 1, config.max_epochs), desc, "epoch", enabled=config.progress
    )
    with bar:
        for epoch in range(config.max_epochs):
            check_cancelled()
            model.train()
            history.loss.append(run_epoch())
            model.eval()
            score = validate()
            history.validation_hr10.append(score)
            if history.best_epoch < 0 or score > history.best:
                history.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
            bar.total = min(history.best_epoch + 1 + config.patience, config.max_epochs)
            bar.set_postfix_str(
                f"val HR@10 {score:.4f}, best {history.best:.4f} (epoch {history.best_epoch + 1})",
                refresh=False,
            )
            bar.update()
            if epoch - history.best_epoch >= config.patience:
                break
    model.load_state_dict(best_state)
    return history
