"""Epsilon of a history of Gaussian releases, with the libraries' own math.

A history is a list of releases, one per round (`Release`): the noise multiplier (the
noise std divided by the distance between the outputs on two neighbouring datasets;
privacy/events.py computes it for each protected unit), the probability that the release
involves the unit, and how that probability arises (its kind):

- "sampled": the unit is what the sampling draws (a hospital, or a sub-client that is its
  hospital's only one): accounted with the account's sampling scheme, which hides whether
  the unit took part.
- "revealed": the unit takes part with probability q together with companions that are in
  both neighbouring datasets (the other sub-clients of its hospital), so an observer can
  tell whether it took part. The neighbouring pair is then (1-q) x + q N(1/z) against
  (1-q) x + q N(0) with x an outcome the same for both: a Gaussian released with
  probability q, visibly. Its PLD is the Gaussian's mixed with the identity's
  (dp-accounting's `compute_mixture`, exact), its RDP (1/(a-1)) log(1 - q + q e^((a-1) r_a))
  with r_a the Gaussian's RDP at order a (the Renyi integral split over the two branches),
  and PRV has no analysis of it.

Two neighbouring relations are used:

- "add_remove": the unit is present or absent (a hospital or sub-client joins or leaves).
- "replace": the unit stays and its contribution changes within its clipping ball (a
  patient's sub-client or hospital; any unit under fixed-size sampling, where the
  population size is public).

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
| revealed | either     | closed form (above)        | mixture with the identity     | no amplif.     |

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
from typing import NamedTuple

import dp_accounting
import numpy as np
from dp_accounting.pld import pld_privacy_accountant, privacy_loss_distribution
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

KINDS = ("sampled", "revealed")


class Release(NamedTuple):
    """One Gaussian release as an account sees it (see the module docstring for `kind`)."""
    multiplier: float   # noise std / neighbouring distance
    rate: float         # probability that the release involves the unit
    kind: str = "sampled"


History = list[Release]  # (multiplier, rate) pairs are read as "sampled" releases


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


def revealed_note(accountant: str) -> str:
    """What a history with "revealed" releases is charged, for the report."""
    if accountant == "prv":
        return ("prv: no analysis of a unit sampled together with its hospital's other sub-clients; those rounds "
                "are accounted without subsampling amplification (an upper bound)")
    return (f"{accountant}: the unit is sampled together with its hospital's other sub-clients, which show whether "
            "it took part: those rounds are charged as a Gaussian released with probability q that an observer "
            "can tell apart from no release (no amplification by hidden sampling)")


def history_notes(history: History, *, sampling: Sampling, relation: str, accountant: str) -> list[str]:
    """Why `accountant` reads part of `history` other than as the account's sampling says."""
    releases = [Release(*r) for r in history]
    notes = []
    if any(r.kind == "sampled" and r.rate < 1 for r in releases) or not releases:
        notes += [n for n in [approximation_note(sampling, relation, accountant)] if n]
    if any(r.kind == "revealed" and r.rate < 1 for r in releases):
        notes.append(revealed_note(accountant))
    return notes


def _analysed(history: History, sampling: Sampling, relation: str, accountant: str) -> list[Release]:
    """The releases as `accountant` reads them: each that it cannot amplify as a plain
    Gaussian (rate 1), an upper bound."""
    out = []
    for r in (Release(*e) for e in history):
        if r.kind not in KINDS:
            raise ValueError(f"unknown release kind {r.kind!r}; choose one of {KINDS}")
        plain = r.rate >= 1 or (accountant == "prv" if r.kind == "revealed" else
                                not amplified(sampling, relation, accountant))
        out.append(Release(float(r.multiplier), 1.0) if plain else Release(float(r.multiplier), float(r.rate), r.kind))
    return out


def _all_plain(history: list[Release]) -> bool:
    return all(r.rate >= 1 for r in history)


def _compress(history: list[Release]) -> list[tuple[float, float, str, int]]:
    """Runs of equal consecutive releases -> (noise_multiplier, sample_rate, kind, count)."""
    return [(z, q, kind, len(list(run))) for (z, q, kind), run in groupby(Release(*r) for r in history)]


def dp_event(history: History, *, sampling: Sampling, relation: str) -> dp_accounting.DpEvent:
    """The composition of `history` as a dp-accounting event, in RDP's reading of the
    multiplier (std / neighbouring distance). dp-accounting has no event for a "revealed"
    release (its RDP is computed in `_rdp_curve`)."""
    events = []
    for z, q, kind, n in _compress(history):
        if kind != "sampled" and q < 1:
            raise ValueError(f"dp-accounting has no event for a {kind!r} release")
        event = dp_accounting.GaussianDpEvent(z)
        if q < 1 and sampling.kind == "poisson":
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        elif q < 1 and sampling.kind == "fixed":
            event = dp_accounting.SampledWithoutReplacementDpEvent(sampling.population, sampling.sample_size, event)
        events.append(dp_accounting.SelfComposedDpEvent(event, n))
    return dp_accounting.ComposedDpEvent(events)


