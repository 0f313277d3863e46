"""The client-level mechanism, the accountants, the ledger and the release steps."""
import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy.accountants import PLD_DISCRETIZATION, PLD_ONE_RELEASE_POINTS, Sampling, calibrate, epsilon
from privacy.client_dp import ReleasePlan, RoundPlan, client_message
from privacy.events import RoundShape
from privacy.clipping import FixedClip, MedianClip, NoClip, QuantileClip
from privacy.intermediary import max_subclients, next_subclients, split_factor
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, update_norms
from tests.dp_helpers import charge_round, make_client_dp, within_budget

ALL = Sampling("all", 1.0, 20, 20)
POISSON = Sampling("poisson", 0.25, 20, 5)


def _plan(max_weight, gen):
    """A round's public facts: here every sub-client takes part, so 1 / max_weight of them."""
    return RoundPlan(max_weight, gen, 1 / max_weight)


def _multipliers(*, z, sampling, counts, split="hash", **kw):
    plan = ReleasePlan(sampling, split, norm_sum_noise=kw.pop("norm_sum_noise", None), **kw)
    return {unit: c.multiplier for unit, c in plan.declare(z, RoundShape(tuple(counts), split)).charges.items()}


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
    agg = dp.finalize(torch.zeros(p), c, _plan(1.0, torch.Generator().manual_seed(1)))
    assert dp.noise_std(c, 1.0) == pytest.approx(z * c)
    # sample std of 200k draws: relative standard error ~ 1/sqrt(2 * 200k) = 0.16%
    assert float(agg.std()) == pytest.approx(z * c, rel=0.01)
    assert abs(float(agg.mean())) < 5 * z * c / math.sqrt(p)


def test_noise_on_the_plain_mean_is_z_c_over_k():
    k, p = 10, 100_000
    dp = _dp(FixedClip(2.0), z=1.0)
    agg = dp.finalize(torch.zeros(p), 2.0, _plan(1 / k, torch.Generator().manual_seed(2)))
    assert float(agg.std()) == pytest.approx(2.0 / k, rel=0.02)


def test_secure_noise_is_not_seeded():
    a = gaussian_noise(10, 1.0, torch.Generator().manual_seed(0), secure=True)
    b = gaussian_noise(10, 1.0, torch.Generator().manual_seed(0), secure=True)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("z, q, steps", [(1.0, 1.0, 50), (0.8, 0.25, 100), (1.5, 0.1, 30)])
def test_accountants_equal_the_libraries_own(z, q, steps):
    sampling = Sampling("poisson" if q < 1 else "all", q, 20, max(1, int(20 * q)))
    history = [(z, q)] * steps
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    event = dp_accounting.SelfComposedDpEvent(event, steps)
    # At q = 1 PLD and PRV are given the one Gaussian the steps compose into (privacy/accountants.py).
    folded_z = z / math.sqrt(steps)
    prv = PRVAccountant()
    prv.history = [(z, q, steps)] if q < 1 else [(folded_z, 1.0, 1)]
    interval = PLD_DISCRETIZATION if q < 1 else max(PLD_DISCRETIZATION, 20 / folded_z / PLD_ONE_RELEASE_POINTS)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    pld.compose(event if q < 1 else dp_accounting.GaussianDpEvent(folded_z))
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
    return make_client_dp(noise_multiplier=kw.pop("z", 1.0), clip_policy=clip_policy, noise_scale_when_unclipped=10.0,
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
    out = dp.release(deltas, torch.full((6,), 1 / 6), _plan(1 / 6, gen))
    charge_round(dp, [2, 2, 2])
    z_eff = (1 + 1 / 25 + 1 / 25) ** -0.5  # update, norm sum and clip count compose
    assert dp.ledger.accounts["client/subclient"].history == [(pytest.approx(z_eff), 1.0, "sampled")]
    assert dp.ledger.accounts["client/hospital"].history == [(pytest.approx(z_eff / 2), 1.0, "sampled")]
    assert out.stats["norm_sum"] != pytest.approx(float(update_norms(deltas).clamp(max=1.0).sum()), abs=1e-6)
    faithful = _dp(FixedClip(1.0))
    charge_round(faithful, [2, 2, 2])
    # every hospital every round: the revealed units' releases are plain Gaussians
    assert faithful.ledger.accounts["client/subclient"].events == [dp_accounting.GaussianDpEvent(1.0)]
    assert faithful.ledger.accounts["client/patient"].events == [dp_accounting.GaussianDpEvent(0.5)]


def test_quantile_clip_moves_toward_the_target_quantile():
    policy = QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=1e-6)
    before = policy.bound  # all 100 updates clipped: none within C, fraction 0 -> C grows
    policy.after_round(0.0, torch.Generator().manual_seed(0), secure=False, expected=100)
    assert policy.bound == pytest.approx(before * math.exp(0.2 * 0.5))


