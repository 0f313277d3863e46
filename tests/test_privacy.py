"""The client-level mechanism, the accountants, the ledger and the release steps."""
import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy.accountants import PLD_DISCRETIZATION, Sampling, calibrate, epsilon
from privacy.client_dp import ClientLevelDP, RoundPlan
from privacy.clipping import FixedClip, MedianClip, QuantileClip
from privacy.intermediary import max_subclients, next_subclients, split_factor
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, update_norms

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
    p, z, c = 200_000, 1.3, 2.5
    dp = _dp(FixedClip(c), z=z, secure=secure)
    agg = dp.finalize(torch.zeros(p), c, RoundPlan(0, 1, 1.0, torch.Generator().manual_seed(1)))
    assert dp.noise_std(c, 1.0) == pytest.approx(z * c)
    # sample std of 200k draws: relative standard error ~ 1/sqrt(2 * 200k) = 0.16%
    assert float(agg.std()) == pytest.approx(z * c, rel=0.01)
    assert abs(float(agg.mean())) < 5 * z * c / math.sqrt(p)


def test_noise_on_the_plain_mean_is_z_c_over_k():
    k, p = 10, 100_000
    dp = _dp(FixedClip(2.0), z=1.0)
    agg = dp.finalize(torch.zeros(p), 2.0, RoundPlan(0, 1, 1 / k, torch.Generator().manual_seed(2)))
    assert float(agg.std()) == pytest.approx(2.0 / k, rel=0.02)


def test_secure_noise_is_not_seeded():
    a = gaussian_noise(10, 1.0, torch.Generator().manual_seed(0), secure=True)
    b = gaussian_noise(10, 1.0, torch.Generator().manual_seed(0), secure=True)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("z, q, steps", [(1.0, 1.0, 50), (0.8, 0.25, 100), (1.5, 0.1, 30)])
def test_accountants_equal_the_libraries_own(z, q, steps):
    sampling = Sampling("poisson" if q < 1 else "all", q, 20, max(1, int(20 * q)))
    history = [(z, q)] * steps
    prv = PRVAccountant()
    prv.history = [(z, q, steps)]
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    event = dp_accounting.SelfComposedDpEvent(event, steps)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    pld.compose(event)
    with np.errstate(divide="ignore"):
        expected = {"rdp": rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(1e-3),
                    "prv": prv.get_epsilon(1e-3), "pld": pld.get_epsilon(1e-3)}
    ours = {a: epsilon(history, delta=1e-3, accountant=a, sampling=sampling) for a in expected}
    assert ours == pytest.approx(expected, rel=1e-9)
    assert ours["pld"] <= ours["prv"] * 1.001 and ours["pld"] <= ours["rdp"]
    # Opacus's own RDP accountant (other orders) agrees within 10%
    opacus = RDPAccountant()
    opacus.history = [(z, q, steps)]
    assert ours["rdp"] == pytest.approx(opacus.get_epsilon(1e-3), rel=0.1)


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    e = lambda z, t: epsilon([(z, 0.5)] * t, delta=1e-3, accountant="rdp", sampling=POISSON)  # noqa: E731
    assert e(1.0, 10) < e(1.0, 20) < e(1.0, 40)
    assert e(0.7, 20) > e(1.0, 20) > e(2.0, 20)
    assert math.isinf(epsilon([(0.0, 1.0)], delta=1e-3, accountant="rdp", sampling=ALL))


def test_fixed_size_sampling_uses_the_without_replacement_analysis():
    fixed = Sampling("fixed", 0.5, 20, 10)
    run = lambda acc, s, q: epsilon([(1.0, q)] * 20, delta=1e-3, accountant=acc, sampling=s,  # noqa: E731
                                    relation="replace")
    assert run("rdp", fixed, 0.5) < run("rdp", ALL, 1.0)  # amplified
    # PRV/PLD have no such analysis: no amplification claimed
    assert run("pld", fixed, 0.5) == pytest.approx(run("pld", ALL, 1.0))


def test_ledger_state_round_trips():
    ledger = PrivacyLedger()
    ledger.open("a", level="client", unit="subclient", adjacency="x", relation="add_remove", sampling=POISSON,
                delta=1e-2)
    for m in (1.1, 2.0, 2.0):
        ledger.charge("a", m)
    copy = PrivacyLedger()
    copy.open("a", level="client", unit="subclient", adjacency="x", relation="add_remove", sampling=ALL, delta=0.5)
    copy.load_state_dict(ledger.state_dict())
    assert copy.accounts["a"].history == ledger.accounts["a"].history and copy.releases("a") == 3
    assert copy.epsilon("a") == ledger.epsilon("a")
    with pytest.raises(ValueError, match="accounts"):
        PrivacyLedger().load_state_dict(ledger.state_dict())


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibration_never_overshoots(accountant):
    for target in (2.0, 8.0):
        spent = lambda z: epsilon([(z, POISSON.rate)] * 30, delta=1e-3, accountant=accountant,  # noqa: E731
                                  sampling=POISSON)
        z = calibrate(target, spent, what="--epsilon")
        assert spent(z) <= target and spent(z) > 0.97 * target


def _dp(clip_policy, **kw):
    return ClientLevelDP(noise_multiplier=kw.pop("z", 1.0), clip_policy=clip_policy, noise_scale_when_unclipped=10.0,
                         ledger=PrivacyLedger(), sampling=ALL, delta=1e-3, secure=kw.pop("secure", False),
                         strict=kw.pop("strict", False), norm_sum_noise=5.0, **kw)


def test_median_clip_follows_the_paper_code():
    policy = MedianClip()
    assert policy.bound_for(torch.tensor([1.0, 2.0, 3.0, 100.0, 200.0])) == 3.0
    assert policy.bound_for(torch.tensor([30.0, 40.0, 50.0])) == 25.0  # capped


def test_strict_mode_charges_its_extra_releases():
    gen = torch.Generator().manual_seed(0)
    dp = _dp(QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=5.0), strict=True)
    deltas = torch.randn(6, 50, generator=gen)
    out = dp.release(deltas, torch.full((6,), 1 / 6), RoundPlan(0, 2, 1 / 6, gen))
    dp.charge_round(2)
    z_eff = (1 + 1 / 25 + 1 / 25) ** -0.5  # update, norm sum and clip count compose
    assert dp.ledger.accounts["client/subclient"].history == [(pytest.approx(z_eff), 1.0)]
    assert dp.ledger.accounts["client/hospital"].history == [(pytest.approx(z_eff / 2), 1.0)]
    assert out.stats["norm_sum"] != pytest.approx(float(update_norms(deltas).clamp(max=1.0).sum()), abs=1e-6)
    faithful = _dp(FixedClip(1.0))
    faithful.charge_round(2)
    assert faithful.ledger.accounts["client/subclient"].history == [(1.0, 1.0)]
    assert faithful.ledger.accounts["client/patient"].history == [(0.5, 1.0)]


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
        dp.release(torch.zeros(4, 10), torch.full((4,), 0.25), RoundPlan(rounds, 1, 0.25, gen))
        dp.charge_round(1)
        rounds += 1
        assert dp.ledger.epsilon("client/subclient") <= 10.0
    assert rounds > 1
    assert dp.ledger.epsilon("client/subclient", extra=[1.0]) > 10.0


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
