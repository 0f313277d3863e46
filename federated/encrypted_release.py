"""The release pipeline's encrypted path with the noise before encryption
(`--secure_agg ckks|cyclic --noise_at clients`, privacy/he/shares.py).

Per round it tells each input its share's std, the scale of its norm side and the norm it
is clipped to again in float64; after the decryption it releases the sum as it is (the
shares are in it) and charges each unit with the other inputs' shares. Before the round it
declares the same charge for `--dp_mode bounded`, with no canaries in the sum (they only
add shares).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from federated.config import Config
from privacy.client_dp import ClientLevelDP, DeclaredRound, RoundPlan
from privacy.he.shares import GaussianShares


@dataclass(frozen=True)
class ShareRound:
    """What every input of a round is told."""
    std: float         # its Gaussian share's std, per coordinate
    side_scale: float  # w a: its clipped norm's weight in the side coordinate
    input_norm: float  # the norm the charge assumes: each input is clipped to it again in float64


class SharesRelease:
    def __init__(self, cfg: Config, client_dp: ClientLevelDP, shares: GaussianShares):
        self.cfg, self.client_dp, self.shares = cfg, client_dp, shares

    def share_round(self, bound: float, max_weight: float, expected: float) -> ShareRound:
        return ShareRound(self.shares.share_std(bound, max_weight, expected),
                          max_weight * self.shares.noise.side_scale, self.shares.input_norm(bound, max_weight))

    def _events(self, inputs: int, counts: list[int], expected: float) -> dict:
        return self.shares.events(expected=expected, inputs=inputs, unit_inputs=self.client_dp.unit_inputs(counts))

    def declare(self, counts: list[int]) -> DeclaredRound:
        """The round's charge (`counts`: each hospital's sub-clients), as planned: every input in the sum."""
        expected = self.cfg.sample_rate * (self.cfg.clients * max(counts) + self.cfg.audit_subclients)
        return DeclaredRound((), {}, self._events(sum(counts), counts, expected))

    def release(self, total: torch.Tensor, sides: dict, rnd: ShareRound, bound: float, plan: RoundPlan,
                inputs: int, counts: list[int]) -> tuple[torch.Tensor, dict]:
        """The decrypted sum of `inputs` inputs holds their shares: charge each unit with the
        others' and release the sum."""
        expected = plan.expected_participants
        events = self._events(inputs, counts, expected) if inputs else {}
        self.client_dp.charge(DeclaredRound((), {}, events))
        std = self.shares.noise.central_std(bound, plan.max_weight) * math.sqrt(inputs / expected)
        norm_sum = float(sides["clipped_norm"].sum()) / rnd.side_scale
        result = self.client_dp.distributed_release(total, bound=bound, noise_std=std, norm_sum=norm_sum)
        result.stats["noise_survived"] = inputs / expected
        return result.update, result.stats