def test_bounded_mode_refuses_a_round_that_would_exceed_the_budget():
    dp = _dp(FixedClip(1.0), z=1.0, budget=10.0)
    gen = torch.Generator().manual_seed(0)
    rounds = 0
    while within_budget(dp, [1]):
        dp.release(torch.zeros(4, 10), torch.full((4,), 0.25), _plan(0.25, gen))
        charge_round(dp, [1])
        rounds += 1
        assert dp.ledger.epsilon("client/subclient") <= 10.0
    assert rounds > 1
    assert dp.ledger.epsilon("client/subclient", extra=[dp_accounting.GaussianDpEvent(1.0)]) > 10.0


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


# --- pinned by mutation testing (docs/design.md, "Mutation testing") ---------------------
def test_calibration_is_precise_and_names_the_flag_when_unreachable():
    z = calibrate(4.0, lambda z: 1 / z, what="--epsilon")  # exact answer 0.25
    assert 0.25 <= z <= 0.25 * (1 + 1.1e-3)
    with pytest.raises(ValueError, match="--epsilon 0.001 is not reachable"):
        calibrate(1e-3, lambda z: 1.0, what="--epsilon")


def test_round_multipliers_per_unit():
    all_ = _multipliers(z=2.0, sampling=ALL, counts=[3, 3], norm_sum_noise=4.0, count_noise=5.0)
    assert all_["subclient"] == pytest.approx((2 ** -2 + 4 ** -2 + 5 ** -2) ** -0.5)
    assert all_["patient"] == pytest.approx((4 * 2 ** -2 + 4 ** -2 + 5 ** -2) ** -0.5)
    assert all_["hospital"] == pytest.approx((9 * (2 ** -2 + 4 ** -2 + 5 ** -2)) ** -0.5)
    fixed = _multipliers(z=2.0, sampling=Sampling("fixed", 0.5, 4, 2), counts=[3, 3, 3, 3])
    assert fixed == {"subclient": pytest.approx(1.0), "patient": pytest.approx(1.0), "hospital": pytest.approx(1 / 3)}
    unclipped = _multipliers(z=2.0, sampling=ALL, counts=[1], clipped=False)
    assert set(unclipped.values()) == {0.0}


def test_ledger_max_over_hospitals_and_accountants():
    ledger = PrivacyLedger()
    for h, m in (("a", 2.0), ("b", 1.0)):
        ledger.open(f"local/{h}", level="local", unit="subclient", adjacency=h, relation="add_remove",
                    sampling=ALL, delta=1e-3)
        ledger.charge(f"local/{h}", m, count=5)
    assert ledger.max_epsilon("local", "subclient") == ledger.epsilon("local/b")
    assert ledger.max_epsilon("local", "subclient", "pld") == ledger.epsilon("local/b", "pld")
    assert ledger.max_epsilon("local", "subclient", "pld") < ledger.max_epsilon("local", "subclient", "rdp")
    copy = PrivacyLedger()
    for h in ("a", "b"):
        copy.open(f"local/{h}", level="x", unit="y", adjacency="z", relation="replace", sampling=POISSON, delta=0.5)
    copy.load_state_dict(ledger.state_dict())
    assert copy.report() == ledger.report()


