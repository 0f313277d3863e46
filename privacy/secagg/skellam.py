"""Distributed Skellam noise (Agarwal, Kairouz and Liu, NeurIPS 2021) and what it costs.

Sk(mu) = Poisson(mu/2) - Poisson(mu/2) is integer, symmetric, of variance mu, and closed
under sums: K sub-clients adding Sk(mu / K) each to their ring inputs give Sk(mu) on the
sum, noise that survives the modular arithmetic of secure aggregation untouched. A
sub-client that drops out takes its share with it: the sum carries Sk(mu x survivors / K).

The Skellam mechanism on an integer vector with L1 and L2 sensitivities D1 and D2 is
(alpha, eps(alpha))-RDP for every integer alpha > 1 (the paper's Theorem 3.5):

    eps(alpha) <= alpha D2^2 / (2 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu)).

Both branches of the min are of the form xi + rho alpha, so each alone is an (xi, rho)-zCDP
bound that dp-accounting composes as a `ZCDpEvent`; `zcdp_event` declares the branch with
the smaller rho, the linear one, whose rho = D2^2 / (2 mu) (1 + 1 / mu) is within a factor
1 + 1 / mu of the Gaussian's. Wrap-around is post-processing of the integer sum (the ring
reduces what was released), so it costs nothing and is reported as a utility loss.
For integer vectors D1 <= min(D2^2, sqrt(d) D2): every non-zero coordinate is at least 1.
"""
from __future__ import annotations

import math

import dp_accounting
import numpy as np
import torch


def skellam_share(size: int, mu: float, gen: torch.Generator) -> torch.Tensor:
    """One sub-client's noise share: `size` draws of Sk(mu) (int64)."""
    rate = torch.full((size,), mu / 2, dtype=torch.float64)
    return (torch.poisson(rate, generator=gen) - torch.poisson(rate, generator=gen)).to(torch.int64)


def l1_bound(l2: float, dim: int) -> float:
    """The largest L1 norm of an integer vector of L2 norm <= l2 in `dim` coordinates."""
    return min(l2 ** 2, math.sqrt(dim) * l2)


def skellam_rdp(orders: np.ndarray, *, mu: float, l1: float, l2: float) -> np.ndarray:
    """The paper's RDP bound at integer `orders` > 1."""
    a = np.asarray(orders, dtype=float)
    return a * l2 ** 2 / (2 * mu) + np.minimum(((2 * a - 1) * l2 ** 2 + 6 * l1) / (4 * mu ** 2), 3 * l1 / (2 * mu))


def zcdp_event(*, mu: float, l1: float, l2: float) -> dp_accounting.ZCDpEvent:
    """The Skellam release as dp-accounting's (xi, rho)-zCDP event: the linear branch of
    the bound, (alpha, xi + rho alpha)-RDP with rho = D2^2 (1 + 1/mu) / (2 mu) and
    xi = (6 D1 - D2^2) / (4 mu^2) (never negative: RDP at alpha -> 1 is >= 0)."""
    rho = l2 ** 2 / (2 * mu) + l2 ** 2 / (2 * mu ** 2)
    xi = max(0.0, (6 * l1 - l2 ** 2) / (4 * mu ** 2))
    return dp_accounting.ZCDpEvent(rho, xi)
