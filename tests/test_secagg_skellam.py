"""Distributed Skellam noise: its variance on the sum, and its RDP bound against the exact
Renyi divergence computed independently."""
import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats
from scipy.special import logsumexp

from privacy.secagg.skellam import l1_bound, skellam_rdp, skellam_share, zcdp_event


def test_shares_of_k_sub_clients_sum_to_the_planned_variance():
    k, mu, n = 8, 40.0, 200_000
    gen = torch.Generator().manual_seed(0)
    total = sum(skellam_share(n, mu / k, gen) for _ in range(k)).double()
    assert total.dtype == torch.float64
    # the sample variance of 200k draws: relative standard error ~ sqrt(2 / n) = 0.3%
    assert float(total.var()) == pytest.approx(mu, rel=0.015)
    assert abs(float(total.mean())) < 5 * math.sqrt(mu / n)
    # and it is Skellam(mu): the pmf of the sum of shares (a KS-like check on the counts)
    values, counts = np.unique(total.numpy().astype(int), return_counts=True)
    expected = stats.skellam.pmf(values, mu / 2, mu / 2) * n
    common = expected > 50
    assert stats.chisquare(counts[common], expected[common] * counts[common].sum() / expected[common].sum()).pvalue > 1e-3


def _exact_rdp(alpha: int, mu: float, shift: int) -> float:
    """D_alpha(Sk(mu) + shift || Sk(mu)) on the integers, by summing the pmfs (1-D)."""
    support = np.arange(-int(60 * math.sqrt(mu)) - 4 * shift, int(60 * math.sqrt(mu)) + 4 * shift + 1)
    log_p = stats.skellam.logpmf(support - shift, mu / 2, mu / 2)
    log_q = stats.skellam.logpmf(support, mu / 2, mu / 2)
    kept = np.isfinite(log_p) & np.isfinite(log_q)  # the tails beyond decay faster than any power of the ratio
    return float(logsumexp(alpha * log_p[kept] + (1 - alpha) * log_q[kept]) / (alpha - 1))


@pytest.mark.parametrize("mu, shift", [(4.0, 1), (50.0, 3), (400.0, 10)])
def test_the_rdp_bound_holds_the_exact_divergence_and_is_close_to_it(mu, shift):
    for alpha in (2, 4, 8, 16, 32):
        exact = _exact_rdp(alpha, mu, shift)
        bound = float(skellam_rdp(np.array([alpha]), mu=mu, l1=shift, l2=shift)[0])
        zcdp = zcdp_event(mu=mu, l1=shift, l2=shift)
        assert exact <= bound * (1 + 1e-9), (alpha, exact, bound)
        assert bound <= zcdp.xi + zcdp.rho * alpha * (1 + 1e-12)  # the declared event bounds the min
    if mu >= 50:  # tight where the Skellam is near a Gaussian (small orders, large variance)
        assert float(skellam_rdp(np.array([2]), mu=mu, l1=shift, l2=shift)[0]) <= 1.05 * _exact_rdp(2, mu, shift)


def test_the_declared_event_is_read_by_dp_accounting_itself():
    event = zcdp_event(mu=2500.0, l1=l1_bound(50.0, 10_000), l2=50.0)
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, 30))
    orders = np.asarray(accountant.orders, dtype=float)
    ours = rdp_privacy_accountant.compute_epsilon(orders, 30 * (event.xi + event.rho * orders), 1e-5)[0]
    assert accountant.get_epsilon(1e-5) == pytest.approx(ours, rel=1e-12)
    # with mu = (z D2)^2 the Skellam release costs about what a Gaussian of multiplier z does
    gaussian = rdp_privacy_accountant.RdpAccountant()
    gaussian.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), 30))
    assert accountant.get_epsilon(1e-5) == pytest.approx(gaussian.get_epsilon(1e-5), rel=0.02)


def test_the_l1_bound_of_an_integer_vector():
    assert l1_bound(3.0, 4) == 6.0   # sqrt(d) D2: spread over every coordinate
    assert l1_bound(3.0, 100) == 9.0  # D2^2: each non-zero integer coordinate is at least 1


def _ledger(sampling=None):
    from privacy.accountants import EVERY_ROUND
    from privacy.ledger import PrivacyLedger
    ledger = PrivacyLedger()
    ledger.open("u", level="client", unit="subclient", adjacency="x", relation="add_remove",
                sampling=sampling or EVERY_ROUND, delta=1e-5)
    return ledger


