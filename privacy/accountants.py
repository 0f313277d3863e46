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

Without amplification (q = 1, or where the library has no analysis) the releases are plain
Gaussians, which compose exactly into one Gaussian of multiplier (sum_i z_i^-2)^-1/2
(Dong, Roth and Su's mu-GDP). PLD and PRV evaluate that one release (`_folded`): the same
epsilon, in constant time however many rounds, and without compounding their grids'
discretisation over the rounds. RDP sums its curves, which is already exact and cheap.

PLD and PRV are numerical: their grids span the privacy-loss range, which grows as 1/z.
Their time and memory are bounded: PLD coarsens its grid step past `PLD_MAX_POINTS` (a
pessimistic grid stays an upper bound), PRV widens its error past `PRV_MAX_POINTS` (it
reports epsilon plus that error), and past `NUMERIC_LIMIT` (RDP's bound) neither is computed:
PRV's exp(loss) overflows float64 and a useful PLD grid no longer fits. `limit_note` says
which applied; an epsilon that is not computed is reported as infinite, never as a number.
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

ACCOUNTANTS = ("rdp", "prv", "pld")
RELATIONS = ("add_remove", "replace")
# PLD grid step: 1e-3 keeps PLD within ~1e-3 of exact while ~10x faster than the 1e-4 default.
PLD_DISCRETIZATION = 1e-3
_NEIGHBOURS = {"add_remove": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
               "replace": dp_accounting.NeighboringRelation.REPLACE_ONE}

# Beyond this epsilon (RDP's bound) PLD and PRV are not computed; RDP's bound stands alone.
NUMERIC_LIMIT = 500.0
# Grid sizes that keep one accounting call within a few seconds and a few hundred MB.
PLD_MAX_POINTS = 200_000
# One Gaussian (a folded q = 1 history): its grid error does not compound, and 20,000 points
# keep it within 1e-4 of the closed form (tests) in ~0.05 s instead of ~0.8 s.
PLD_ONE_RELEASE_POINTS = 20_000
PRV_MAX_POINTS = 1_000_000
PRV_EPS_ERROR = 0.01  # Opacus's default
# dp-accounting truncates a Gaussian's privacy loss where the mass falls below e^-50,
# i.e. at +-10 standard deviations: 20 / z nats of loss at multiplier z.
_PLD_LOSS_SPAN = 20.0

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
        return _rdp_epsilon(history, delta, sampling, relation)
    if _rdp_bound(history, delta, sampling, relation) > NUMERIC_LIMIT:
        return math.inf  # not computed (limit_note says why); RDP's bound is finite
    history = _folded(history, sampling)
    if accountant == "prv":
        acc = _prv_accountant(history)
        with np.errstate(divide="ignore"):  # Opacus takes log(1 - q) = log(0) at q = 1, harmlessly
            eps = acc.get_epsilon(delta, eps_error=_prv_eps_error(acc, delta))
        return float(eps)
    acc = pld_privacy_accountant.PLDAccountant(neighboring_relation=_NEIGHBOURS[relation],
                                               value_discretization_interval=_pld_interval(history, relation, sampling))
    acc.compose(_pld_event(history, relation))
    return float(acc.get_epsilon(delta))


def limit_note(history: History, *, delta: float, accountant: str, sampling: Sampling,
               relation: str = "add_remove") -> str | None:
    """Why `accountant` gives no finite epsilon or a looser one than usual, or None."""
    if not history or accountant == "rdp":
        return None
    if any(z <= 0 or math.isinf(1 / z) for z, _ in history):
        return None  # no noise: infinite under every accountant, said by the outputs' coverage
    if not amplified(sampling, relation, accountant):
        history = [(z, 1.0) for z, _ in history]
        sampling, relation = EVERY_ROUND, "add_remove"
    rdp = _rdp_bound(history, delta, sampling, relation)
    if rdp > NUMERIC_LIMIT:
        return (f"{accountant}: not computed (reported as inf): RDP already bounds epsilon by {rdp:.4g} > "
                f"{NUMERIC_LIMIT:g}, where PRV's grid overflows floating point and PLD's outgrows memory")
    history = _folded(history, sampling)
    if accountant == "pld" and sampling.kind != "all" and \
            (step := _pld_interval(history, relation, sampling)) > PLD_DISCRETIZATION:
        return f"pld: grid step coarsened to {step:.3g} (noise this small spans a wide loss range); an upper bound"
    if accountant == "prv":
        acc = _prv_accountant(history)
        if (err := _prv_eps_error(acc, delta)) > PRV_EPS_ERROR:
            return f"prv: error bound widened to {err:.3g} to keep the grid within memory; an upper bound"
    return None


def _folded(history: History, sampling: Sampling) -> History:
    """Unamplified releases as the one Gaussian they compose into; others unchanged."""
    if sampling.kind != "all":
        return history
    return [(math.fsum(z ** -2 for z, _ in history) ** -0.5, 1.0)]


def _rdp_epsilon(history: History, delta: float, sampling: Sampling, relation: str) -> float:
    # RDP adds up over releases: sum each distinct release's curve (cached) times its count.
    total = sum(n * _rdp_curve(z, q, sampling, relation) for z, q, n in _compress(history))
    eps, _ = rdp_privacy_accountant.compute_epsilon(_rdp_orders(), total, delta)
    return float(eps)


def _rdp_bound(history: History, delta: float, sampling: Sampling, relation: str) -> float:
    """RDP's epsilon, without amplification where RDP has no analysis of the pair (an upper bound)."""
    if not amplified(sampling, relation, "rdp"):
        history = [(z, 1.0) for z, _ in history]
        sampling, relation = EVERY_ROUND, "add_remove"
    return _rdp_epsilon(history, delta, sampling, relation)


def _pld_interval(history: History, relation: str, sampling: Sampling) -> float:
    """PLD's grid step: the default, or coarser where the widest release's loss span
    would need more than PLD_MAX_POINTS points (PLD_ONE_RELEASE_POINTS for one folded Gaussian)."""
    factor = 2.0 if relation == "replace" else 1.0
    widest = max(_PLD_LOSS_SPAN / (z * factor) for z, _ in history)
    return max(PLD_DISCRETIZATION, widest / (PLD_ONE_RELEASE_POINTS if sampling.kind == "all" else PLD_MAX_POINTS))


def _prv_accountant(history: History):
    # Opacus (~2 s to import) loads when PRV is first asked for, not with every run.
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = _compress(history)
    return acc


def _prv_eps_error(acc, delta: float) -> float:
    """Opacus's epsilon error, widened so that its grid (2L / mesh points, mesh proportional
    to the error) stays within PRV_MAX_POINTS."""
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    domain = acc._get_domain(prvs=[PoissonSubsampledGaussianPRV(q, z) for z, q, _ in acc.history],
                             num_self_compositions=[n for _, _, n in acc.history],
                             eps_error=PRV_EPS_ERROR, delta_error=delta / 1000)
    return PRV_EPS_ERROR * max(1.0, domain.size / PRV_MAX_POINTS)


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
