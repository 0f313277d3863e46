"""The release charges itself: one declaration per round, used by calibration, the budget
check, the ledger and the report; the ledger stores dp-accounting events with their sampling."""
import math

import dp_accounting
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from federated.config import parse_config
from federated.privacy_setup import build_client_dp, planned_shapes
from privacy.accountants import Release, Sampling, epsilon
from privacy.client_dp import ReleasePlan
from privacy.declared import RevealedSampledDpEvent, describe, event_of, from_plain, releases_of, to_plain
from privacy.ledger import PrivacyLedger

POISSON = Sampling("poisson", 0.25, 8, 2)
FIXED = Sampling("fixed", 0.5, 4, 2)
ALL = Sampling("all", 1.0, 3, 3)
GAUSSIAN = dp_accounting.GaussianDpEvent


def _charged(sampling, counts, z=1.5, **plan):
    """A ledger after one declared round of client-level DP at `z`."""
    ledger = PrivacyLedger()
    plan = ReleasePlan(sampling, **plan)
    declared = plan.declare(z, plan.shape(counts))
    for unit, event in declared.events.items():
        ledger.open(f"client/{unit}", level="client", unit=unit, adjacency="x", relation="add_remove",
                    sampling=sampling, delta=1e-5)
        ledger.declare(f"client/{unit}", event)
    return ledger, declared


def test_the_ledger_stores_each_unit_s_event_with_its_sampling():
    ledger, _ = _charged(POISSON, [1, 3])  # c = 3: a sub-client's companions reveal it
    assert ledger.accounts["client/hospital"].events == [
        dp_accounting.PoissonSampledDpEvent(0.25, GAUSSIAN(1.5 / 3))]
    assert ledger.accounts["client/subclient"].events == [RevealedSampledDpEvent(0.25, GAUSSIAN(1.5))]
    ledger, _ = _charged(FIXED, [1, 1])
    assert ledger.accounts["client/hospital"].events == [
        dp_accounting.SampledWithoutReplacementDpEvent(4, 2, GAUSSIAN(1.5 / 2))]  # replaced: 2C
    ledger, _ = _charged(ALL, [2, 2, 2])
    assert ledger.accounts["client/subclient"].events == [GAUSSIAN(1.5)]  # everybody, every round


def test_the_count_release_is_declared_only_under_strict_dp():
    from privacy.clipping import QuantileClip
    policy = QuantileClip(1.0, quantile=0.5, lr=0.2, count_noise=5.0)
    plan = ReleasePlan.for_policy(ALL, policy, strict=False, norm_sum_noise=4.0, split="hash", balanced=False)
    assert (plan.norm_sum_noise, plan.count_noise) == (None, None)
    plan = ReleasePlan.for_policy(ALL, policy, strict=True, norm_sum_noise=4.0, split="hash", balanced=False)
    assert (plan.norm_sum_noise, plan.count_noise) == (4.0, 5.0)


def test_a_declared_round_composes_its_gaussians_into_the_charged_event():
    _, declared = _charged(ALL, [2, 2, 2], z=1.0, norm_sum_noise=5.0, count_noise=5.0)
    assert [g.name for g in declared.gaussians] == ["update", "norm_sum", "count"]
    z_eff = (1 + 1 / 25 + 1 / 25) ** -0.5
    assert declared.events["subclient"].noise_multiplier == pytest.approx(z_eff)
    assert declared.events["hospital"].noise_multiplier == pytest.approx(z_eff / 2)


@pytest.mark.parametrize("sampling,relation", [(POISSON, "add_remove"), (FIXED, "replace"), (ALL, "add_remove")])
def test_the_stored_events_give_the_ledger_s_epsilon_in_dp_accounting_directly(sampling, relation):
    """The independent check: the ledger's events composed by dp-accounting's own RDP
    accountant (and PLD for Poisson) equal the epsilon the ledger reports."""
    ledger = PrivacyLedger()
    ledger.open("h", level="client", unit="hospital", adjacency="x", relation=relation, sampling=sampling, delta=1e-5)
    for _ in range(7):
        ledger.charge("h", 1.1)
    rdp = rdp_privacy_accountant.RdpAccountant(neighboring_relation=getattr(
        dp_accounting.NeighboringRelation, {"add_remove": "ADD_OR_REMOVE_ONE", "replace": "REPLACE_ONE"}[relation]))
    rdp.compose(dp_accounting.ComposedDpEvent(ledger.accounts["h"].events))
    assert ledger.epsilon("h", "rdp") == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-12)
    if sampling.kind == "poisson":
        pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
        pld.compose(dp_accounting.ComposedDpEvent(ledger.accounts["h"].events))
        assert ledger.epsilon("h", "pld") == pytest.approx(pld.get_epsilon(1e-5), rel=5e-3)


