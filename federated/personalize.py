"""Personalised evaluation (--personalize_steps K): each hospital adapts the global model
to itself before it is scored, as Per-FedAvg intends (Fallah et al., NeurIPS 2020): K
plain gradient steps at --alpha on mini-batches of its own training split. Nothing is
selected here: the adapted models are scored on validation every round and on test once,
for the round the run selects, like the global model. The adaptation happens at the
hospital: the personalised models never leave it; only their scores are logged.
"""
from __future__ import annotations

import torch

from datasets.base import Split
from federated.local import LocalTrainer, epoch_order
from utils.seeding import client_generator


def personalize(trainer: LocalTrainer, params: torch.Tensor, train_splits: list[Split], keys: list[int], *,
                steps: int, alpha: float, batch: int, seed: int, round_idx: int) -> list[torch.Tensor]:
    """One adapted parameter vector per hospital: `steps` SGD steps at `alpha` from
    `params` on its training split only, in mini-batches drawn from a generator keyed by
    (seed, round, hospital), so every evaluation of a round adapts the same way."""
    adapted = []
    for split, key in zip(train_splits, keys):
        gen = client_generator(seed, round_idx, key, 0, purpose="personalize")
        w, n = params.clone(), len(split)
        size = min(batch, n)
        order = epoch_order(n, in_order=False, gen=gen, device=split.images.device)
        for s in range(steps):
            start = (s * size) % max(n - size + 1, 1)
            images, targets = split.batch(order[start:start + size])
            grad, _ = trainer.batch_gradient(w, images, targets, gen)
            w = w - alpha * grad
        adapted.append(w)
    trainer.flat.set(params)
    return adapted
