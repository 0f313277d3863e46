"""Real vectors into the ring Z_{2^b} and back: the fixed-point code secure aggregation sums.

A client's update x in R^d (already clipped and weighted) is
1. rotated: zero-padded to d' = 2^ceil(log2 d), its signs flipped by a public random +-1
   vector, and sent through the orthonormal Walsh-Hadamard transform. The L2 norm stays;
   the mass spreads evenly (each coordinate about ||x|| / sqrt(d')), so a small range
   holds every coordinate and wrap-around is rare (Kairouz, Liu and Steinke, ICML 2021);
2. scaled by 1 / step and rounded stochastically to integers (unbiased) with the
   sub-client's own generator; with `bound` set, the rounding is redrawn until the rounded
   vector's norm is within it (conditional rounding: the sensitivity the accountant assumes);
3. reduced mod 2^b.
The server reads the ring sum as a signed integer in [-2^(b-1), 2^(b-1)), multiplies by the
step and rotates back. The step is public: set from the clip bound, the sum's weight, d'
and the bits, so that a coordinate of the sum leaves the range with probability about
`WRAP_SIGMAS` standard deviations out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from privacy.secagg.skellam import skellam_share

WRAP_SIGMAS = 6.0   # the range spans +-6 of a rotated coordinate's standard deviations
MAX_REDRAWS = 1000  # conditional rounding redraws (each succeeds with probability >= 1 - beta)


@dataclass(frozen=True)
class RingCode:
    bits: int
    dim: int           # d, the update's length
    step: float        # the real value of one ring unit
    rotation_seed: int  # public, one per round

    @property
    def padded(self) -> int:
        return padded_length(self.dim)

    @classmethod
    def for_sum(cls, *, bits: int, dim: int, norm_bound: float, noise_std: float, rotation_seed: int) -> "RingCode":
        """The code whose range holds, to `WRAP_SIGMAS` standard deviations, a rotated sum of
        L2 norm at most `norm_bound` plus noise of std `noise_std` per coordinate."""
        spread = math.sqrt(norm_bound ** 2 / padded_length(dim) + noise_std ** 2)
        return cls(bits, dim, 2 * WRAP_SIGMAS * spread / 2 ** bits, rotation_seed)

    def signs(self, device=None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.rotation_seed)
        return (torch.randint(0, 2, (self.padded,), generator=gen) * 2 - 1).to(torch.float64).to(device)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros(self.padded, dtype=torch.float64, device=x.device)
        padded[:self.dim] = x.to(torch.float64)
        return hadamard(padded * self.signs(x.device))

    def unrotate(self, y: torch.Tensor) -> torch.Tensor:
        return (hadamard(y) * self.signs(y.device))[:self.dim]

    def encode(self, x: torch.Tensor, gen: torch.Generator, *, bound: float | None = None,
               noise_mu: float = 0.0) -> np.ndarray:
        """x [d] -> ring elements [d'] (uint64); `bound`: the rounded norm (in ring units)
        the conditional rounding keeps to; `noise_mu`: the variance of the Skellam share
        added to the rounded vector (ring units), from the same generator."""
        scaled = self.rotate(x.cpu()) / self.step
        for _ in range(MAX_REDRAWS):
            rounded = stochastic_round(scaled, gen)
            if bound is None or float(torch.linalg.vector_norm(rounded)) <= bound:
                if noise_mu > 0:
                    rounded = rounded + skellam_share(self.padded, noise_mu, gen).to(rounded.dtype)
                return to_ring(rounded, self.bits)
        raise RuntimeError(f"conditional rounding found no rounding within norm {bound} in {MAX_REDRAWS} draws")

    def decode(self, total: np.ndarray) -> torch.Tensor:
        """The ring sum -> the real sum [d] (float64)."""
        return self.unrotate(from_ring(total, self.bits) * self.step)


def padded_length(dim: int) -> int:
    """The power of two the rotation pads a vector of `dim` coordinates to."""
    return 1 << max(0, math.ceil(math.log2(dim)))


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard transform of a vector of length 2^m (its own inverse)."""
    n = x.numel()
    y = x.reshape(1, n)
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        y = torch.stack((y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]), dim=1)
        h *= 2
    return y.reshape(n) / math.sqrt(n)


def stochastic_round(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """floor(x) + Bernoulli(frac(x)): unbiased, within one unit of x."""
    low = torch.floor(x)
    return low + (torch.rand(x.shape, generator=gen, dtype=x.dtype) < (x - low)).to(x.dtype)


def to_ring(integers: torch.Tensor, bits: int) -> np.ndarray:
    """Integers (any sign, |value| < 2^53) -> Z_{2^bits} as uint64."""
    values = integers.to(torch.int64).numpy().astype(np.uint64)  # two's complement: mod 2^64
    return values if bits == 64 else values & np.uint64((1 << bits) - 1)


def from_ring(values: np.ndarray, bits: int) -> torch.Tensor:
    """Z_{2^bits} -> the signed representative in [-2^(bits-1), 2^(bits-1)) (float64)."""
    signed = values.astype(np.int64) if bits == 64 else \
        (values.astype(np.int64) ^ (1 << (bits - 1))) - (1 << (bits - 1))
    return torch.from_numpy(signed.astype(np.float64))