def test_events_and_releases_convert_both_ways():
    for sampling in (POISSON, FIXED, ALL):
        for release in (Release(0.7, sampling.rate, "sampled"), Release(0.7, 1.0, "sampled")):
            assert releases_of(event_of(release, sampling)) == [release]
    assert releases_of(event_of(Release(0.7, 0.3, "revealed"), POISSON)) == [Release(0.7, 0.3, "revealed")]
    assert releases_of(dp_accounting.SelfComposedDpEvent(GAUSSIAN(2.0), 3)) == [Release(2.0, 1.0)] * 3
    assert releases_of(dp_accounting.ComposedDpEvent([GAUSSIAN(2.0), RevealedSampledDpEvent(0.5, GAUSSIAN(1.0))])) \
        == [Release(2.0, 1.0), Release(1.0, 0.5, "revealed")]
    with pytest.raises(ValueError) as err:
        releases_of(dp_accounting.LaplaceDpEvent(1.0))
    assert str(err.value) == ("the ledger's accountants analyse (sampled) Gaussian and zCDP releases; LaplaceDpEvent "
                              "is not one of them")
    with pytest.raises(ValueError, match="fixed-size sampling draws 2 of 4"):
        event_of(Release(0.7, 0.3, "sampled"), FIXED)  # a rate the sampling cannot have
    with pytest.raises(ValueError, match="unknown release kind 'Sampled'"):
        event_of(Release(0.7, 1.0, "Sampled"), ALL)


def test_the_ledger_survives_a_weights_only_checkpoint(tmp_path):
    ledger, _ = _charged(POISSON, [1, 3], norm_sum_noise=4.0)
    ledger.charge("client/hospital", 2.0, count=3)
    torch.save({"ledger": ledger.state_dict()}, tmp_path / "last.pt")
    state = torch.load(tmp_path / "last.pt", weights_only=True)["ledger"]
    copy, _ = _charged(POISSON, [1, 1])
    copy.load_state_dict(state)
    for name, account in ledger.accounts.items():
        assert copy.accounts[name].events == account.events
        assert copy.epsilon(name, "pld") == ledger.epsilon(name, "pld")
    assert copy.releases("client/hospital") == 4


def test_a_checkpoint_event_outside_the_known_classes_is_refused():
    composed = dp_accounting.ComposedDpEvent([GAUSSIAN(1.0), RevealedSampledDpEvent(0.5, GAUSSIAN(2.0))])
    assert from_plain(to_plain(composed)) == composed
    plain = to_plain(GAUSSIAN(1.0))
    for module, name in [("os", "system"), ("dp_accounting.dp_event", "attr"), ("privacy.declared", "Release"),
                         ("privacy.declared", "NoSuchEvent")]:
        with pytest.raises(ValueError) as err:
            from_plain({**plain, "module_name": module, "class_name": name})
        assert str(err.value) == (f"a stored privacy event names {module}.{name}, which is not an event class this "
                                  "repository reads; the checkpoint or journal was not written by it")


def test_an_older_checkpoint_s_float_history_still_loads():
    ledger, _ = _charged(POISSON, [1, 3])
    state = ledger.state_dict()
    for name, account in ledger.accounts.items():  # the format before events: (multiplier, rate, kind)
        state[name]["history"] = [tuple(r) for r in account.history]
        del state[name]["events"]
    copy, _ = _charged(POISSON, [1, 1])
    copy.load_state_dict(state)
    assert all(copy.accounts[n].events == a.events for n, a in ledger.accounts.items())


