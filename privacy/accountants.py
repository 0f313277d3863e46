"""Epsilon of a history of Gaussian releases, with the libraries' own math.

A history is a list of (noise_multiplier, sample_rate) entries, one per release, where the
multiplier is the noise std divided by the distance between the outputs on two
neighbouring datasets (privacy/events.py computes it for each protected unit). Two
neighbouring relations are used:

- "add_remove": the unit is present or absent (a hospital or sub-client joins or leaves).
- "replace": the unit stays and its data changes (a patient inside a sub-client; any unit
  under fixed-size sampling, where the population size is public).

Sampling is accounted as what it is: "all" (q = 1), "poisson" (each hospital independently
with probability q) or "fixed" (m of n hospitals without replacement). Where a library has
no analysis of a (sampling, relation) pair the release is accounted without subsampling
amplification (q = 1), a valid upper bound, and `approximation_note` says so:

| sampling | relation   | RDP (dp-accounting)        | PLD (dp-accounting)           | PRV (Opacus)   |
|----------|------------|----------------------------|-------------------------------|----------------|
| all      | either     | Gaussian                   | Gaussian                      | Gaussian       |
| poisson  | add_remove | Poisson-sampled Gaussian   | Poisson-sampled Gaussian      | Poisson        |
| poisson  | replace    | no amplification           | Poisson-sampled, REPLACE_ONE  | no amplif.     |
| fixed    | replace    | sampled w/o replacement    | no amplification              | no amplif.     |

dp-accounting's PLD reads a REPLACE_ONE Gaussian's multiplier as std / (per-element bound),
half the neighbouring distance, while its RDP reads it as std / distance; `_pld_event`
converts, and a test pins both to the closed form.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from itertools import groupby

import dp_accounting
import numpy as np
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from opacus.accountants import PRVAccountant

ACCOUNTANTS = ("rdp", "prv", "pld")
RELATIONS = ("add_remove", "replace")
# PLD grid step: 1e-3 keeps PLD within ~1e-3 of exact while ~10x faster than the 1e-4 default.
PLD_DISCRETIZATION = 1e-3
_NEIGHBOURS = {"add_remove": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
               "replace": dp_accounting.NeighboringRelation.REPLACE_ONE}

History = list[tuple[float, float]]


@dataclass(frozen=True)
class Sampling:
    kind: str          # "all", "poisson" or "fixed"
    rate: float        # q: the probability that a given hospital (and its sub-clients) takes part
    population: int    # hospitals
    sample_size: int   # hospitals per round ("fixed"; the expectation otherwise)


EVERY_ROUND = Sampling("all", 1.0, 1, 1)


def amplified(sampling: Sampling, relation: str, accountant: str) -> bool:
    """Whether `accountant` analyses subsampling for this (sampling, relation) pair."""
    if sampling.kind == "all":
        return False
    if sampling.kind == "poisson":
        return relation == "add_remove" or accountant == "pld"
    return accountant == "rdp"  # fixed-size: dp-accounting's RDP for sampling without replacement


def approximation_note(sampling: Sampling, relation: str, accountant: str) -> str | None:
    """Why `accountant` reports an upper bound without amplification, or None."""
    if sampling.kind == "all" or amplified(sampling, relation, accountant):
        return None
    what = "fixed-size sampling without replacement" if sampling.kind == "fixed" else \
        "Poisson sampling under the replace-one relation"
    return f"{accountant}: no analysis of {what} in the library; accounted without subsampling amplification " \
           "(an upper bound)"


def _compress(history: History) -> list[tuple[float, float, int]]:
    """Runs of equal consecutive releases -> (noise_multiplier, sample_rate, count)."""
    return [(z, q, len(list(run))) for (z, q), run in groupby(history)]


def dp_event(history: History, *, sampling: Sampling, relation: str) -> dp_accounting.DpEvent:
    """The composition of `history` as a dp-accounting event, in RDP's reading of the
    multiplier (std / neighbouring distance)."""
    events = []
    for z, q, n in _compress(history):
        event = dp_accounting.GaussianDpEvent(z)
        if q < 1 and sampling.kind == "poisson":
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        elif q < 1 and sampling.kind == "fixed":
            event = dp_accounting.SampledWithoutReplacementDpEvent(sampling.population, sampling.sample_size, event)
        events.append(dp_accounting.SelfComposedDpEvent(event, n))
    return dp_accounting.ComposedDpEvent(events)


def epsilon(history: History, *, delta: float, accountant: str, sampling: Sampling,
            relation: str = "add_remove") -> float:
    """Epsilon at `delta` of composing the releases in `history`."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {ACCOUNTANTS}")
    if relation not in RELATIONS:
        raise ValueError(f"unknown neighbouring relation {relation!r}; choose one of {RELATIONS}")
    if not history:
        return 0.0
    if any(z <= 0 or math.isinf(1 / z) for z, _ in history):
        return math.inf  # a release without noise (or without a sensitivity bound) has no finite guarantee
    if not amplified(sampling, relation, accountant):
        history = [(z, 1.0) for z, _ in history]
        sampling, relation = EVERY_ROUND, "add_remove"  # plain Gaussians: the distance is all that matters
    if accountant == "rdp":
        # RDP adds up over releases: sum each distinct release's curve (cached) times its count.
        total = sum(n * _rdp_curve(z, q, sampling, relation) for z, q, n in _compress(history))
        eps, _ = rdp_privacy_accountant.compute_epsilon(_rdp_orders(), total, delta)
        return float(eps)
    if accountant == "prv":
        acc = PRVAccountant()
        acc.history = _compress(history)
        with np.errstate(divide="ignore"):  # Opacus takes log(1 - q) = log(0) at q = 1, harmlessly
            return float(acc.get_epsilon(delta))
    acc = pld_privacy_accountant.PLDAccountant(neighboring_relation=_NEIGHBOURS[relation],
                                               value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(_pld_event(history, relation))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=4096)
