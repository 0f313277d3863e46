"""Server-side aggregation of a round's stacked client deltas (the privacy seam).

Every aggregator gets the same inputs, a [K, P] stack of deltas, K weights and the round's
context, and returns the [P] update plus statistics for logging and the intermediary rule.
Non-private FedAvg is the weighted mean; privacy.client_dp.ClientLevelDP (clip, sum,
noise, ledger) plugs in at the same place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RoundContext:
    round: int
    subclients_per_hospital: int  # the largest v_t among hospitals (the hospital unit's exposure)
    noise_gen: torch.Generator


@dataclass
class AggregateResult:
    update: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


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


class MeanAggregator:
    """Non-private FedAvg aggregation."""

    def __call__(self, deltas: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> AggregateResult:
        update = weighted_mean(deltas, weights)
        norms = torch.linalg.vector_norm(deltas, dim=1)
        return AggregateResult(update, {"norm_sum": float(norms.sum()),
                                        "aggregate_norm": float(torch.linalg.vector_norm(update))})

    def within_budget(self, subclients_per_hospital: int) -> bool:
        return True

    def charge_idle_round(self, subclients_per_hospital: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