def test_noclip_passes_updates_through_unbounded():
    policy = NoClip()
    assert math.isinf(policy.bound_for(torch.ones(3)))
    deltas = torch.full((2, 4), 100.0)
    assert torch.equal(clip(deltas, update_norms(deltas), policy.bound), deltas)


def test_quantile_clip_counts_norms_at_the_bound_and_uses_the_given_generator():
    rows = torch.zeros(10, 4)
    rows[:, 0] = 2.0  # every norm exactly at the bound: all unclipped, each message says so
    within = float(sum(client_message(row, 2.0).within_bound for row in rows))
    assert within == 10.0
    a = QuantileClip(2.0, quantile=0.5, lr=0.2, count_noise=1e-9)
    a.after_round(within, torch.Generator().manual_seed(0), secure=False, expected=10)
    assert a.bound == pytest.approx(2.0 * math.exp(-0.2 * 0.5))
    b, c = (QuantileClip(2.0, quantile=0.5, lr=0.2, count_noise=3.0) for _ in range(2))
    torch.manual_seed(1)
    b.after_round(within, torch.Generator().manual_seed(7), secure=False, expected=10)
    torch.manual_seed(2)
    c.after_round(within, torch.Generator().manual_seed(7), secure=False, expected=10)
    assert b.bound == c.bound


def test_intermediary_variants_at_their_edges():
    assert next_subclients(1, float("nan"), variant="default", v_max=4) == 1
    assert next_subclients(2, 1.5, variant="stable", v_max=10) == 2  # floor(1.5) * 2
    assert next_subclients(4, 2.7, variant="prog", v_max=20) == 7    # floor((10.8 - 4) / 2) + 4
    with pytest.raises(ValueError, match="'odd'"):
        next_subclients(2, 2.0, variant="odd", v_max=10)


def test_strict_side_releases_have_their_noise_scale_and_own_generator():
    dp = _dp(QuantileClip(2.0, quantile=0.5, lr=0.2, count_noise=3.0), strict=True)
    norm_sums = []
    for i in range(400):
        out = dp.release(torch.zeros(4, 5), torch.full((4,), 0.25), _plan(0.25, torch.Generator().manual_seed(i)))
        norm_sums.append(out.stats["norm_sum"])
        dp.clip_policy.bound = 2.0
    # std sigma_s * C = 5 * 2 (the clipped norms are all zero here)
    assert float(torch.tensor(norm_sums).std()) == pytest.approx(10.0, rel=0.15)
    runs = []
    for seed in (0, 1):
        dp = _dp(QuantileClip(2.0, quantile=0.5, lr=0.2, count_noise=3.0), strict=True)
        torch.manual_seed(seed)  # the global generator must play no part
        out = dp.release(torch.ones(4, 5), torch.full((4,), 0.25), _plan(0.25, torch.Generator().manual_seed(9)))
        runs.append((out.stats["norm_sum"], dp.clip_policy.bound))
    assert runs[0] == runs[1]


def test_faithful_stats_count_norms_at_the_bound_as_unclipped():
    dp = _dp(FixedClip(1.0))
    deltas = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # norms 1 (at the bound) and 3
    out = dp.release(deltas, torch.full((2,), 0.5), _plan(0.5, torch.Generator().manual_seed(0)))
    assert out.stats["clipped_fraction"] == 0.5 and out.stats["clipped_norm_sum"] == pytest.approx(2.0)


