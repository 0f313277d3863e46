"""The ledger's epsilon for every unit against independent computations: the mu-GDP closed
form at q = 1, dp-accounting called directly otherwise (property tests over random
settings), the binomial closed form and numerical integration for a unit whose sampling its
companions reveal, and the noise on the released aggregate by Monte Carlo."""
import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import binom, norm

from federated import loop
from federated.config import parse_config
from federated.pipeline import Participants
from federated.setup import build_federation
from privacy.accountants import EVERY_ROUND, NUMERIC_LIMIT, PRV_EPS_ERROR, History, Release, Sampling, epsilon
from privacy.clipping import FixedClip, QuantileClip
from privacy.ledger import PrivacyLedger
from tests.conftest import TINY
from tests.dp_helpers import charge_round, make_client_dp

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


def revealed_epsilon(z: float, q: float, rounds: int, delta: float) -> float:
    """Exact epsilon of `rounds` Gaussians of multiplier z, each released with probability q
    in a way an observer can tell: the number K of releases is Binomial(rounds, q) and seen,
    so delta(eps) = E_K[delta of sqrt(K)/z-GDP at eps] (Dong, Roth, Su, Cor. 2.13, per K)."""
    ks = np.arange(1, rounds + 1)
    weights = binom.pmf(ks, rounds, q)
    mus = np.sqrt(ks) / z

    def gap(eps):
        return float(np.sum(weights * (norm.cdf(-eps / mus + mus / 2) - np.exp(eps + norm.logcdf(-eps / mus - mus / 2)))))\
            - delta
    return 0.0 if gap(0.0) <= 0 else brentq(gap, 0.0, 1000.0)


def ledger_after(*, z, schedule, sampling, norm_sum_noise=None, count_noise=None, delta=1e-3, hospitals=5):
    """A ledger charged one round per entry of `schedule` (each hospital's sub-client count)."""
    ledger = PrivacyLedger()
    clip = QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=count_noise) if count_noise else FixedClip(1.0)
    dp = make_client_dp(noise_multiplier=z, clip_policy=clip, noise_scale_when_unclipped=1.0, ledger=ledger,
                       sampling=sampling, delta=delta, secure=False, strict=norm_sum_noise is not None,
                       norm_sum_noise=norm_sum_noise or 1.0)
    for v in schedule:
        charge_round(dp, [v] * hospitals)
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


def poisson_rdp(multiplier: float, q: float, rounds: int) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(multiplier)), rounds)
    return rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(1e-3)


@settings(max_examples=8, deadline=None)
@given(z=st.floats(0.7, 3.0), q=st.floats(0.05, 0.9), rounds=st.integers(1, 40), v=st.integers(1, 5),
       s_norm=extras)
def test_poisson_sampling_matches_dp_accounting(z, q, rounds, v, s_norm):
    """Hospitals are what Poisson sampling draws: the hospital is a Poisson-sampled Gaussian
    (dp-accounting directly). A sub-client is one only when it is its hospital's only one;
    with v >= 2 its hospital-mates show whether it took part (test_revealed_* below)."""
    ledger = ledger_after(z=z, schedule=[v] * rounds, sampling=Sampling("poisson", q, 10, 5), norm_sum_noise=s_norm)
    extra = inverse_square_sum(s_norm)
    assert ledger.epsilon("client/hospital", "rdp") == pytest.approx(
        poisson_rdp((v * v * (z ** -2 + extra)) ** -0.5, q, rounds), rel=1e-9)
    subclient = ledger.epsilon("client/subclient", "rdp")
    if v == 1:
        assert subclient == pytest.approx(poisson_rdp((z ** -2 + extra) ** -0.5, q, rounds), rel=1e-9)
    else:  # RDP bounds the exact epsilon of the revealed pair from above
        assert subclient >= revealed_epsilon((z ** -2 + extra) ** -0.5, q, rounds, 1e-3) - 1e-6
        assert ledger.accounts["client/subclient"].history == [Release(pytest.approx((z ** -2 + extra) ** -0.5), q,
                                                                       "revealed")] * rounds
    # the patient with v = 1 (replace-one): RDP has no amplified analysis, so the unamplified form bounds it
    exact = gdp_epsilon(math.sqrt(rounds * (4 * z ** -2 + extra)), 1e-3)
    if v == 1:
        assert ledger.epsilon("client/patient", "rdp") >= exact * (1 - 1e-6)
    pld = numerical_epsilon(ledger, "client/patient", "pld", [((4 * z ** -2 + extra) ** -0.5, 1.0)] * rounds)
    assert pld is None or pld <= exact * 1.02 + 0.02