def test_the_report_lists_the_declared_events():
    ledger, _ = _charged(POISSON, [1, 3])
    ledger.declare("client/hospital", ledger.accounts["client/hospital"].events[0])
    assert ledger.report(accountants=())["client/hospital"]["events"] == [
        "2 x PoissonSampled(q=0.25, Gaussian(z=0.5))"]
    assert describe([RevealedSampledDpEvent(0.25, GAUSSIAN(1.5))]) == ["RevealedSampled(q=0.25, Gaussian(z=1.5))"]
    assert describe([dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(4, 2, GAUSSIAN(0.75)), 3), dp_accounting.LaplaceDpEvent(1.0)]) \
        == ["3 x SampledWithoutReplacement(2 of 4, Gaussian(z=0.75))", "LaplaceDpEvent(noise_multiplier=1.0)"]
    single = PrivacyLedger()
    single.open("a", level="client", unit="hospital", adjacency="x", relation="add_remove", sampling=ALL, delta=1e-5)
    single.charge("a", 2.0)
    single.charge("a", 2.0, count=2)
    assert single.accounts["a"].events == [GAUSSIAN(2.0), dp_accounting.SelfComposedDpEvent(GAUSSIAN(2.0), 2)]


def _cfg(tiny_args, *extra):
    return parse_config(tiny_args + ["--mode", "dpsgd", "--sample_rate", "0.5", "--client_sampling", "poisson",
                                     *extra])


def test_calibration_plans_with_the_declaration_the_run_charges(tiny_args):
    """--epsilon: z is calibrated on the run's own plan; charging the planned rounds with it
    spends the target (to the bisection's 1e-3) and never more."""
    cfg = _cfg(tiny_args, "--epsilon", "8", "--rounds", "5", "-VN", "2", "--strict_dp", "--adaclip")
    shapes = planned_shapes(cfg, [40, 40, 40], [2, 2, 2], 2)
    dp = build_client_dp(cfg, PrivacyLedger(), shapes)
    for shape in shapes:
        dp.charge(dp.plan.declare(dp.z, shape))
    spent = dp.ledger.epsilon(f"client/{cfg.target_unit}", cfg.accountant)
    assert spent <= 8.0 and spent == pytest.approx(8.0, rel=5e-3)


def test_the_budget_check_and_the_charge_read_one_declaration(tiny_args):
    cfg = _cfg(tiny_args, "--noise_multiplier", "1.0", "--dp_mode", "bounded", "--epsilon", "1e9")
    dp = build_client_dp(cfg, PrivacyLedger(), [])
    declared = dp.declare([1, 1, 1])
    assert dp.within_budget(declared)
    before = dp.ledger.mark()
    dp.charge(declared)
    assert [event for _, event in dp.ledger.since(before)] == [declared.events[u] for u in declared.events]
    dp.budget = dp.ledger.epsilon(f"client/{cfg.target_unit}", cfg.accountant) * (1 + 1e-9)
    assert not dp.within_budget(declared)


def test_no_epsilon_without_noise_or_clipping():
    ledger, _ = _charged(POISSON, [1], clipped=False)
    assert math.isinf(ledger.epsilon("client/hospital"))
    assert epsilon([Release(0.0, 1.0)], delta=1e-5, accountant="rdp", sampling=ALL) == math.inf


def test_the_journal_stores_events_and_reads_its_earlier_float_entries(tmp_path):
    from federated.journal import ReleaseJournal
    from utils import io
    ledger, declared = _charged(POISSON, [1, 3])
    journal = ReleaseJournal(tmp_path)
    journal.record(0, [(f"client/{u}", e) for u, e in declared.events.items()])
    entries = io.read_json(tmp_path / "releases.json")
    io.write_json(tmp_path / "releases.json", entries + [  # a journal from before events: multiplier, rate, kind
        {"round": 1, "charges": [[f"client/{u}", *c] for u, c in declared.charges.items()]}])
    fresh, _ = _charged(POISSON, [1, 3])
    assert ReleaseJournal(tmp_path).charge_after(0, fresh) == 2
    for name, account in fresh.accounts.items():
        assert account.events == ledger.accounts[name].events * 3  # its own round and the two journaled