def test_unclipped_noise_is_scaled_by_S_and_budget_uses_the_chosen_accountant():
    assert _dp(NoClip(), z=2.0).noise_std(math.inf, 0.5) == pytest.approx(2.0 * 10.0 * 0.5)
    assert _dp(FixedClip(3.0), z=2.0).noise_std(3.0, 0.5) == pytest.approx(3.0)
    # after 30 rounds at z = 1, delta 1e-3: RDP says 33.7, PLD 31.1; a budget of 32.5 separates them
    verdicts = {}
    for accountant in ("rdp", "pld"):
        dp = _dp(FixedClip(1.0), z=1.0, budget=32.5, accountant=accountant)
        for _ in range(29):
            charge_round(dp, [1])
        verdicts[accountant] = within_budget(dp, [1])
    assert verdicts == {"rdp": False, "pld": True}


def test_secure_noise_is_gaussian_for_odd_lengths_and_zero_std_gives_zeros():
    from scipy.stats import kstest
    draws = gaussian_noise(100_001, 1.0, torch.Generator(), secure=True)
    assert draws.shape == (100_001,)
    assert kstest(draws.numpy(), "norm").pvalue > 1e-3
    assert torch.equal(gaussian_noise(5, 0.0, torch.Generator(), secure=True), torch.zeros(5))


def test_report_lists_accounts_outputs_and_notes():
    from privacy.report import Output, build_report, format_report, undeclared
    outputs = [Output("a", "covered", "x", (("privacy", "eps*"),)), Output("b", "not covered", "y"),
               Output("c", "post-processing", "z")]
    accounts = {"client/patient": {"adjacency": "adj", "relation": "replace", "sampling": "poisson",
                                   "sample_rate": 0.5, "delta": 1e-3, "notes": ["n1"]}}
    report = build_report(mode="m", accounts=accounts, outputs=outputs, threat_model="t")
    assert report["covered"] == ["a: x"] and report["not_covered"] == ["b: y"] and report["post_processing"] == ["c: z"]
    assert report["notes"] == ["n1"]
    text = format_report(report).splitlines()
    assert text == ["privacy (m):", "  threat model: t", "  account client/patient: adj [replace, poisson q=0.5, delta=0.001]",
                    "  covered: a: x", "  post-processing: c: z", "  NOT covered: b: y", "  note: n1"]
    assert not undeclared(outputs, "privacy", "epsilon_patient") and undeclared(outputs, "privacy", "noise_norm")
    assert undeclared(outputs, "train", "eps")
    with pytest.raises(ValueError, match="status"):
        Output("d", "secret", "w")


def test_approximation_notes_say_which_analysis_is_missing():
    from privacy.accountants import amplified, approximation_note
    fixed, poisson = Sampling("fixed", 0.5, 4, 2), Sampling("poisson", 0.5, 4, 2)
    assert approximation_note(fixed, "replace", "pld") == (
        "pld: no analysis of fixed-size sampling without replacement in the library; accounted without "
        "subsampling amplification (an upper bound)")
    assert approximation_note(poisson, "replace", "rdp") == (
        "rdp: no analysis of Poisson sampling under the replace-one relation in the library; accounted without "
        "subsampling amplification (an upper bound)")
    assert approximation_note(fixed, "replace", "rdp") is None and approximation_note(ALL, "replace", "pld") is None
    assert approximation_note(poisson, "add_remove", "prv") is None and approximation_note(poisson, "replace", "pld") is None
    assert [amplified(poisson, r, a) for r in ("add_remove", "replace") for a in ("rdp", "prv", "pld")] == \
        [True, True, True, False, False, True]
    assert [amplified(fixed, "replace", a) for a in ("rdp", "prv", "pld")] == [True, False, False]
    assert not amplified(ALL, "add_remove", "rdp")


