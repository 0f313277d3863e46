"""The ledger's epsilon for every unit against independent computations: the mu-GDP closed
form at q = 1, dp-accounting called directly otherwise (property tests over random
settings), and the noise on the released aggregate by Monte Carlo."""
import math

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from federated import loop
from federated.config import parse_config
from federated.pipeline import Participants
from federated.setup import build_federation
from privacy.accountants import EVERY_ROUND, NUMERIC_LIMIT, PRV_EPS_ERROR, History, Sampling, epsilon
from privacy.client_dp import ClientLevelDP
from privacy.clipping import FixedClip, QuantileClip
from privacy.ledger import PrivacyLedger
from tests.conftest import TINY

REPLACE = dp_accounting.NeighboringRelation.REPLACE_ONE


def gdp_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of mu-GDP (Dong, Roth, Su 2022, Cor. 2.13)."""
    def gap(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps + norm.logcdf(-eps / mu - mu / 2)) - delta
    return 0.0 if gap(0.0) <= 0 else brentq(gap, 0.0, max(1000.0, mu * mu / 2 + 20 * mu))


def numerical_epsilon(ledger, name: str, accountant: str, plain: History) -> float | None:
    """The account's PLD/PRV epsilon, or None where it is rightly not computed: when RDP's
    bound on the plain (unamplified) releases exceeds NUMERIC_LIMIT (then it must be inf)."""
    eps = ledger.epsilon(name, accountant)
    if epsilon(plain, delta=1e-3, accountant="rdp", sampling=EVERY_ROUND) > NUMERIC_LIMIT:
        assert math.isinf(eps)
        return None
    return eps


def ledger_after(*, z, schedule, sampling, norm_sum_noise=None, count_noise=None, delta=1e-3):
    ledger = PrivacyLedger()
    clip = QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=count_noise) if count_noise else FixedClip(1.0)
    dp = ClientLevelDP(noise_multiplier=z, clip_policy=clip, noise_scale_when_unclipped=1.0, ledger=ledger,
                       sampling=sampling, delta=delta, secure=False, strict=norm_sum_noise is not None,
                       norm_sum_noise=norm_sum_noise or 1.0)
    for v in schedule:
        dp.charge_round(v)
    return ledger


def inverse_square_sum(*multipliers):
    return sum(m ** -2 for m in multipliers if m is not None)


extras = st.one_of(st.none(), st.floats(0.5, 5.0))


@settings(max_examples=10, deadline=None)
@given(z=st.floats(0.5, 4.0), schedule=st.lists(st.integers(1, 4), min_size=1, max_size=12),
       s_norm=extras, s_count=extras)
@example(z=0.5, schedule=[4] * 12, s_norm=0.5, s_count=None)  # the hospital past NUMERIC_LIMIT
def test_every_unit_matches_the_gaussian_closed_form_at_q1(z, schedule, s_norm, s_count):
    if s_norm is None:
        s_count = None  # the clip count is only released in strict mode
    ledger = ledger_after(z=z, schedule=schedule, sampling=Sampling("all", 1.0, 5, 5), norm_sum_noise=s_norm,
                          count_noise=s_count)
    extra = inverse_square_sum(s_norm, s_count)
    mu_sq = {"subclient": len(schedule) * (z ** -2 + extra),
             "patient": len(schedule) * (4 * z ** -2 + extra),
             "hospital": sum(v * v * (z ** -2 + extra) for v in schedule)}
    for unit, m in mu_sq.items():
        exact = gdp_epsilon(math.sqrt(m), 1e-3)
        pld = numerical_epsilon(ledger, f"client/{unit}", "pld", [(m ** -0.5, 1.0)])  # all rounds as one Gaussian
        assert pld is None or pld == pytest.approx(exact, rel=2e-2, abs=2e-2)
        assert ledger.epsilon(f"client/{unit}", "rdp") >= exact * (1 - 1e-6)  # RDP is an upper bound


@settings(max_examples=8, deadline=None)
@given(z=st.floats(0.7, 3.0), q=st.floats(0.05, 0.9), rounds=st.integers(1, 40), v=st.integers(1, 5),
       s_norm=extras)
def test_poisson_sampling_matches_dp_accounting(z, q, rounds, v, s_norm):
    ledger = ledger_after(z=z, schedule=[v] * rounds, sampling=Sampling("poisson", q, 10, 5), norm_sum_noise=s_norm)
    extra = inverse_square_sum(s_norm)
    for unit, inv_sq in {"subclient": z ** -2 + extra, "hospital": v * v * (z ** -2 + extra)}.items():
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(inv_sq ** -0.5)), rounds)
        rdp = rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(1e-3)
        assert ledger.epsilon(f"client/{unit}", "rdp") == pytest.approx(rdp, rel=1e-9)
    # the patient (replace-one): RDP has no amplified analysis, so the unamplified closed form bounds it
    exact = gdp_epsilon(math.sqrt(rounds * (4 * z ** -2 + extra)), 1e-3)
    assert ledger.epsilon("client/patient", "rdp") >= exact * (1 - 1e-6)
    pld = numerical_epsilon(ledger, "client/patient", "pld", [((4 * z ** -2 + extra) ** -0.5, 1.0)] * rounds)
    assert pld is None or pld <= exact * 1.02 + 0.02


@settings(max_examples=5, deadline=None)  # dp-accounting's without-replacement RDP is slow
@given(z=st.floats(0.7, 3.0), n=st.integers(4, 30), rounds=st.integers(1, 30), v=st.integers(1, 4))
@example(z=0.7, n=4, rounds=28, v=4)  # the hospital's PLD is past NUMERIC_LIMIT: not computed
def test_fixed_size_sampling_matches_dp_accounting(z, n, rounds, v):
    m = max(1, n // 3)
    ledger = ledger_after(z=z, schedule=[v] * rounds, sampling=Sampling("fixed", m / n, n, m))
    for unit, multiplier in {"subclient": z / 2, "patient": z / 2, "hospital": z / (2 * v)}.items():
        event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
            n, m, dp_accounting.GaussianDpEvent(multiplier)), rounds)
        expected = rdp_privacy_accountant.RdpAccountant(neighboring_relation=REPLACE).compose(event).get_epsilon(1e-3)
        assert ledger.epsilon(f"client/{unit}", "rdp") == pytest.approx(expected, rel=1e-9)
        unamplified = gdp_epsilon(math.sqrt(rounds) / multiplier, 1e-3)
        pld = numerical_epsilon(ledger, f"client/{unit}", "pld", [(multiplier, 1.0)] * rounds)
        assert pld is None or pld == pytest.approx(unamplified, rel=2e-2, abs=2e-2)


def test_pld_replace_reading_at_q1_is_the_distance_reading():
    """dp-accounting's PLD reads a REPLACE_ONE multiplier per element (half the distance):
    at q = 1 our conversion must give the Gaussian of std / distance."""
    ledger = ledger_after(z=1.5, schedule=[1] * 10, sampling=Sampling("poisson", 1.0, 4, 4))
    exact = gdp_epsilon(math.sqrt(10 * 4 / 1.5 ** 2), 1e-3)
    assert ledger.epsilon("client/patient", "pld") == pytest.approx(exact, rel=2e-2)


def test_halving_the_sampling_rate_changes_epsilon():
    full = ledger_after(z=1.0, schedule=[1] * 20, sampling=Sampling("poisson", 0.4, 10, 4))
    half = ledger_after(z=1.0, schedule=[1] * 20, sampling=Sampling("poisson", 0.2, 10, 2))
    assert half.epsilon("client/subclient") < 0.8 * full.epsilon("client/subclient")


# --- the noise on the released aggregate, by Monte Carlo --------------------------------
SAMPLING_PATHS = {
    "all": ["-N", "4"],
    "all, weighted": ["-N", "4", "--weighted_avg", "--size_skew", "1.0", "--train_size", "24"],
    "poisson": ["-N", "4", "-sr", "0.5", "--client_sampling", "poisson"],
    "fixed, unequal counts": ["-N", "6", "-sr", "0.5", "--balance_split", "--size_skew", "1.0", "-VN", "2",
                              "--train_size", "24"],
}


@pytest.mark.parametrize("path", list(SAMPLING_PATHS))
def test_noise_std_does_not_depend_on_who_was_sampled(path):
    cfg = parse_config(TINY + ["--mode", "dpsgd", "--S", "1.0", "--noise_multiplier", "2.0"] + SAMPLING_PATHS[path])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    sizes = [[len(i) for i in per_h] for per_h in state.subclient_indices]
    n = len(sizes)
    sampled_sets = [list(range(n)), [0], [n - 1], list(range(0, n, 2))]
    stds = []
    for hospitals in sampled_sets:
        members = [(h, k) for h in hospitals for k in range(len(sizes[h]))]
        part = Participants(members, [sizes[h][k] for h, k in members], [1] * len(members), sizes,
                            [torch.Generator().manual_seed(i) for i in range(len(members))])
        deltas = torch.zeros(len(members), state.params.numel())
        update, stats = fed.pipeline.round(torch.zeros(state.params.numel()), deltas, part, 0,
                                           torch.Generator().manual_seed(len(members)))
        stds.append(float(update.std()))
        assert stats["noise_std"] == pytest.approx(stds[0], rel=0.05)
    numel = state.params.numel()
    tolerance = 5 / math.sqrt(2 * numel)  # five standard errors of a sample std
    assert max(stds) / min(stds) - 1 < 2 * tolerance


def test_subclients_in_any_order_give_bit_identical_deltas():
    cfg = parse_config(TINY + ["-VN", "2"])
    results = []
    for order in (lambda m: m, lambda m: m[::-1], lambda m: m[1::2] + m[::2]):
        fed = build_federation(cfg)
        state = loop.initial_state(fed)
        shards = loop.subclient_data(fed, state)
        members = order([(h, k) for h in range(3) for k in range(2)])
        deltas, _ = loop.local_updates(fed, state, shards, members, round_idx=0)
        results.append({m: deltas[i] for i, m in enumerate(members)})
    for other in results[1:]:
        assert all(torch.equal(results[0][m], other[m]) for m in results[0])


@pytest.mark.parametrize("relation", ["add_remove", "replace"])
@pytest.mark.parametrize("accountant", ["pld", "prv"])
def test_unamplified_releases_are_accounted_as_the_one_gaussian_they_compose_into(accountant, relation):
    """At q = 1 the rounds' Gaussians compose exactly into one Gaussian of multiplier
    (sum z_i^-2)^-1/2 (mu-GDP). PLD and PRV evaluate that one release, so their cost does
    not grow with the rounds and their discretisation error is not compounded: the result
    is the one release's epsilon exactly, and the closed form within each grid's error."""
    zs = [1.0] * 30 + [0.7] * 10 + [2.5] * 5  # e.g. a noise level that changes between rounds
    z_eff = inverse_square_sum(*zs) ** -0.5
    folded = epsilon([(z_eff, 1.0)], delta=1e-3, accountant=accountant, sampling=EVERY_ROUND, relation=relation)
    history = epsilon([(z, 1.0) for z in zs], delta=1e-3, accountant=accountant, sampling=EVERY_ROUND,
                      relation=relation)
    assert history == pytest.approx(folded, rel=1e-12)  # unfolded PLD differs by ~5e-9
    exact = gdp_epsilon(1 / z_eff, 1e-3)
    assert exact - 1e-6 <= history <= exact + 2 * PRV_EPS_ERROR  # both report upper bounds (PRV: + its error)


def test_a_thousand_unamplified_rounds_cost_one_release():
    """Constant time in the number of rounds: 1,000 distinct multipliers (a new one every
    round, as a schedule or calibration gives) under PLD and PRV in well under a second."""
    import time

    history = [(1.0 + i / 1000, 1.0) for i in range(1000)]
    start = time.perf_counter()
    for accountant in ("pld", "prv"):
        epsilon(history, delta=1e-3, accountant=accountant, sampling=EVERY_ROUND)
    assert time.perf_counter() - start < 5.0  # unfolded: PLD alone composes 1,000 grids (minutes)