@settings(max_examples=10, deadline=None)
@given(z=st.floats(0.5, 3.0), q=st.floats(0.05, 0.95), rounds=st.integers(1, 60))
@example(z=1.0, q=0.5, rounds=10)   # the review's sub-client: at least 9.82 spent
@example(z=1.0, q=0.2, rounds=50)   # and its second setting: at least 16.1
def test_revealed_releases_match_the_binomial_closed_form(z, q, rounds):
    """A unit sampled with companions that show whether it took part: PLD (dp-accounting's
    mixture with the identity) equals the exact binomial mixture of Gaussian DP within its
    grid and never below it; RDP bounds it from above; PRV (no analysis) charges every round."""
    history = [Release(z, q, "revealed")] * rounds
    exact = revealed_epsilon(z, q, rounds, 1e-3)
    pld = epsilon(history, delta=1e-3, accountant="pld", sampling=Sampling("poisson", q, 4, 2))
    assert exact - 1e-6 <= pld <= exact * 1.01 + 0.01
    assert epsilon(history, delta=1e-3, accountant="rdp", sampling=Sampling("poisson", q, 4, 2)) >= exact - 1e-6
    prv = epsilon(history, delta=1e-3, accountant="prv", sampling=Sampling("poisson", q, 4, 2))
    assert prv == pytest.approx(epsilon([(z, 1.0)] * rounds, delta=1e-3, accountant="prv", sampling=EVERY_ROUND))
    sampled = epsilon([(z, q)] * rounds, delta=1e-3, accountant="pld", sampling=Sampling("poisson", q, 4, 2))
    assert sampled <= pld + 1e-6  # hidden sampling amplifies more than visible sampling


@pytest.mark.parametrize("plain_rounds, revealed_rounds", [(3, 10), (12, 4)])
def test_plain_and_revealed_rounds_compose_exactly(plain_rounds, revealed_rounds):
    """Rounds at q = 1 (v = 1 under sampling of everyone) and revealed rounds in one history:
    with K ~ Binomial(n, q) revealed releases seen, the whole is Gaussian DP with
    mu^2 = plain / z_p^2 + K / z_r^2, so delta(eps) = E_K[delta of that mu at eps]."""
    z_p, z_r, q = 1.5, 1.0, 0.4
    history = [Release(z_p, 1.0)] * plain_rounds + [Release(z_r, q, "revealed")] * revealed_rounds
    ks = np.arange(revealed_rounds + 1)
    weights = binom.pmf(ks, revealed_rounds, q)
    mus = np.sqrt(plain_rounds / z_p ** 2 + ks / z_r ** 2)

    def gap(eps):
        return float(np.sum(weights * (norm.cdf(-eps / mus + mus / 2) - np.exp(eps + norm.logcdf(-eps / mus - mus / 2)))))\
            - 1e-3
    exact = brentq(gap, 0.0, 1000.0)
    pld = epsilon(history, delta=1e-3, accountant="pld", sampling=Sampling("poisson", q, 4, 2))
    assert exact - 1e-6 <= pld <= exact * 1.01 + 0.01