def test_epsilon_refuses_unknown_accountants_and_relations():
    with pytest.raises(ValueError, match="unknown accountant 'gdp'"):
        epsilon([(1.0, 1.0)], delta=1e-3, accountant="gdp", sampling=ALL)
    with pytest.raises(ValueError, match="unknown neighbouring relation 'swap'"):
        epsilon([(1.0, 1.0)], delta=1e-3, accountant="rdp", sampling=ALL, relation="swap")
    assert epsilon([], delta=1e-3, accountant="pld", sampling=ALL) == 0.0


def test_client_accounts_are_labelled_and_carry_their_notes():
    from privacy.events import adjacency
    dp = make_client_dp(noise_multiplier=1.0, clip_policy=FixedClip(1.0), noise_scale_when_unclipped=1.0,
                       ledger=PrivacyLedger(), sampling=Sampling("fixed", 0.5, 4, 2), delta=1e-3, secure=False,
                       strict=False, norm_sum_noise=1.0)
    charge_round(dp, [1, 1, 1, 1])
    report = dp.ledger.report()
    for unit in ("hospital", "subclient", "patient"):
        a = report[f"client/{unit}"]
        expected = adjacency(unit, split="hash", balanced=False)
        assert (a["level"], a["unit"], a["adjacency"], a["relation"]) == ("client", unit, expected, "replace")
        assert a["notes"] and all("fixed-size sampling" in n for n in a["notes"])  # PRV and PLD: unamplified
        assert len(a["notes"]) == 2


@pytest.mark.parametrize("split, balanced", [("paper", False), ("hash", True), ("paper", True)])
def test_client_accounts_state_the_adjacency_of_their_split(split, balanced):
    from privacy.events import adjacency
    dp = make_client_dp(noise_multiplier=1.0, clip_policy=FixedClip(1.0), noise_scale_when_unclipped=1.0,
                       ledger=PrivacyLedger(), sampling=Sampling("all", 1.0, 4, 4), delta=1e-3, secure=False,
                       strict=False, norm_sum_noise=1.0, split=split, balanced=balanced)
    report = dp.ledger.report()
    changed = {"patient"} if not balanced else {"hospital", "patient"}
    for unit in ("hospital", "subclient", "patient"):
        stated = report[f"client/{unit}"]["adjacency"]
        assert stated == adjacency(unit, split=split, balanced=balanced)
        assert (stated != adjacency(unit, split="hash", balanced=False)) == (unit in changed), unit
    patient = report["client/patient"]["adjacency"]
    assert ("every sub-client of its hospital can change" in patient) == (split == "paper")
    assert ("the keyed hash split moves no other record" in patient) == (split == "hash")


def test_a_release_without_noise_has_no_guarantee():
    assert set(_multipliers(z=0.0, sampling=ALL, counts=[2, 2]).values()) == {0.0}


def test_secure_noise_pairs_are_independent():
    """Box-Muller's two halves come from the same (radius, angle) pairs; paired up, they must
    still look like an isotropic 2-d Gaussian (uniform angle)."""
    from scipy.stats import kstest
    z = gaussian_noise(200_000, 1.0, torch.Generator(), secure=True).double()
    angle = torch.atan2(z[100_000:], z[:100_000])
    assert kstest(((angle + math.pi) / (2 * math.pi)).numpy(), "uniform").pvalue > 1e-3


def test_secure_flag_reaches_every_noise_draw():
    """With --secure_rng no release may fall back to the seeded generator: two runs with the
    same seeded generators differ in the update, the norm sum, the clip count and local noise."""
    from privacy.local_update_dp import LocalUpdateDP

    def strict_release():
        dp = _dp(QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=1.0), secure=True, strict=True)
        out = dp.release(torch.ones(4, 6), torch.full((4,), 0.25), _plan(0.25, torch.Generator().manual_seed(0)))
        return out.update, out.stats["norm_sum"], dp.clip_policy.bound

    (u1, n1, b1), (u2, n2, b2) = strict_release(), strict_release()
    assert not torch.equal(u1, u2) and n1 != n2 and b1 != b2

    def local_noise():
        ldp = LocalUpdateDP(noise_multiplier=1.0, clip_bound=1.0, delta=1e-5, secure=True, hospitals=["h"],
                            ledger=PrivacyLedger())
        return ldp.privatize(torch.zeros(1, 8), [0], [torch.Generator().manual_seed(0)])
    assert not torch.equal(local_noise(), local_noise())


