"""BPR (Rendle et al. 2009), shared by the target's recommenders and the attacker's
source-domain matrix factorisation: uniformly drawn negatives and the pairwise loss."""

from __future__ import annotations

import numpy as np
import torch


def bpr_batches(
    pairs: np.ndarray, n_items: int, batch_size: int, rng: np.random.Generator
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of (user, positive, uniformly drawn negative) batches, shuffled."""
    order = rng.permutation(len(pairs))
    negatives = rng.integers(0, n_items, size=len(pairs))
    batches = []
    for start in range(0, len(pairs), batch_size):
        chosen = order[start : start + batch_size]
        batches.append(
            (
                torch.from_numpy(pairs[chosen, 0]),
                torch.from_numpy(pairs[chosen, 1]),
                torch.from_numpy(negatives[chosen]),
            )
        )
    return batches


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(negative - positive).mean()