@pytest.mark.parametrize("relation", ["add_remove", "replace"])
def test_a_history_of_both_kinds_lies_between_its_pure_forms(relation):
    """A revealed release dominates the same release with hidden sampling (hiding the branch
    is post-processing), so a history whose first rounds were sampled and last revealed (v
    grew under --ada_vn) costs at least the all-sampled and at most the all-revealed one
    under PLD, which is tight (RDP's bounds need not keep that order, and RDP has no
    amplified analysis of the replace pair)."""
    accountant = "pld"
    z, q, n = 1.2, 0.3, 12
    poisson = Sampling("poisson", q, 8, 2)
    cost = lambda h: epsilon(h, delta=1e-3, accountant=accountant, sampling=poisson, relation=relation)  # noqa
    sampled, revealed = [Release(z, q)] * n, [Release(z, q, "revealed")] * n
    mixed = cost(sampled[:n // 2] + revealed[n // 2:])
    assert cost(sampled) - 1e-6 <= mixed <= cost(revealed) + 1e-6
    assert cost(sampled) < cost(revealed)


def test_revealed_rounds_carry_their_note():
    poisson = Sampling("poisson", 0.5, 4, 2)
    ledger = PrivacyLedger()
    for name, relation in (("s", "add_remove"), ("p", "replace")):
        ledger.open(name, level="client", unit=name, adjacency="x", relation=relation, sampling=poisson, delta=1e-3)
        ledger.charge(name, 1.0, kind="revealed")
    ledger.open("all", level="client", unit="subclient", adjacency="x", relation="add_remove", sampling=EVERY_ROUND,
                delta=1e-3)
    ledger.charge("all", 1.0, rate=1.0, kind="revealed")  # v >= 2 with every hospital sampled: a plain Gaussian
    report = ledger.report()
    told = ("{}: the unit is sampled together with its hospital's other sub-clients, which show whether it took "
            "part: those rounds are charged as a Gaussian released with probability q that an observer can tell "
            "apart from no release (no amplification by hidden sampling)")
    prv = ("prv: no analysis of a unit sampled together with its hospital's other sub-clients; those rounds are "
           "accounted without subsampling amplification (an upper bound)")
    expected = [told.format("rdp"), prv, told.format("pld")]
    assert report["s"]["notes"] == expected
    assert report["p"]["notes"] == expected  # no Poisson replace-one note: no round was sampled that way
    assert report["all"]["notes"] == []


def test_release_kinds_are_checked_and_a_visible_sure_release_is_plain():
    with pytest.raises(ValueError, match="unknown release kind 'hidden'"):
        epsilon([Release(1.0, 0.5, "hidden")], delta=1e-3, accountant="rdp", sampling=EVERY_ROUND)
    from privacy.accountants import dp_event
    with pytest.raises(ValueError, match="dp-accounting has no event for a 'revealed' release"):
        dp_event([Release(1.0, 0.5, "revealed")], sampling=Sampling("poisson", 0.5, 4, 2), relation="add_remove")
    assert dp_event([Release(1.0, 1.0, "revealed")], sampling=EVERY_ROUND, relation="add_remove")
    # a revealed release at q = 1 is a plain Gaussian: folded with the others, exactly
    zs = [1.0, 1.3, 0.8]
    for accountant in ("pld", "prv"):
        revealed = epsilon([Release(z, 1.0, "revealed") for z in zs], delta=1e-3, accountant=accountant,
                           sampling=EVERY_ROUND)
        plain = epsilon([(inverse_square_sum(*zs) ** -0.5, 1.0)], delta=1e-3, accountant=accountant,
                        sampling=EVERY_ROUND)
        assert revealed == pytest.approx(plain, rel=1e-12)


def test_pld_reads_a_mixed_replace_history_as_its_pairs():
    """A patient's history under Poisson sampling with v changing: its sampled rounds are
    REPLACE_ONE pairs (std over half the distance), its revealed rounds Gaussians of the
    whole distance mixed with no release; dp-accounting's PLDs built here by hand."""
    from dp_accounting.pld import privacy_loss_distribution as pld_lib
    z, q, interval = 1.1, 0.3, 1e-3
    history = [Release(z, q)] * 4 + [Release(z, q, "revealed")] * 6
    ours = epsilon(history, delta=1e-3, accountant="pld", sampling=Sampling("poisson", q, 8, 2), relation="replace")
    sampled = pld_lib.from_gaussian_mechanism(standard_deviation=2 * z, value_discretization_interval=interval,
                                              sampling_prob=q, neighboring_relation=REPLACE).self_compose(4)
    revealed = pld_lib.from_gaussian_mechanism(standard_deviation=z, value_discretization_interval=interval)
    revealed = revealed.compute_mixture(pld_lib.identity(interval), q).self_compose(6)
    assert ours == pytest.approx(sampled.compose(revealed).get_epsilon_for_delta(1e-3), rel=1e-9)


def test_a_revealed_replace_history_with_little_noise_uses_the_grid_its_note_states():
    """Revealed releases are read at their whole distance (no REPLACE_ONE halving), so
    their loss span sets PLD's grid: 20 / 0.08 = 250 nats needs a step of 1.25e-3."""
    from dp_accounting.pld import privacy_loss_distribution as pld_lib
    from privacy.accountants import limit_note
    poisson = Sampling("poisson", 0.5, 4, 2)
    history = [Release(0.08, 0.5, "revealed")] * 2
    note = limit_note(history, delta=1e-3, accountant="pld", sampling=poisson, relation="replace")
    assert note == "pld: grid step coarsened to 0.00125 (noise this small spans a wide loss range); an upper bound"
    gaussian = pld_lib.from_gaussian_mechanism(standard_deviation=0.08, value_discretization_interval=1.25e-3)
    expected = gaussian.compute_mixture(pld_lib.identity(1.25e-3), 0.5).self_compose(2).get_epsilon_for_delta(1e-3)
    assert epsilon(history, delta=1e-3, accountant="pld", sampling=poisson, relation="replace") == \
        pytest.approx(expected, rel=1e-12)


def test_the_report_states_each_accounts_limits_under_its_own_relation():
    """A Poisson replace-one account with little noise: PLD amplifies it on a coarsened grid,
    which only its own relation reveals (read as add/remove it would be one plain Gaussian)."""
    from privacy.accountants import limit_note
    poisson = Sampling("poisson", 0.1, 10, 1)
    ledger = PrivacyLedger()
    ledger.open("p", level="client", unit="patient", adjacency="x", relation="replace", sampling=poisson, delta=1e-3)
    ledger.charge("p", 0.045)
    note = limit_note(ledger.accounts["p"].history, delta=1e-3, accountant="pld", sampling=poisson, relation="replace")
    assert note and note.startswith("pld: grid step coarsened")
    assert note in ledger.report()["p"]["notes"]


@pytest.mark.parametrize("z, q", [(0.6, 0.1), (1.0, 0.5), (2.5, 0.9)])
def test_revealed_rdp_is_the_renyi_integral(z, q):
    """The revealed release's RDP curve against the Renyi divergence integrated numerically:
    D_a = log((1 - q) + q * integral of N(1/z)^a N(0)^(1-a)) / (a - 1)."""
    from privacy.accountants import _rdp_curve, _rdp_orders
    curve = _rdp_curve(z, q, "revealed", Sampling("poisson", q, 4, 2), "add_remove")
    mu = 1 / z
    for i, order in enumerate(_rdp_orders()):
        if order * (order - 1) * mu * mu / 2 > 500:  # the integral leaves floating point
            break
        integral, _ = quad(lambda x: math.exp(order * norm.logpdf(x, mu) + (1 - order) * norm.logpdf(x)),
                           -30 + mu * order, 30 + mu * order, limit=200)
        assert curve[i] == pytest.approx(math.log(1 - q + q * integral) / (order - 1), rel=1e-6, abs=1e-12)


@settings(max_examples=5, deadline=None)  # dp-accounting's without-replacement RDP is slow
@given(z=st.floats(0.7, 3.0), n=st.integers(4, 30), rounds=st.integers(1, 30), v=st.integers(1, 4))
@example(z=0.7, n=4, rounds=28, v=4)  # the hospital's PLD is past NUMERIC_LIMIT: not computed
@example(z=1.0, n=4, rounds=15, v=3)  # unamplified for PLD (340) though RDP's amplified bound passes 500
def test_fixed_size_sampling_matches_dp_accounting(z, n, rounds, v):
    """Replace-one under sampling without replacement (dp-accounting's RDP) for whatever is
    sampled: the hospital, and with v = 1 its one sub-client; with v >= 2 a sub-client's
    mates show whether it took part (probability m/n), checked as a revealed release."""
    m = max(1, n // 3)
    ledger = ledger_after(z=z, schedule=[v] * rounds, sampling=Sampling("fixed", m / n, n, m), hospitals=n)
    sampled = {"hospital": z / (2 * v)} if v > 1 else {"subclient": z / 2, "patient": z / 2, "hospital": z / 2}
    if v > 1:
        for unit in ("subclient", "patient"):
            assert ledger.accounts[f"client/{unit}"].history == [Release(pytest.approx(z / 2), m / n, "revealed")] * rounds
            pld = numerical_epsilon(ledger, f"client/{unit}", "pld", [(z / 2, 1.0)] * rounds)
            exact = revealed_epsilon(z / 2, m / n, rounds, 1e-3)
            assert pld is None or exact - 1e-6 <= pld <= exact * 1.01 + 0.01
    for unit, multiplier in sampled.items():
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
    sampled_sets = [list(range(n)), [0], [n - 1], list(range(0, n, 2)), []]  # [] also releases its noise
    stds = []
    for hospitals in sampled_sets:
        members = [(h, k) for h in hospitals for k in range(len(sizes[h]))]
        part = Participants(members, [sizes[h][k] for h, k in members], [1] * len(members), sizes,
                            [torch.Generator().manual_seed(i) for i in range(len(members))],
                            planned_subclients=cfg.clients * state.v)
        deltas = torch.zeros(len(members), state.params.numel())
        update, stats = fed.pipeline.round(torch.zeros(state.params.numel()), deltas, part, 0,
                                           torch.Generator().manual_seed(len(members) + 100 * len(stds)))
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
