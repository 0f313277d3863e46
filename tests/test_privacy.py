"""The client-level mechanism, the accountants and the two-unit ledger."""
import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant
from opacus.accountants import PRVAccountant, RDPAccountant
from scipy.optimize import brentq
from scipy.stats import norm

from federated.aggregate import RoundContext
from privacy.accountants import PLD_DISCRETIZATION, Sampling, calibrate_noise, epsilon
from privacy.client_dp import ClientLevelDP
from privacy.clipping import FixedClip, MedianClip, QuantileClip
from privacy.intermediary import max_subclients, next_subclients, split_factor
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, noisy_weighted_sum, update_norms

ALL = Sampling("all", 1.0, 20, 20)
POISSON = Sampling("poisson", 0.25, 20, 5)


def test_every_clipped_norm_is_at_most_the_bound():
    gen = torch.Generator().manual_seed(0)
    deltas = torch.randn(50, 300, generator=gen) * torch.logspace(-2, 2, 50)[:, None]
    norms = update_norms(deltas)
    clipped = clip(deltas, norms, 3.0)
    after = update_norms(clipped)
    assert (after <= 3.0 + 1e-5).all()
    small = norms <= 3.0
    assert torch.allclose(clipped[small], deltas[small])  # updates under the bound pass unchanged
    assert torch.allclose(after[~small], torch.full_like(after[~small], 3.0))


@pytest.mark.parametrize("secure", [False, True])
def test_noise_on_the_sum_has_std_z_times_c(secure):
    k, p, z, c = 8, 200_000, 1.3, 2.5
    zeros = torch.zeros(k, p)
    ones = torch.ones(k)  # weights 1: the sum of the updates
    agg, _, std = noisy_weighted_sum(zeros, ones, bound=c, noise_multiplier=z,
                                     gen=torch.Generator().manual_seed(1), secure=secure)
    assert std == pytest.approx(z * c)
    # sample std of 200k draws: relative standard error ~ 1/sqrt(2 * 200k) = 0.16%
    assert float(agg.std()) == pytest.approx(z * c, rel=0.01)
    assert abs(float(agg.mean())) < 5 * z * c / math.sqrt(p)


def test_noise_on_the_plain_mean_is_z_c_over_k():
    k, p = 10, 100_000
    agg, _, std = noisy_weighted_sum(torch.zeros(k, p), torch.full((k,), 1 / k), bound=2.0,
                                     noise_multiplier=1.0, gen=torch.Generator().manual_seed(2), secure=False)
    assert std == pytest.approx(2.0 / k)
    assert float(agg.std()) == pytest.approx(2.0 / k, rel=0.02)


def test_secure_noise_is_not_seeded():
    a = gaussian_noise(10, 1.0, torch.Generator().manual_seed(0), secure=True)
    b = gaussian_noise(10, 1.0, torch.Generator().manual_seed(0), secure=True)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("z, q, steps", [(1.0, 1.0, 50), (0.8, 0.25, 100), (1.5, 0.1, 30)])
def test_accountants_equal_the_libraries_own(z, q, steps):
    sampling = Sampling("poisson" if q < 1 else "all", q, 20, max(1, int(20 * q)))
    history = [(z, q)] * steps
    rdp = RDPAccountant()
    rdp.history = [(z, q, steps)]
    prv = PRVAccountant()
    prv.history = [(z, q, steps)]
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    pld.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    with np.errstate(divide="ignore"):
        expected = {"rdp": rdp.get_epsilon(1e-3), "prv": prv.get_epsilon(1e-3), "pld": pld.get_epsilon(1e-3)}
    ours = {a: epsilon(history, delta=1e-3, accountant=a, sampling=sampling) for a in expected}
    assert ours == pytest.approx(expected, rel=1e-9)
    assert ours["pld"] <= ours["prv"] * 1.001 and ours["pld"] <= ours["rdp"]


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    e = lambda z, t: epsilon([(z, 0.5)] * t, delta=1e-3, accountant="rdp", sampling=POISSON)  # noqa: E731
    assert e(1.0, 10) < e(1.0, 20) < e(1.0, 40)
    assert e(0.7, 20) > e(1.0, 20) > e(2.0, 20)
    assert math.isinf(epsilon([(0.0, 1.0)], delta=1e-3, accountant="rdp", sampling=ALL))


def test_fixed_size_sampling_uses_the_without_replacement_analysis():
    fixed = Sampling("fixed", 0.5, 20, 10)
    eps_fixed = epsilon([(1.0, 0.5)] * 20, delta=1e-3, accountant="rdp", sampling=fixed)
    eps_all = epsilon([(1.0, 1.0)] * 20, delta=1e-3, accountant="rdp", sampling=ALL)
    assert eps_fixed < eps_all  # amplified
    # PRV/PLD have no such analysis: no amplification claimed
    assert epsilon([(1.0, 0.5)] * 20, delta=1e-3, accountant="pld", sampling=fixed) == pytest.approx(
        epsilon([(1.0, 1.0)] * 20, delta=1e-3, accountant="pld", sampling=ALL))