def test_the_ledger_charges_skellam_releases_as_dp_accounting_composes_them():
    ledger = _ledger()
    skellam = zcdp_event(mu=900.0, l1=l1_bound(30.0, 4096), l2=30.0)
    for _ in range(20):
        ledger.declare("u", skellam)
    ledger.charge("u", 1.3)  # a Gaussian release beside them (a central-noise round)
    independent = rdp_privacy_accountant.RdpAccountant()
    independent.compose(dp_accounting.ComposedDpEvent(ledger.accounts["u"].events))
    assert ledger.epsilon("u", "rdp") == pytest.approx(independent.get_epsilon(1e-5), rel=1e-9)
    assert ledger.releases("u") == 21


def test_pld_and_prv_say_they_have_no_analysis_of_a_skellam_release():
    ledger = _ledger()
    ledger.declare("u", zcdp_event(mu=900.0, l1=60.0, l2=30.0))
    assert math.isinf(ledger.epsilon("u", "pld")) and math.isinf(ledger.epsilon("u", "prv"))
    report = ledger.report()["u"]
    assert report["events"] == ["ZCDp(rho=0.500556, xi=0)"]  # 30^2 / (2 900) (1 + 1 / 900); xi clamped at 0
    assert "pld: no analysis of a zCDP (Skellam) release; its epsilon is RDP's (reported as inf here)" in report["notes"]
    assert math.isfinite(report["epsilon"]["rdp"])


def test_a_sampled_skellam_release_is_charged_without_amplification():
    from privacy.accountants import Sampling
    ledger = _ledger(Sampling("poisson", 0.2, 10, 2))
    ledger.declare("u", zcdp_event(mu=900.0, l1=60.0, l2=30.0))
    plain = _ledger()
    plain.declare("u", zcdp_event(mu=900.0, l1=60.0, l2=30.0))
    assert ledger.epsilon("u", "rdp") == plain.epsilon("u", "rdp")


def test_a_share_is_integer_and_reproducible_from_its_generator():
    a = skellam_share(1000, 8.0, torch.Generator().manual_seed(4))
    b = skellam_share(1000, 8.0, torch.Generator().manual_seed(4))
    c = skellam_share(1000, 8.0, torch.Generator().manual_seed(5))
    assert a.dtype == torch.int64 and torch.equal(a, b) and not torch.equal(a, c)
    both = torch.Generator().manual_seed(6)  # the two Poisson draws are not the same draw
    assert skellam_share(1000, 8.0, both).abs().sum() > 0


def test_the_rdp_bound_is_the_paper_s_formula_in_both_branches():
    # large mu: the linear branch is the smaller; mu = 900, D1 = 60, D2 = 30, alpha = 4
    linear = 4 * 900 / 1800 + (7 * 900 + 360) / (4 * 900 ** 2)
    assert skellam_rdp(np.array([4]), mu=900.0, l1=60.0, l2=30.0)[0] == pytest.approx(linear, rel=1e-12)
    # small mu and a large order: the constant branch 3 D1 / (2 mu); mu = 2, D1 = D2 = 1, alpha = 64
    constant = 64 / 4 + 3 / 4
    assert skellam_rdp(np.array([64]), mu=2.0, l1=1.0, l2=1.0)[0] == pytest.approx(constant, rel=1e-12)
    event = zcdp_event(mu=100.0, l1=50.0, l2=2.0)  # 6 D1 > D2^2: xi is positive
    assert (event.rho, event.xi) == (pytest.approx(4 / 200 + 4 / 20_000), pytest.approx((300 - 4) / 40_000))


def test_a_gaussian_beside_a_skellam_release_composes_as_dp_accounting_composes_it():
    from privacy.accountants import Sampling
    ledger = _ledger(Sampling("poisson", 0.2, 10, 2))
    ledger.charge("u", 0.5)  # Poisson-sampled at 0.2, multiplier 0.5 (< 1)
    ledger.declare("u", zcdp_event(mu=900.0, l1=60.0, l2=30.0))
    independent = rdp_privacy_accountant.RdpAccountant()
    independent.compose(dp_accounting.ComposedDpEvent(ledger.accounts["u"].events))
    assert ledger.epsilon("u", "rdp") == pytest.approx(independent.get_epsilon(1e-5), rel=1e-9)
    ledger.charge("u", 0.0)  # a release without noise: no finite epsilon, whatever else was charged
    assert math.isinf(ledger.epsilon("u", "rdp"))


def test_a_fixed_size_sampled_gaussian_beside_a_skellam_release_keeps_its_amplification():
    from privacy.accountants import Sampling
    ledger = _ledger(Sampling("fixed", 0.5, 4, 2))
    ledger.accounts["u"].relation = "replace"  # fixed-size sampling is accounted under replace-one
    ledger.charge("u", 2.0)
    ledger.declare("u", zcdp_event(mu=900.0, l1=60.0, l2=30.0))
    independent = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    independent.compose(dp_accounting.ComposedDpEvent(ledger.accounts["u"].events))
    assert ledger.epsilon("u", "rdp") == pytest.approx(independent.get_epsilon(1e-5), rel=1e-9)
