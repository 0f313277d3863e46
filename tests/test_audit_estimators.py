"""The audit's two estimators against mechanisms whose epsilon is known.

A Gaussian mechanism with sensitivity 1 and std 1/mu has a known (epsilon, delta) curve;
dp-accounting's PLD accountant gives it independently. The one-run lower bound (Steinke,
Nasr, Jagielski 2023) must stay below it at 95% confidence, and the one-shot estimate
(Andrew et al. 2024) must come close to it with enough canaries.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from attacks.estimators import (gaussian_pair_delta, gaussian_pair_epsilon, one_run_epsilon, one_run_p_value,
                                one_shot_epsilon)


def pld_epsilon(mu: float, delta: float, rounds: int = 1) -> float:
    """The exact epsilon of `rounds` Gaussian mechanisms with multiplier 1/mu, from dp-accounting."""
    from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
    from dp_accounting.pld import PLDAccountant

    accountant = PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(SelfComposedDpEvent(GaussianDpEvent(1.0 / mu), rounds))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5])
def test_equal_variance_pair_is_the_gaussian_mechanism(mu, delta):
    assert gaussian_pair_epsilon(0.0, 1.0, mu, 1.0, delta) == pytest.approx(pld_epsilon(mu, delta), rel=2e-3, abs=2e-3)
    # the closed form of Balle and Wang (2018) at the returned epsilon gives delta back
    eps = gaussian_pair_epsilon(0.0, 2.0, 2.0 * mu, 2.0, delta)  # scale-free
    closed = stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
    assert closed == pytest.approx(delta, rel=1e-6)


def test_unequal_variance_delta_matches_numerical_integration():
    from scipy import integrate
    for s1, eps in [(1.5, 0.5), (0.6, 1.0), (2.5, 2.0)]:
        p, q = stats.norm(1.0, s1), stats.norm(0.0, 1.0)
        both = [integrate.quad(lambda x, a=a, b=b: max(0.0, a.pdf(x) - math.exp(eps) * b.pdf(x)), -40, 40,
                               limit=500, points=[0.0, 1.0])[0] for a, b in ((p, q), (q, p))]
        assert gaussian_pair_delta(0.0, 1.0, 1.0, s1, eps) == pytest.approx(max(both), abs=1e-7)


def test_identical_distributions_give_zero_and_separated_ones_grow():
    assert gaussian_pair_epsilon(0.0, 1.0, 0.0, 1.0, 1e-5) == 0.0
    epsilons = [gaussian_pair_epsilon(0.0, 1.0, mu, 1.0, 1e-5) for mu in (0.5, 1, 2, 4, 8)]
    assert all(a < b for a, b in zip(epsilons, epsilons[1:]))


def test_one_run_p_value_pure_dp_is_the_binomial_tail():
    for r, v, eps in [(10, 8, 0.5), (100, 70, 1.0), (40, 40, 2.0)]:
        q = math.exp(eps) / (1 + math.exp(eps))
        assert one_run_p_value(200, r, v, eps, 0.0) == pytest.approx(stats.binom.sf(v - 1, r, q), rel=1e-12)
    # delta only adds to it
    assert one_run_p_value(200, 100, 70, 1.0, 1e-3) > one_run_p_value(200, 100, 70, 1.0, 0.0)


def test_one_run_p_value_delta_term_is_the_papers():
    """Steinke et al., Theorem 5.2: p = P[Bin(r, q) >= v] + 2 m delta max_i P[v > Bin >= v - i] / i."""
    m, r, v, eps, delta = 500, 60, 50, 1.0, 1e-4
    q = 1 / (1 + math.exp(-eps))
    alpha = max(sum(stats.binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1))
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(stats.binom.sf(v - 1, r, q) + 2 * m * delta * alpha,
                                                                 rel=1e-9)


def _gaussian_audit(mu: float, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m canaries, each in with probability 1/2; an included canary's score is N(mu, 1), an
    excluded one's N(0, 1): the Gaussian mechanism with sensitivity 1 and std 1/mu, per canary."""
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    return rng.normal(size=m) + mu * included, included


@pytest.mark.parametrize("mu", [1.0, 3.0, 6.0])
def test_one_run_lower_bound_stays_below_the_true_epsilon(mu):
    delta = 1e-5
    truth = pld_epsilon(mu, delta)
    bounds = [one_run_epsilon(*_gaussian_audit(mu, 1000, seed), delta=delta)["epsilon"] for seed in range(20)]
    assert max(bounds) <= truth
    if mu >= 3.0:  # a strong mechanism is caught: the bound is far from zero
        assert min(bounds) > 0.3 * min(truth, 6.0)