def test_noclip_rounds_are_charged_as_unbounded():
    dp = _dp(NoClip(), z=1.0)
    charge_round(dp, [2, 2])
    for unit in ("hospital", "subclient", "patient"):
        assert math.isinf(dp.ledger.epsilon(f"client/{unit}"))


def test_bounded_mode_allows_a_round_that_reaches_the_budget_exactly():
    probe = _dp(FixedClip(1.0), z=1.0)
    exact = probe.ledger.epsilon("client/subclient", extra=[dp_accounting.GaussianDpEvent(1.0)])
    assert within_budget(_dp(FixedClip(1.0), z=1.0, budget=exact), [1])
    assert not within_budget(_dp(FixedClip(1.0), z=1.0, budget=exact * (1 - 1e-9)), [1])


def test_amplified_accounts_carry_no_approximation_note():
    ledger = PrivacyLedger()
    poisson = Sampling("poisson", 0.5, 4, 2)
    ledger.open("a", level="client", unit="subclient", adjacency="x", relation="add_remove", sampling=poisson,
                delta=1e-3)
    ledger.open("r", level="client", unit="patient", adjacency="x", relation="replace", sampling=poisson, delta=1e-3)
    ledger.charge("a", 1.0)
    ledger.charge("r", 1.0)
    report = ledger.report()
    assert report["a"]["notes"] == []
    assert [n.split(":")[0] for n in report["r"]["notes"]] == ["rdp", "prv"]  # PLD analyses Poisson replace-one


def test_a_vanishing_multiplier_has_no_guarantee_under_every_accountant():
    for acc in ("rdp", "pld", "prv"):  # 1 / z overflows: no finite guarantee, and no numerical blow-up
        assert math.isinf(epsilon([(1e-320, 1.0)], delta=1e-3, accountant=acc, sampling=ALL))


def test_prv_at_q1_warns_about_nothing():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Opacus's harmless log(0) at q = 1 is silenced, not leaked
        assert epsilon([(1.0, 1.0)] * 3, delta=1e-3, accountant="prv", sampling=ALL) > 0


def test_opening_an_account_twice_names_it():
    ledger = PrivacyLedger()
    ledger.open("client/hospital", level="client", unit="hospital", adjacency="x", relation="add_remove",
                sampling=ALL, delta=1e-3)
    with pytest.raises(ValueError, match="privacy account 'client/hospital' is opened twice"):
        ledger.open("client/hospital", level="client", unit="hospital", adjacency="x", relation="add_remove",
                    sampling=ALL, delta=1e-3)


def test_paper_split_charges_the_patient_with_every_subclient_of_its_hospital():
    """Under --subclient_split paper a re-split draws int(n/v) records at random, so one
    patient added can change the records of every sub-client of its hospital: each of the v
    clipped updates moves by up to 2C (the norm sum and count by C and 1 each)."""
    hashed = _multipliers(z=2.0, sampling=ALL, counts=[3, 3])
    paper = _multipliers(z=2.0, sampling=ALL, counts=[3, 3], split="paper")
    assert hashed["patient"] == pytest.approx(1.0)
    assert paper["patient"] == pytest.approx(2.0 / (2 * 3))
    assert paper["subclient"] == hashed["subclient"] and paper["hospital"] == hashed["hospital"]
    strict = _multipliers(z=2.0, sampling=ALL, counts=[3, 3], split="paper", norm_sum_noise=4.0, count_noise=5.0)
    assert strict["patient"] == pytest.approx((9 * (4 * 2 ** -2 + 4 ** -2 + 5 ** -2)) ** -0.5)
