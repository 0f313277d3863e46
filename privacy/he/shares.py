"""Client-level DP under encrypted aggregation with the noise added before encryption
(`--secure_agg ckks|cyclic --noise_at clients`).

Nobody decrypts a sum without noise in it: each sub-client adds a Gaussian share to its
input (its weighted clipped update and, as one more coordinate, its clipped norm times
w a, a = z / sigma_s, as under SecAgg+'s Skellam shares, privacy/secagg/distributed.py)
and only then encrypts it. The shares are sized so that the expected inputs together give
the central release's noise, std z C w per coordinate of the sum. Every input is in every
encrypted sum (the runs sample no one: -sr 1), so the sum holds every share.

What one round costs a unit. The hospitals decrypt the sum, and a hospital knows its own
shares; the server sees which ciphertexts arrive. So each unit is protected as replaced
(its participation is public) by the shares of the other inputs only: its n inputs move
by at most 2 n times an input's norm bound, against noise of std z C w sqrt(others / E).
That is one Gaussian release with multiplier

    z sqrt(others / E) / (2 n sqrt(1 + a^2)),

declared per unit; no amplification by sampling is claimed. A unit with no other input in
the sum has no guarantee that round (multiplier 0: infinite epsilon).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import dp_accounting
import torch

from privacy.mechanism import gaussian_noise
from privacy.secagg.distributed import DistributedNoise


def gaussian_share(numel: int, std: float, gen: torch.Generator | None, *, secure: bool) -> torch.Tensor:
    """N(0, std^2) per coordinate, in float64 as the input it is added to."""
    return gaussian_noise(numel, std, gen, secure=secure).double()


@dataclass(frozen=True)
class GaussianShares:
    noise: DistributedNoise  # z, sigma_s and the side scale a = z / sigma_s

    def share_std(self, clip: float, weight: float, expected: float) -> float:
        """Each input's share std, per coordinate: the central std over sqrt(expected inputs)."""
        return self.noise.central_std(clip, weight) / math.sqrt(expected)

    def input_norm(self, clip: float, weight: float) -> float:
        """The largest norm of one input before its share: weighted clipped update and norm side."""
        return self.noise.input_norm(clip, weight)

    def draw(self, numel: int, clip: float, weight: float, expected: float, gen: torch.Generator | None, *,
             secure: bool) -> torch.Tensor:
        """One input's share."""
        return gaussian_share(numel, self.share_std(clip, weight, expected), gen, secure=secure)

    def events(self, *, expected: float, inputs: int, unit_inputs: dict[str, int]) -> dict[str, dp_accounting.DpEvent]:
        """Each unit's charge for a sum of `inputs` shares; `unit_inputs`: how many inputs
        each unit owns. The others' noise std, z C w sqrt(others / E), over the distance
        2 n w C sqrt(1 + a^2): C and w cancel."""
        out = {}
        for unit, n in unit_inputs.items():
            others = inputs - n  # >= 0: a unit's inputs are in the sum
            distance = 2 * n * math.sqrt(1 + self.noise.side_scale ** 2)
            out[unit] = dp_accounting.GaussianDpEvent(self.noise.z * math.sqrt(others / expected) / distance)
        return out