def _rdp_curve(z: float, q: float, sampling: Sampling, relation: str) -> np.ndarray:
    """RDP at every order of one release (dp-accounting's math), cached: a run repeats a
    few distinct releases many times, and sampling without replacement costs ~0.3 s each."""
    acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=_NEIGHBOURS[relation])
    acc.compose(dp_event([(z, q)], sampling=sampling, relation=relation))
    return np.asarray(acc.rdp, dtype=float)


@functools.lru_cache(maxsize=1)
def _rdp_orders() -> np.ndarray:
    return np.asarray(rdp_privacy_accountant.RdpAccountant().orders, dtype=float)


def _pld_event(history: History, relation: str) -> dp_accounting.DpEvent:
    # PLD's REPLACE_ONE Gaussian moves from -s to +s: its multiplier is std / s = 2 * (std / distance).
    factor = 2.0 if relation == "replace" else 1.0
    events = []
    for z, q, n in _compress(history):
        event = dp_accounting.GaussianDpEvent(z * factor)
        if q < 1:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        events.append(dp_accounting.SelfComposedDpEvent(event, n))
    return dp_accounting.ComposedDpEvent(events)


def calibrate(target_epsilon: float, spent, *, what: str) -> float:
    """Smallest noise multiplier z (to 1e-3 relative) with spent(z) <= target_epsilon.
    `spent(z)` is the epsilon of the whole planned run at z. The bisection keeps the upper
    end, so the result never overshoots the target."""
    low, high = 1e-3, 1.0
    while spent(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"{what} {target_epsilon} is not reachable at any noise level")
    for _ in range(64):  # bounded: each halving takes the interval 2x closer
        if (high - low) / high <= 1e-3:
            break
        mid = (low + high) / 2
        low, high = (low, mid) if spent(mid) <= target_epsilon else (mid, high)
    return high
