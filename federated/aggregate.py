"""Server-side aggregation of a round's stacked client deltas.

The round loop hands every aggregator the same inputs, a [K, P] stack of deltas and K
weights, and gets back one [P] update. Non-private FedAvg is the weighted mean below; the
privacy mechanism (clip, sum, noise) plugs in at the same seam.
"""
from __future__ import annotations

from typing import Protocol

import torch


class Aggregator(Protocol):
    def __call__(self, deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...


def round_weights(num_samples: list[int], *, weighted: bool) -> torch.Tensor:
    """Aggregation weights for K updates: 1/K each (the paper's default), or n_k / sum n
    with --weighted_avg."""
    counts = torch.tensor(num_samples, dtype=torch.float32)
    if weighted:
        return counts / counts.sum()
    return torch.full_like(counts, 1.0 / len(num_samples))


def weighted_mean(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k * delta_k, McMahan et al. (2017), Alg. 1."""
    return weights.to(deltas) @ deltas
