"""Epsilon of a history of Gaussian releases, with the libraries' own math.

A history is a list of (noise_multiplier, sample_rate) entries, one per release. RDP and
PRV come from Opacus, PLD from Google's dp-accounting; nothing is re-derived here.

Sampling is accounted as what it is:
- "all" (q = 1) and "poisson": every accountant, with amplification by Poisson sampling.
- "fixed" (m of n without replacement, q = m / n < 1): the RDP accountant of dp-accounting
  for sampling without replacement (replace-one neighbours). Opacus' PRV and the PLD
  accountant have no such analysis, so for them the release is accounted without
  amplification (q = 1), a valid but loose upper bound; `sampling_note` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby

import dp_accounting
import numpy as np
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from opacus.accountants import PRVAccountant, RDPAccountant

ACCOUNTANTS = ("rdp", "prv", "pld")
SAMPLING_KINDS = ("all", "poisson", "fixed")
# PLD grid step: 1e-3 keeps PLD within ~1e-3 of exact while ~10x faster than the 1e-4 default.
PLD_DISCRETIZATION = 1e-3

History = list[tuple[float, float]]


@dataclass(frozen=True)
class Sampling:
    kind: str          # "all", "poisson" or "fixed"
    rate: float        # q: the probability that a given hospital (and its sub-clients) takes part
    population: int    # hospitals
    sample_size: int   # hospitals per round ("fixed"; the expectation otherwise)


def sampling_note(sampling: Sampling, accountant: str) -> str | None:
    if sampling.kind == "fixed" and accountant in ("prv", "pld"):
        return (f"{accountant}: no analysis of fixed-size sampling without replacement in the "
                "library; accounted without subsampling amplification (upper bound)")
    return None


def _compress(history: History) -> list[tuple[float, float, int]]:
    """Runs of equal consecutive releases -> (noise_multiplier, sample_rate, count)."""
    return [(z, q, len(list(run))) for (z, q), run in groupby(history)]


def epsilon(history: History, *, delta: float, accountant: str, sampling: Sampling) -> float:
    """Epsilon at `delta` of composing the releases in `history`."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {ACCOUNTANTS}")
    if not history:
        return 0.0
    if any(z <= 0 or math.isinf(1 / z) for z, _ in history):
        return math.inf  # a release without noise has no finite guarantee
    runs = _compress(history)
    if sampling.kind == "fixed" and sampling.rate < 1:
        if accountant == "rdp":
            return _rdp_without_replacement(runs, delta, sampling)
        runs = [(z, 1.0, n) for z, _, n in runs]
    if accountant == "rdp":
        acc = RDPAccountant()
        acc.history = list(runs)
        return float(acc.get_epsilon(delta))
    if accountant == "prv":
        acc = PRVAccountant()
        acc.history = list(runs)
        with np.errstate(divide="ignore"):  # Opacus takes log(1 - q) = log(0) at q = 1, harmlessly
            return float(acc.get_epsilon(delta))
    return _pld(runs, delta)


def _pld(runs, delta: float) -> float:
    events = []
    for z, q, n in runs:
        event = dp_accounting.GaussianDpEvent(z)
        if q < 1:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        events.append(dp_accounting.SelfComposedDpEvent(event, n))
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return float(acc.get_epsilon(delta))


def _rdp_without_replacement(runs, delta: float, sampling: Sampling) -> float:
    acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    for z, _, n in runs:
        event = dp_accounting.SampledWithoutReplacementDpEvent(
            sampling.population, sampling.sample_size, dp_accounting.GaussianDpEvent(z))
        acc.compose(dp_accounting.SelfComposedDpEvent(event, n))
    return float(acc.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, *, rounds: int, delta: float, accountant: str,
                    sampling: Sampling, scale: float = 1.0, extra: tuple[float, ...] = ()) -> float:
    """Smallest noise multiplier z (to 1e-3 relative) such that `rounds` rounds, each a
    Gaussian release with multiplier z / scale plus releases with multipliers m / scale for
    m in `extra`, stay within `target_epsilon`. `scale` is v for the hospital unit. The
    bisection keeps the upper end, so the result never overshoots the target."""
    def eps(z: float) -> float:
        per_round = [(z / scale, sampling.rate)] + [(m / scale, sampling.rate) for m in extra]
        return epsilon(per_round * rounds, delta=delta, accountant=accountant, sampling=sampling)

    low, high = 1e-3, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"--epsilon {target_epsilon} is not reachable in {rounds} rounds at any noise level")
    while (high - low) / high > 1e-3:
        mid = (low + high) / 2
        low, high = (low, mid) if eps(mid) <= target_epsilon else (mid, high)
    return high