def test_one_run_lower_bound_of_a_perfect_separation():
    """All guesses right: the bound is the epsilon at which r right guesses out of r have
    probability 5% under randomized response, corrected for the guess sizes tried."""
    scores, included = np.where(np.arange(400) % 2 == 0, 1.0, 0.0), np.arange(400) % 2 == 0
    result = one_run_epsilon(scores + np.linspace(0, 1e-3, 400), included, delta=0.0)
    r = result["guesses"]
    assert result["correct"] == r
    level = (1 - 0.95) / result["tests"]
    q = level ** (1 / r)
    assert result["epsilon"] == pytest.approx(math.log(q / (1 - q)), rel=1e-4)


def test_one_run_lower_bound_is_zero_without_signal():
    scores, included = _gaussian_audit(0.0, 1000, 3)
    assert one_run_epsilon(scores, included, delta=1e-5)["epsilon"] < 0.3


def test_one_shot_estimate_of_a_composed_gaussian_mechanism():
    """The federated case itself: K unit canaries in d dimensions, each included one half of
    the time, T rounds of their sum plus N(0, sigma^2 I): the cosine of each canary with the
    final change, against N(0, 1/d), estimates the epsilon of T Gaussians with mu = 1/sigma."""
    rng = np.random.default_rng(0)
    d, k, rounds, sigma = 20000, 500, 4, 1.0
    canaries = rng.normal(size=(k, d))
    canaries /= np.linalg.norm(canaries, axis=1, keepdims=True)
    included = rng.random(k) < 0.5
    change = rounds * canaries[included].sum(0) + sigma * rng.normal(size=(rounds, d)).sum(0)
    cosines = canaries @ change / np.linalg.norm(change)
    delta = 1e-5
    estimate = one_shot_epsilon(cosines[included], dim=d, delta=delta)
    truth = pld_epsilon(1.0 / sigma, delta, rounds)
    assert estimate["epsilon"] == pytest.approx(truth, rel=0.2)
    # without the canaries' signal the estimate is near zero
    assert one_shot_epsilon(cosines[~included], dim=d, delta=delta)["epsilon"] < 0.25 * truth