def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Dong, Roth & Su (2022), Cor. 2.13: mu-GDP gives (eps, delta(eps))-DP."""
    f = lambda eps: norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta  # noqa: E731
    return brentq(f, 0, 500)


def test_hospital_unit_with_q1_equals_exact_gaussian_composition():
    z, delta = 2.0, 1e-3
    v_history = [1, 1, 3, 3, 3, 4, 2, 2, 5, 5]
    ledger = PrivacyLedger(delta=delta, sampling=ALL)
    for v in v_history:
        ledger.charge([ledger.releases_for(z, v)])
    mu = math.sqrt(sum(v * v for v in v_history)) / z
    exact = _exact_gaussian_epsilon(mu, delta)
    assert ledger.epsilon("hospital", "pld") == pytest.approx(exact, rel=0.01)
    assert ledger.epsilon("hospital", "prv") == pytest.approx(exact, rel=0.01)
    assert ledger.epsilon("hospital", "rdp") >= exact  # RDP is an upper bound
    sub_exact = _exact_gaussian_epsilon(math.sqrt(len(v_history)) / z, delta)
    assert ledger.epsilon("subclient", "pld") == pytest.approx(sub_exact, rel=0.01)


def test_ledger_state_round_trips():
    ledger = PrivacyLedger(delta=1e-2, sampling=POISSON)
    for v in (1, 2, 2):
        ledger.charge([ledger.releases_for(1.1, v), ledger.releases_for(5.0, v)])
    copy = PrivacyLedger(delta=0.5, sampling=ALL)
    copy.load_state_dict(ledger.state_dict())
    assert copy.history == ledger.history and copy.rounds_charged == 3
    assert copy.epsilon("hospital") == ledger.epsilon("hospital")


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibration_never_overshoots(accountant):
    for target in (2.0, 8.0):
        z = calibrate_noise(target, rounds=30, delta=1e-3, accountant=accountant, sampling=POISSON)
        eps = epsilon([(z, POISSON.rate)] * 30, delta=1e-3, accountant=accountant, sampling=POISSON)
        assert eps <= target and eps > 0.97 * target


def test_calibration_for_the_hospital_unit_scales_by_v():
    z1 = calibrate_noise(4.0, rounds=20, delta=1e-3, accountant="rdp", sampling=ALL)
    z3 = calibrate_noise(4.0, rounds=20, delta=1e-3, accountant="rdp", sampling=ALL, scale=3)
    assert z3 == pytest.approx(3 * z1, rel=2e-3)


def _dp(clip_policy, **kw):
    return ClientLevelDP(noise_multiplier=kw.pop("z", 1.0), clip_policy=clip_policy, noise_scale_when_unclipped=10.0,
                         ledger=PrivacyLedger(delta=1e-3, sampling=ALL), secure=False,
                         strict=kw.pop("strict", False), norm_sum_noise=5.0, **kw)


def test_median_clip_follows_the_paper_code():
    policy = MedianClip()
    assert policy.bound_for(torch.tensor([1.0, 2.0, 3.0, 100.0, 200.0])) == 3.0
    assert policy.bound_for(torch.tensor([30.0, 40.0, 50.0])) == 25.0  # capped


def test_strict_mode_charges_its_extra_releases():
    gen = torch.Generator().manual_seed(0)
    dp = _dp(QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=5.0), strict=True)
    deltas = torch.randn(6, 50, generator=gen)
    out = dp(deltas, torch.full((6,), 1 / 6), RoundContext(0, 2, gen))
    assert len(dp.ledger.history["subclient"]) == 3  # update + norm sum + clip count
    assert dp.ledger.history["hospital"][0] == (0.5, 1.0)  # z / v
    assert out.stats["norm_sum"] != pytest.approx(float(update_norms(deltas).clamp(max=1.0).sum()), abs=1e-6)
    faithful = _dp(FixedClip(1.0))
    faithful(deltas, torch.full((6,), 1 / 6), RoundContext(0, 2, gen))
    assert len(faithful.ledger.history["subclient"]) == 1


def test_quantile_clip_moves_toward_the_target_quantile():
    policy = QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=1e-6)
    norms = torch.full((100,), 10.0)  # all clipped: fraction under C is 0 -> C grows
    before = policy.bound
    policy.after_round(norms, torch.Generator().manual_seed(0), secure=False)
    assert policy.bound == pytest.approx(before * math.exp(0.2 * 0.5))


def test_bounded_mode_refuses_a_round_that_would_exceed_the_budget():
    dp = _dp(FixedClip(1.0), z=1.0, budget=10.0)
    gen = torch.Generator().manual_seed(0)
    rounds = 0
    while dp.within_budget(1):
        dp(torch.zeros(4, 10), torch.full((4,), 0.25), RoundContext(rounds, 1, gen))
        rounds += 1
        assert dp.ledger.epsilon("subclient") <= 10.0
    assert rounds > 1
    assert dp.ledger.epsilon("subclient", extra=dp.planned_releases(1)) > 10.0


def test_intermediary_rule_matches_the_paper_formula_and_guards():
    f = split_factor(noise_norm=8.0, aggregate_norm=2.0, norm_sum=10.0, num_hospitals=5)
    assert f == pytest.approx(math.sqrt(5 * (8.0 / 2.0) / (10.0 / 2.0)))
    assert next_subclients(1, 2.7, variant="default", v_max=100) == 2
    assert next_subclients(2, 2.7, variant="default", v_max=100) == 5
    assert next_subclients(2, 2.7, variant="stable", v_max=100) == 4
    assert next_subclients(2, 2.7, variant="prog", v_max=100) == 3
    assert next_subclients(4, 0.3, variant="default", v_max=100) == 1
    assert next_subclients(9, 5.0, variant="default", v_max=6) == 6
    for v in range(1, 6):  # v never drops below 1
        for factor in (0.0, 1e-9, 0.2, 0.99, float("nan")):
            assert next_subclients(v, factor, variant="default", v_max=10) >= 1
    assert max_subclients([64, 40, 90], 16) == 2 and max_subclients([5], 16) == 1
