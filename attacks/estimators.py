"""Two ways to check an epsilon from the outside, from canaries inserted into one run.

- The one-run lower bound (Steinke, Nasr, Jagielski, "Privacy auditing with one (1)
  training run", NeurIPS 2023): m canaries, each included with probability 1/2. The
  auditor guesses "in" for the k highest scores and "out" for the k lowest and abstains on
  the rest. Under (epsilon, delta)-DP the number of right guesses is dominated by
  randomized response (Theorem 5.2), so an epsilon under which the observed count is
  unlikely at the chosen confidence is ruled out. A valid lower bound: it never exceeds
  the true epsilon except with probability 1 - confidence.
- The one-shot estimate (Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar, "One-shot
  empirical privacy estimation for federated learning", ICLR 2024): the cosine of each
  inserted canary with the final model change, fitted by a Gaussian, against the cosine of
  a random direction, N(0, 1/d); the estimate is the epsilon at delta of that Gaussian
  pair. An estimate, not a bound: it measures the mechanism as it behaves on the canaries.

Pure functions of scores; the canaries and the scores come from attacks/audit.py.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

# The guess sizes tried by the one-run bound, as fractions of half the canaries; the
# confidence is split over them (Bonferroni), so taking the best is still valid.
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
EPSILON_CAP = 100.0  # the search stops here: a larger epsilon is reported as this cap


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least v of r guesses right] for an (eps, delta)-DP mechanism on m canaries:
    P[Bin(r, q) >= v] + 2 m delta max_{i <= v} P[v > Bin(r, q) >= v - i] / i, with
    q = e^eps / (1 + e^eps) (Steinke et al., Theorem 5.2), at most 1."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= right guesses ({v}) <= guesses ({r}) <= canaries ({m})")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, q))
    if v == 0:  # no right guess: certain under any mechanism
        return tail
    below = np.cumsum(stats.binom.pmf(v - np.arange(1, v + 1), r, q))  # P[v > Bin >= v - i], i = 1..v
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def _epsilon_ruled_out(m: int, r: int, v: int, delta: float, level: float) -> float:
    """The largest epsilon at which v right guesses of r have probability below `level`."""
    def margin(eps: float) -> float:
        return one_run_p_value(m, r, v, eps, delta) - level
    if margin(0.0) >= 0:
        return 0.0
    if margin(EPSILON_CAP) < 0:
        return EPSILON_CAP
    return float(optimize.brentq(margin, 0.0, EPSILON_CAP, xtol=1e-6))


def one_run_epsilon(scores: np.ndarray, included: np.ndarray, *, delta: float, confidence: float = 0.95) -> dict:
    """The one-run lower bound on epsilon from each canary's score (higher: more likely
    in) and its secret bit. Guesses k in and k out for each k in GUESS_FRACTIONS of m / 2;
    the confidence is shared among them. Returns the bound and the guesses that gave it."""
    scores, included = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    if scores.shape != included.shape:
        raise ValueError(f"scores and bits must have the same length, not {scores.shape} and {included.shape}")
    m = len(scores)
    order = np.argsort(scores, kind="stable")
    sizes = sorted({max(1, int(f * m / 2)) for f in GUESS_FRACTIONS})
    level = (1 - confidence) / len(sizes)
    candidates = []
    for k in sizes:
        right = int(included[order[m - k:]].sum() + (~included[order[:k]]).sum())
        candidates.append({"epsilon": _epsilon_ruled_out(m, 2 * k, right, delta, level), "guesses": 2 * k,
                           "correct": right})
    best = max(candidates, key=lambda c: c["epsilon"])  # the first of equals: the fewest guesses
    return {**best, "canaries": m, "tests": len(sizes), "confidence": confidence, "delta": delta}


def gaussian_pair_delta(mu0: float, s0: float, mu1: float, s1: float, eps: float) -> float:
    """max(H_eps(P || Q), H_eps(Q || P)) for P = N(mu1, s1^2), Q = N(mu0, s0^2): the delta at
    which the pair is (eps, delta)-indistinguishable. Each hockey-stick divergence is
    P(A) - e^eps Q(A) over the set A where p > e^eps q, found from the quadratic log p/q
    (the method of Andrew et al.'s estimate)."""
    return max(_hockey_stick(mu1, s1, mu0, s0, eps), _hockey_stick(mu0, s0, mu1, s1, eps))


def _hockey_stick(mp: float, sp: float, mq: float, sq: float, eps: float) -> float:
    """H_eps(P || Q) for eps >= 0. The divergence does not change under x -> (x - mq) / sq,
    which makes Q = N(0, 1) and P = N(m, s^2); there log p/q - eps, times s^2, is
    A x^2 + B x + C with A = (s^2 - 1) / 2, B = m, C = -m^2 / 2 - s^2 (log s + eps), whose
    discriminant s^2 (m^2 + 2 (s^2 - 1)(log s + eps)) is computed without cancellation
    (a fitted spread far below the null's would otherwise lose it). Where the set A is
    empty or everything, P(A) - e^eps Q(A) <= 0."""
    m, s = (mp - mq) / sq, sp / sq
    p, q = stats.norm(m, s), stats.norm(0.0, 1.0)
    if s == 1:  # equal variances: A is the half-line m x - m^2 / 2 > eps (empty for equal means)
        if m == 0:
            return 0.0
        x = m / 2 + eps / m
        mass = (lambda d: d.sf(x)) if m > 0 else (lambda d: d.cdf(x))
        return max(0.0, float(mass(p) - math.exp(eps) * mass(q)))
    reduced = m * m + 2 * (s * s - 1) * (math.log(s) + eps)  # the discriminant over s^2
    if reduced <= 0:  # the quadratic keeps one sign
        return 0.0
    lo, hi = sorted(((-m - s * math.sqrt(reduced)) / (s * s - 1), (-m + s * math.sqrt(reduced)) / (s * s - 1)))
    if s < 1:  # A < 0: inside the roots
        value = (p.cdf(hi) - p.cdf(lo)) - math.exp(eps) * (q.cdf(hi) - q.cdf(lo))
    else:  # outside
        value = (p.cdf(lo) + p.sf(hi)) - math.exp(eps) * (q.cdf(lo) + q.sf(hi))
    return max(0.0, float(value))


def gaussian_pair_epsilon(mu0: float, s0: float, mu1: float, s1: float, delta: float) -> float:
    """The smallest epsilon at which N(mu0, s0^2) and N(mu1, s1^2) are (eps, delta)-close."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta}")
    def margin(eps: float) -> float:
        return gaussian_pair_delta(mu0, s0, mu1, s1, eps) - delta
    if margin(0.0) <= 0:
        return 0.0
    if margin(EPSILON_CAP) > 0:
        return EPSILON_CAP
    return float(optimize.brentq(margin, 0.0, EPSILON_CAP, xtol=1e-8))


def one_shot_epsilon(cosines: np.ndarray, *, dim: int, delta: float) -> dict:
    """Andrew et al.'s estimate from the cosines of the inserted canaries with the final
    model change, in a model of `dim` parameters: the fitted N(mean, std^2) against the
    null N(0, 1/dim), the cosine of a direction the model never saw."""
    cosines = np.asarray(cosines, dtype=float)
    if cosines.size < 2:
        raise ValueError(f"the one-shot estimate needs at least 2 inserted canaries, not {cosines.size}")
    mean, std = float(cosines.mean()), float(cosines.std(ddof=1))
    null_std = 1.0 / math.sqrt(dim)
    eps = gaussian_pair_epsilon(0.0, null_std, mean, max(std, 1e-9 * null_std), delta)  # equal cosines: a spike
    return {"epsilon": eps, "mean": mean, "std": std, "null_std": null_std, "inserted": int(cosines.size),
            "delta": delta}