def test_estimators_refuse_bad_input():
    with pytest.raises(ValueError, match="same length"):
        one_run_epsilon(np.zeros(3), np.zeros(4, dtype=bool), delta=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        one_shot_epsilon(np.zeros(1), dim=10, delta=1e-5)
    with pytest.raises(ValueError, match="delta"):
        gaussian_pair_epsilon(0.0, 1.0, 1.0, 1.0, 0.0)


def test_every_hockey_stick_direction_matches_numerical_integration():
    """Each direction on its own (the pair's delta is their max), at means and spreads
    away from 0 and 1, both sides of equal variance and the equal-variance half-line."""
    from scipy import integrate

    from attacks.estimators import _hockey_stick
    for mp, sp, mq, sq, eps in [(0.3, 0.7, -1.2, 1.3, 0.4), (-1.2, 1.3, 0.3, 0.7, 0.4), (2.5, 2.0, 0.4, 0.5, 1.5),
                                (0.4, 0.5, 2.5, 2.0, 0.2), (1.7, 0.8, -0.6, 0.8, 0.9), (-0.6, 0.8, 1.7, 0.8, 0.3),
                                (0.3, 1.0, 0.0, 1.0, 0.1),  # equal variances, a small slope (0 < b < 1)
                                (0.0, 1.0, 0.0, 1.1, 0.05),  # nearly tangent: 0 < discriminant < 1
                                (2.0, 0.02, 0.0, 1.0, 2.0), (0.0, 1.0, 2.0, 0.02, 0.5)]:  # a spike against the null
        p, q = stats.norm(mp, sp), stats.norm(mq, sq)
        # breakpoints at each mean and its spread, so that quad sees a narrow spike
        points = sorted({m + k * sd for m, sd in ((mp, sp), (mq, sq)) for k in (-6, -3, -1, 0, 1, 3, 6)})
        expected = integrate.quad(lambda x: max(0.0, p.pdf(x) - math.exp(eps) * q.pdf(x)), -60, 60, limit=800,
                                  points=points)[0]
        assert _hockey_stick(mp, sp, mq, sq, eps) == pytest.approx(expected, abs=1e-6), (mp, sp, mq, sq, eps)
    assert _hockey_stick(1.0, 1.0, 1.0, 1.0, 0.0) == 0.0  # the same distribution
    assert _hockey_stick(0.0, 1.0, 0.0, 1.1, 3.0) == 0.0  # a spread too close to matter at that eps


@pytest.mark.parametrize("mu, delta", [(0.2, 1e-3), (0.3, 1e-5), (3.0, 1e-3)])
def test_the_gaussian_pair_epsilon_anywhere_on_the_line(mu, delta):
    """Below 1 as above it, and at any location and scale."""
    truth = pld_epsilon(mu, delta)
    assert gaussian_pair_epsilon(-3.0, 0.5, -3.0 + 0.5 * mu, 0.5, delta) == pytest.approx(truth, rel=2e-3, abs=2e-3)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        gaussian_pair_epsilon(0.0, 1.0, mu, 1.0, 1.0)


def test_one_run_p_value_edges():
    assert one_run_p_value(50, 10, 0, 1.0, 1e-3) == 1.0  # no right guess is certain
    assert one_run_p_value(10_000, 20, 15, 0.5, 0.1) == 1.0  # a large delta caps it at 1
    assert one_run_p_value(10, 10, 10, 0.0, 0.0) == pytest.approx(0.5 ** 10)
    with pytest.raises(ValueError, match=r"need 0 <= right guesses \(-1\) <= guesses \(3\) <= canaries \(5\)"):
        one_run_p_value(5, 3, -1, 1.0, 0.0)


def test_the_lower_bound_is_the_largest_epsilon_the_test_rules_out():
    """Against a scan of the definition: for each guess count the largest epsilon whose
    p-value is below the shared level; a bound below 1 included."""
    scores, included = _gaussian_audit(0.8, 600, 5)
    result = one_run_epsilon(scores, included, delta=1e-5)
    assert result["tests"] == 6 and result["canaries"] == 600 and result["confidence"] == 0.95
    assert result["delta"] == 1e-5
    level = 0.05 / 6
    order = np.argsort(scores)
    grid = np.arange(0, 6, 1e-3)
    best = 0.0
    for k in (6, 15, 30, 60, 150, 300):  # the fractions of m / 2 = 300
        right = int(included[order[600 - k:]].sum() + (~included[order[:k]]).sum())
        ruled = [e for e in grid if one_run_p_value(600, 2 * k, right, e, 1e-5) < level]
        best = max(best, max(ruled, default=0.0))
    assert 0 < result["epsilon"] < 1
    assert result["epsilon"] == pytest.approx(best, abs=2e-3)
    assert result["guesses"] in {2 * k for k in (6, 15, 30, 60, 150, 300)}


def test_a_perfect_separation_uses_every_guess_it_can():
    included = np.arange(400) % 2 == 0
    result = one_run_epsilon(included + np.linspace(0, 1e-3, 400), included, delta=0.0)
    assert result["guesses"] == result["correct"] == 400
    # few canaries: the guess counts are 1, 2, 5 and 10 per side
    small = one_run_epsilon(np.arange(20.0), np.arange(20) >= 10, delta=0.0)
    assert small["tests"] == 4 and small["guesses"] == 20


def test_an_estimate_beyond_the_search_is_reported_at_the_cap():
    from attacks.estimators import EPSILON_CAP
    assert gaussian_pair_epsilon(0.0, 1.0, 80.0, 1.0, 1e-5) == EPSILON_CAP
    assert one_shot_epsilon(np.full(10, 0.5), dim=10_000, delta=1e-5)["epsilon"] == EPSILON_CAP


def test_the_one_shot_estimate_is_the_fitted_pair_against_the_null():
    rng = np.random.default_rng(4)
    d = 10_000
    for spread in (0.5, 1.0, 1.6):  # narrower than the null, equal, wider
        cosines = rng.normal(3.0 / math.sqrt(d), spread / math.sqrt(d), size=50)
        result = one_shot_epsilon(cosines, dim=d, delta=1e-5)
        assert result["mean"] == pytest.approx(cosines.mean()) and result["std"] == pytest.approx(cosines.std(ddof=1))
        assert result["null_std"] == pytest.approx(0.01) and result["inserted"] == 50 and result["delta"] == 1e-5
        assert result["epsilon"] == pytest.approx(
            gaussian_pair_epsilon(0.0, 0.01, cosines.mean(), cosines.std(ddof=1), 1e-5), rel=1e-9)
    assert one_shot_epsilon(np.array([0.01, 0.02]), dim=d, delta=1e-5)["inserted"] == 2  # two are enough