def epsilon(history: History, *, delta: float, accountant: str, sampling: Sampling,
            relation: str = "add_remove", zcdp: list[dp_accounting.ZCDpEvent] = ()) -> float:
    """Epsilon at `delta` of composing the releases in `history` and the (xi, rho)-zCDP
    releases in `zcdp` (RDP reads those exactly, unamplified; PLD and PRV cannot: inf)."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {ACCOUNTANTS}")
    if relation not in RELATIONS:
        raise ValueError(f"unknown neighbouring relation {relation!r}; choose one of {RELATIONS}")
    if zcdp:
        return _with_zcdp(history, zcdp, delta, accountant, sampling, relation)
    if not history:
        return 0.0
    if _unbounded(history):
        return math.inf  # a release without noise (or without a sensitivity bound) has no finite guarantee
    history = _analysed(history, sampling, relation, accountant)
    if _all_plain(history):
        sampling, relation = EVERY_ROUND, "add_remove"  # plain Gaussians: the distance is all that matters
    if accountant == "rdp":
        return _rdp_epsilon(history, delta, sampling, relation)
    if _rdp_bound(history, delta, sampling, relation) > NUMERIC_LIMIT:
        return math.inf  # not computed (limit_note says why); RDP's bound is finite
    history = _folded(history)
    if accountant == "prv":
        acc = _prv_accountant(history)
        with np.errstate(divide="ignore"):  # Opacus takes log(1 - q) = log(0) at q = 1, harmlessly
            eps = acc.get_epsilon(delta, eps_error=_prv_eps_error(acc, delta))
        return float(eps)
    if any(r.kind == "revealed" for r in history):
        return float(_pld_of(history, relation, _pld_interval(history, relation)).get_epsilon_for_delta(delta))
    acc = pld_privacy_accountant.PLDAccountant(neighboring_relation=_NEIGHBOURS[relation],
                                               value_discretization_interval=_pld_interval(history, relation))
    acc.compose(_pld_event(history, relation))
    return float(acc.get_epsilon(delta))


def _unbounded(history: History) -> bool:
    """Whether a release has no noise (or no sensitivity bound): no finite guarantee."""
    return any(r[0] <= 0 or math.isinf(1 / r[0]) for r in history)


def limit_note(history: History, *, delta: float, accountant: str, sampling: Sampling,
               relation: str = "add_remove") -> str | None:
    """Why `accountant` gives no finite epsilon or a looser one than usual, or None."""
    if not history or accountant == "rdp":
        return None
    if _unbounded(history):
        return None  # no noise: infinite under every accountant, said by the outputs' coverage
    history = _analysed(history, sampling, relation, accountant)
    if _all_plain(history):
        sampling, relation = EVERY_ROUND, "add_remove"
    rdp = _rdp_bound(history, delta, sampling, relation)
    if rdp > NUMERIC_LIMIT:
        return (f"{accountant}: not computed (reported as inf): RDP already bounds epsilon by {rdp:.4g} > "
                f"{NUMERIC_LIMIT:g}, where PRV's grid overflows floating point and PLD's outgrows memory")
    history = _folded(history)
    if accountant == "pld" and not _all_plain(history) and \
            (step := _pld_interval(history, relation)) > PLD_DISCRETIZATION:
        return f"pld: grid step coarsened to {step:.3g} (noise this small spans a wide loss range); an upper bound"
    if accountant == "prv":
        acc = _prv_accountant(history)
        if (err := _prv_eps_error(acc, delta)) > PRV_EPS_ERROR:
            return f"prv: error bound widened to {err:.3g} to keep the grid within memory; an upper bound"
    return None


def _folded(history: list[Release]) -> list[Release]:
    """The plain (unamplified) releases as the one Gaussian they compose into, then the others."""
    plain = [r.multiplier for r in history if r.rate >= 1]
    if not plain:
        return history
    return [Release(math.fsum(z ** -2 for z in plain) ** -0.5, 1.0)] + [r for r in history if r.rate < 1]


def _rdp_epsilon(history: list[Release], delta: float, sampling: Sampling, relation: str,
                 extra: np.ndarray | float = 0.0) -> float:
    # RDP adds up over releases: sum each distinct release's curve (cached) times its count.
    total = sum((n * _rdp_curve(z, q, kind, sampling, relation) for z, q, kind, n in _compress(history)),
                np.zeros(len(_rdp_orders()))) + extra
    eps, _ = rdp_privacy_accountant.compute_epsilon(_rdp_orders(), total, delta)
    return float(eps)


def _with_zcdp(history: History, zcdp: list[dp_accounting.ZCDpEvent], delta: float, accountant: str,
               sampling: Sampling, relation: str) -> float:
    """RDP of Gaussian releases and (xi, rho)-zCDP ones together: their curves add."""
    if accountant != "rdp" or _unbounded(history):
        return math.inf
    orders = _rdp_orders()
    extra = sum((z.xi + z.rho * orders for z in zcdp), np.zeros(len(orders)))
    history = _analysed(history, sampling, relation, "rdp")
    if _all_plain(history):
        sampling, relation = EVERY_ROUND, "add_remove"
    return _rdp_epsilon(history, delta, sampling, relation, extra)


def _rdp_bound(history: History, delta: float, sampling: Sampling, relation: str) -> float:
    """RDP's epsilon of the releases as another accountant reads them, without amplification
    where RDP has no analysis of the pair (an upper bound)."""
    history = _analysed(history, sampling, relation, "rdp")
    if _all_plain(history):
        sampling, relation = EVERY_ROUND, "add_remove"
    return _rdp_epsilon(history, delta, sampling, relation)


def _pld_factor(kind: str, relation: str) -> float:
    """PLD reads a REPLACE_ONE Gaussian's multiplier per element, half the neighbouring
    distance: twice std / distance. A revealed release is read as N(0) against N(1/z)."""
    return 2.0 if relation == "replace" and kind != "revealed" else 1.0


def _pld_interval(history: list[Release], relation: str) -> float:
    """PLD's grid step: the default, or coarser where the widest release's loss span
    would need more than PLD_MAX_POINTS points (PLD_ONE_RELEASE_POINTS for one folded Gaussian)."""
    widest = max(_PLD_LOSS_SPAN / (r.multiplier * _pld_factor(r.kind, relation)) for r in history)
    one = len(history) == 1 and history[0].rate >= 1
    return max(PLD_DISCRETIZATION, widest / (PLD_ONE_RELEASE_POINTS if one else PLD_MAX_POINTS))


def _pld_of(history: list[Release], relation: str, interval: float):
    """The PLD of a history with "revealed" releases, composed from dp-accounting's PLDs:
    a revealed release is the Gaussian's PLD mixed with the identity's (no loss) with
    weights q and 1 - q; the others are what its PLD accountant builds for them."""
    plds = []
    for z, q, kind, n in _compress(history):
        if kind == "revealed":
            gaussian = privacy_loss_distribution.from_gaussian_mechanism(
                standard_deviation=z, value_discretization_interval=interval)
            one = gaussian.compute_mixture(privacy_loss_distribution.identity(interval), q)
        else:
            one = privacy_loss_distribution.from_gaussian_mechanism(
                standard_deviation=z * _pld_factor(kind, relation),
                value_discretization_interval=interval, sampling_prob=q, neighboring_relation=_NEIGHBOURS[relation])
        plds.append(one.self_compose(n) if n > 1 else one)
    total = plds[0]
    for pld in plds[1:]:
        total = total.compose(pld)
    return total


def _prv_accountant(history: list[Release]):
    # Opacus (~2 s to import) loads when PRV is first asked for, not with every run.
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(z, q, n) for z, q, _, n in _compress(history)]
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
def _rdp_curve(z: float, q: float, kind: str, sampling: Sampling, relation: str) -> np.ndarray:
    """RDP at every order of one release (dp-accounting's math), cached: a run repeats a
    few distinct releases many times, and sampling without replacement costs ~0.3 s each.
    A "revealed" release: with probability q the Gaussian, otherwise an outcome the same on
    both datasets, so E_P[(dQ/dP)^a] = (1 - q) + q e^((a-1) r_a), r_a the Gaussian's RDP."""
    if kind == "revealed" and q < 1:
        orders = _rdp_orders()
        gaussian = _rdp_curve(z, 1.0, "sampled", EVERY_ROUND, "add_remove")
        return np.logaddexp(math.log1p(-q), math.log(q) + (orders - 1) * gaussian) / (orders - 1)
    acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=_NEIGHBOURS[relation])
    acc.compose(dp_event([Release(z, q)], sampling=sampling, relation=relation))
    return np.asarray(acc.rdp, dtype=float)


@functools.lru_cache(maxsize=1)
def _rdp_orders() -> np.ndarray:
    return np.asarray(rdp_privacy_accountant.RdpAccountant().orders, dtype=float)


def _pld_event(history: History, relation: str) -> dp_accounting.DpEvent:
    # PLD's REPLACE_ONE Gaussian moves from -s to +s: its multiplier is std / s = 2 * (std / distance).
    events = []
    for z, q, kind, n in _compress(history):
        event = dp_accounting.GaussianDpEvent(z * _pld_factor(kind, relation))
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
