"""The client-level Gaussian mechanism as separate pure steps: norm, clip, sum, noise.

DP-FedAvg (McMahan et al., ICLR 2018, Alg. 1): each update is clipped to L2 norm C, the
clipped updates are combined with the round's weights w_k, and Gaussian noise of std
z * C * max_k w_k is added; for the plain mean (w_k = 1/K) that is z * C / K, i.e. std
z * C on the sum, as in Jiang et al. (MICCAI 2023, Eq. 1).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch


def update_norms(deltas: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row (each sub-client's whole update)."""
    return torch.linalg.vector_norm(deltas, dim=1)


def clip(deltas: torch.Tensor, norms: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale each row by min(1, C / ||row||) so every row has norm <= C."""
    if math.isinf(bound):
        return deltas
    factors = torch.clamp(bound / (norms + 1e-12), max=1.0)
    return deltas * factors[:, None]


def weighted_sum(rows: list[torch.Tensor], weights: torch.Tensor, numel: int,
                 device: torch.device | None = None) -> torch.Tensor:
    """sum_k w_k row_k: the only view of the rows a server needs (zeros when there are none)."""
    if not rows:
        return torch.zeros(numel, dtype=weights.dtype, device=device)
    stacked = torch.stack(rows)
    return weights.to(stacked) @ stacked


def gaussian_noise(numel: int, std: float, gen: torch.Generator, *, secure: bool,
                   device: torch.device | None = None) -> torch.Tensor:
    """N(0, std^2) noise. `secure`: draws from the OS's cryptographically secure source
    (os.urandom, Box-Muller) instead of the run's seeded generator, as a deployment needs;
    such runs are not reproducible. Floating-point sampling is not hardened against
    Mironov's (CCS 2012) attacks on its low-order bits."""
    if std == 0:
        return torch.zeros(numel, device=device)
    if not secure:
        return std * torch.randn(numel, generator=gen).to(device)
    n = numel + numel % 2
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # uniform in (0, 1)
    u1, u2 = u[: n // 2], u[n // 2:]
    radius = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])[:numel]
    return torch.from_numpy(std * z).float().to(device)
