"""Source-domain representations (paper, Section 4.3.1): matrix factorisation with BPR on
the source profiles the attacker holds, giving each source user a vector p^B (to cluster
users and to craft profiles) and each item a vector q^B (the target item's state)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from shared.atomic import staged_file
from shared.bpr import bpr_batches, bpr_loss
from shared.determinism import use_deterministic_torch
from shared.scenario import AttackerView


@dataclass(frozen=True)
class SourceEmbeddings:
    users: np.ndarray  # (n_source_users, dim): p^B
    items: np.ndarray  # (n_target_items, dim): q^B; zero for items no source user holds


@dataclass(frozen=True)
class SourceMFConfig:
    dim: int = 8  # the paper's embedding size
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 1024
    weight_decay: float = 1e-4
    seed: int = 0


def fit_source_mf(
    view: AttackerView, config: SourceMFConfig = SourceMFConfig()
) -> SourceEmbeddings:
    """BPR matrix factorisation of the source users x items matrix (items in target ids;
    negatives drawn among the items some source user holds)."""
    use_deterministic_torch()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    lengths = np.diff(view.source_indptr)
    users = np.repeat(np.arange(view.n_source_users), lengths)
    held = np.unique(view.source_items)
    # compact item ids: only items in some source profile are learned
    compact = np.searchsorted(held, view.source_items)
    pairs = np.stack([users, compact], axis=1).astype(np.int64)
    user_table = torch.nn.Embedding(view.n_source_users, config.dim)
    item_table = torch.nn.Embedding(len(held), config.dim)
    for table in (user_table, item_table):
        torch.nn.init.normal_(table.weight, std=0.1)
    parameters = [*user_table.parameters(), *item_table.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        for batch_users, positives, negatives in bpr_batches(
            pairs, len(held), config.batch_size, rng
        ):
            u = user_table(batch_users)
            positive = (u * item_table(positives)).sum(dim=1)
            negative = (u * item_table(negatives)).sum(dim=1)
            loss = bpr_loss(positive, negative)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    items = np.zeros((view.n_items, config.dim), dtype=np.float32)
    items[held] = item_table.weight.detach().numpy()
    return SourceEmbeddings(users=user_table.weight.detach().numpy().copy(), items=items)


def cached_source_mf(
    view: AttackerView, config: SourceMFConfig, cache_dir: Path
) -> SourceEmbeddings:
    """:func:`fit_source_mf`, kept in ``cache_dir`` for the same source profiles and
    settings: at the `paper` preset's scale (93k source users, 3.7M items) a fit takes
    minutes, and every run and sweep value of an experiment needs the same one."""
    payload = json.dumps([view.fingerprint, asdict(config)], sort_keys=True)
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"source_mf-{key}.npz"
    try:
        with np.load(path) as cached:
            return SourceEmbeddings(users=cached["users"], items=cached["items"])
    except (OSError, KeyError, ValueError):
        pass  # missing or unreadable: fit again
    embeddings = fit_source_mf(view, config)
    with staged_file(path) as staging, open(staging, "wb") as handle:
        np.savez(handle, users=embeddings.users, items=embeddings.items)
    return embeddings
