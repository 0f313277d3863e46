"""Client-level DP with the noise added by the sub-clients (`--noise_at clients`).

The server adds nothing. Each sub-client's ring input is its weighted clipped update and,
as one more coordinate, its clipped norm times w a (a = z / sigma_s, so that the decoded
norm sum carries noise of std sigma_s C as under --strict_dp's central release). It is
rounded conditionally, so its norm in ring units is at most `input_bound`, and a Skellam
share is added before the ring reduction (privacy/secagg/skellam.py). The shares are
sized so that the expected participants (q x the planned sub-clients) together give the
noise a central release would: std z C w per coordinate of the decoded sum. A sub-client
that drops before its masked input arrives takes its share with it, so each round is
charged with the noise that survived: the share times the inputs in the sum.

What one round costs a unit. The server runs the protocol, so it sees which inputs take
part: a unit's participation is public, and what stays private is what its inputs hold.
Each unit is therefore protected as replaced (Kairouz, Liu and Steinke's setting): its n
inputs change, each within `input_bound` after rounding (L2 sensitivity 2 n input_bound),
and only the shares of the other inputs that reached the sum count as its noise (its own
shares are known to it). That Skellam release is declared as its (xi, rho)-zCDP event; no
amplification by sampling is claimed. A unit with no other share in the sum has no
guarantee that round (a Gaussian of multiplier 0: infinite epsilon).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import dp_accounting

from privacy.secagg.ring import RingCode
from privacy.secagg.skellam import l1_bound, zcdp_event

ROUNDING_BETA = math.exp(-0.5)  # conditional rounding accepts a draw with probability >= 1 - beta


def rounded_norm_bound(norm: float, dim: int, beta: float = ROUNDING_BETA) -> float:
    """The norm bound conditional rounding keeps to, for a vector of norm <= `norm` in `dim`
    coordinates (Kairouz, Liu and Steinke, ICML 2021): a plain stochastic rounding stays
    within it with probability >= 1 - beta, so few draws are redrawn."""
    return math.sqrt(norm ** 2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2))


@dataclass(frozen=True)
class DistributedNoise:
    z: float               # the noise multiplier of the equivalent central release
    norm_sum_noise: float  # sigma_s: the norm sum's multiplier

    @property
    def side_scale(self) -> float:
        """a: the norm side's weight relative to the update's."""
        return self.z / self.norm_sum_noise

    def central_std(self, clip: float, weight: float) -> float:
        """The per-coordinate std of the noise on the decoded sum when every expected share arrives."""
        return self.z * clip * weight

    def input_norm(self, clip: float, weight: float) -> float:
        """One input's norm in real units: its weighted clipped update and its norm side."""
        return weight * clip * math.sqrt(1 + self.side_scale ** 2)

    def input_bound(self, code: RingCode, clip: float, weight: float) -> float:
        """One input's norm in ring units after conditional rounding."""
        return rounded_norm_bound(self.input_norm(clip, weight) / code.step, code.padded)

    def share_mu(self, code: RingCode, clip: float, weight: float, expected_inputs: float) -> float:
        """Each input's Skellam variance, in ring units."""
        return (self.central_std(clip, weight) / code.step) ** 2 / expected_inputs

    def events(self, code: RingCode, clip: float, weight: float, expected_inputs: float, survivors: int,
               unit_inputs: dict[str, int]) -> dict[str, dp_accounting.DpEvent]:
        """Each unit's charge for a round whose sum holds `survivors` shares; `unit_inputs`:
        how many inputs each unit owns."""
        share = self.share_mu(code, clip, weight, expected_inputs)
        bound = self.input_bound(code, clip, weight)
        out = {}
        for unit, n in unit_inputs.items():
            others = survivors - n
            out[unit] = zcdp_event(mu=share * others, l1=2 * n * l1_bound(bound, code.padded), l2=2 * n * bound) \
                if others > 0 else dp_accounting.GaussianDpEvent(0.0)
        return out
