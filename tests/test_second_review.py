"""One test per finding of the second privacy review (docs/privacy.md, changelog 15-25).

Each was written before its fix and failed on the code it found. Spent epsilons are
computed independently of the repository's accountant: on the neighbouring pair the code
really produces, either with dp-accounting called directly on the worst pair consistent
with what a run is measured to do, or as a sensitivity measured on the pre-noise release
(tests/neighbours.py runs a round with every noise draw instrumented).
"""
import contextlib
import math
from unittest import mock

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import privacy_loss_distribution
from scipy.stats import norm

import fed_train
import federated.loop as loop
from federated.subclients import record_keys
from tests import neighbours as nb
from tests.conftest import TINY
from tests.test_findings import run

DP = ["--mode", "dpsgd", "--noise_multiplier", "1.0"]
POISSON = ["-sr", "0.5", "--client_sampling", "poisson"]
# Every update clipped to norm C exactly, so that a changed record moves its sub-client's message.
ALL_CLIPPED = ["--S", "1e-4"]


def mixture_pair_epsilon(q: float, a: float, b: float, sigma: float, rounds: int, delta: float) -> float:
    """A lower bound on the epsilon of `rounds` compositions of the 1-D pair
    P = (1-q) N(0, s^2) + q N(a, s^2) and Q = (1-q) N(0, s^2) + q N(b, s^2): the pair is
    binned on a fine grid (post-processing can only lower epsilon) and dp-accounting's PLD
    is built from the two mass functions with optimistic rounding."""
    lo, hi = min(0.0, a, b) - 12 * sigma, max(0.0, a, b) + 12 * sigma
    xs = np.linspace(lo, hi, 60001)
    dx = xs[1] - xs[0]
    p = (1 - q) * norm.pdf(xs, 0, sigma) + q * norm.pdf(xs, a, sigma)
    r = (1 - q) * norm.pdf(xs, 0, sigma) + q * norm.pdf(xs, b, sigma)
    pmf = lambda d: {i: math.log(v * dx) for i, v in enumerate(d) if v > 0}  # noqa: E731
    pld = privacy_loss_distribution.from_two_probability_mass_functions(
        pmf(p), pmf(r), pessimistic_estimate=False, value_discretization_interval=1e-3, symmetric=False)
    return pld.self_compose(rounds).get_epsilon_for_delta(delta)


def members_per_round(args, tmp_path, name="run"):
    """Run `args` and record which (hospital, sub-client) pairs took part in each round."""
    seen = []
    real = loop.local_updates

    def spy(fed, state, shards, members, round_idx):
        seen.append(list(members))
        return real(fed, state, shards, members, round_idx)

    with mock.patch.object(loop, "local_updates", spy):
        summary = run(args, tmp_path, name)
    return summary, seen


# 15. Poisson sampling draws hospitals: a sub-client's hospital-mates show whether it took part
def test_15_a_subclient_sampled_with_its_hospital_is_charged_what_its_mates_reveal(tmp_path):
    v, q, rounds = 3, 0.5, 10
    args = TINY + DP + POISSON + ["-N", "4", "-VN", str(v), "--rounds", str(rounds), "--delta", "1e-3"]
    summary, seen = members_per_round(args, tmp_path)
    # measured: whenever a sub-client takes part, every other sub-client of its hospital does too
    for members in seen:
        for h, _ in members:
            assert {k for g, k in members if g == h} == set(range(v))
    assert any(seen) and not all(len(m) == 4 * v for m in seen)  # some hospitals were left out
    # so an adversary whose v - 1 mates' clipped updates point along the target's sees the
    # target's hospital present or absent: the worst pair is (1-q) N(0) + q N((v-1)C) against
    # (1-q) N(0) + q N(vC) for the sub-client, and (1-q) N(0) + q N((v-2)C) against ...N(vC)
    # for a patient whose sub-client moves from -C to C (noise std zC, z = 1)
    spent_subclient = mixture_pair_epsilon(q, v - 1, v, 1.0, rounds, 1e-3)
    spent_patient = mixture_pair_epsilon(q, v - 2, v, 1.0, rounds, 1e-3)
    assert spent_subclient == pytest.approx(9.82, abs=0.02) and spent_patient == pytest.approx(27.58, abs=0.05)
    eps = summary["privacy"]["epsilon"]
    for accountant in ("rdp", "pld", "prv"):
        assert eps["subclient"][accountant] >= spent_subclient
        assert eps["patient"][accountant] >= spent_patient


# 16. a round in which Poisson sampling picked nobody must look like any other round
def test_16_an_empty_poisson_sample_still_releases_the_noise():
    fed = nb.build(TINY + DP + POISSON + ["--rounds", "30", "--delta", "1e-3"])
    state = loop.initial_state(fed)
    shards = loop.subclient_data(fed, state)
    sampled, real = [], loop.sample_hospitals

    def spy(*args, **kwargs):
        sampled.append(real(*args, **kwargs))
        return sampled[-1]

    stds = set()
    with mock.patch.object(loop, "sample_hospitals", spy):
        for r in range(30):
            before = state.params.clone()
            _, stats = loop.run_round(fed, state, shards, r)
            assert not torch.equal(state.params, before), f"round {r} ({sampled[-1]} sampled) released nothing"
            stds.add(stats["noise_std"])
            if not sampled[-1]:  # the logged statistics of nobody's norms: zeros, not NaN
                assert (stats["norm_sum"], stats["clipped_fraction"], stats["clipped_norm_sum"]) == (0, 0, 0)
    assert [] in sampled  # the seed gives empty rounds (two of thirty)
    assert len(stds) == 1  # and their noise has the std of every other round


# 17. strict mode's quantile clip: the released fraction has a fixed denominator
def test_17_the_quantile_clip_divides_by_the_expected_participants():
    # every update below the bound, so the pre-noise count is the number of participants
    fed = nb.build(TINY + DP + POISSON + ["--strict_dp", "--adaclip", "--S", "1e6", "--rounds", "10",
                                          "--clip_count_noise", "5", "--norm_sum_noise", "5"])
    state = loop.initial_state(fed)
    clip = fed.client_dp.clip_policy
    expected = 0.5 * 3  # q times the sub-clients of the federation: public
    seen_sizes = set()
    for r in range(10):
        bound = clip.bound
        released, state = nb.release(fed, r, state)
        participants = len(released.members)
        seen_sizes.add(participants)
        # the released fraction, read off the next bound (zero noise): b <- b exp(-lr (fraction - gamma))
        fraction = 0.5 - math.log(clip.bound / bound) / 0.2
        assert fraction == pytest.approx(participants / expected, abs=1e-9), f"round {r}"
    assert len(seen_sizes) > 1


# 18. the patient's adjacency under the hash split is add/remove, whose sensitivity is 2C
def test_18_the_patient_is_a_record_added_or_removed_which_moves_one_subclient():
    base = TINY + DP + ALL_CLIPPED + ["-N", "2", "-VN", "2", "--train_size", "4", "--batch", "2"]
    fed = nb.build(base)
    adjacency = fed.ledger.accounts["client/patient"].adjacency
    assert "added or removed" in adjacency and "replace" not in adjacency
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(fed.data.hospitals[0].train.images.shape[1:], generator=gen)
    neighbour = nb.build(base, nb.with_record(0, image, torch.tensor(1)))
    a, _ = nb.release(fed)
    b, _ = nb.release(neighbour)
    charged = nb.charged_distance(fed, "patient", z=1.0)
    assert charged == pytest.approx(2.0)
    assert sum(not torch.equal(a.row(m), b.row(m)) for m in a.members) == 1  # one sub-client moved
    assert nb.distance_in_clip_bounds(a, b, 1.0) <= charged + 1e-6
    # replacing a record can move two sub-clients (its old and its new one), up to 4C: not claimed
    keys = record_keys(fed.data.hospitals[0].train, fed.secret)
    old = int(keys[0] % np.uint64(2))
    while True:
        image = torch.rand(image.shape, generator=gen)
        moved = nb.build(base, nb.replaced_record(0, 0, image, torch.tensor(1)))
        if int(record_keys(moved.data.hospitals[0].train, moved.secret)[0] % np.uint64(2)) != old:
            break
    c, _ = nb.release(moved)
    assert sum(not torch.equal(a.row(m), c.row(m)) for m in a.members) == 2


# 19. --balance_split: one record can move a sub-client from one hospital to another
def test_19_balance_split_charges_the_patient_both_rebalanced_hospitals():
    # hospitals of 8 and 17 records, v = 2: [1, 3] sub-clients; one record more in the first: [2, 2]
    base = TINY + DP + ALL_CLIPPED + ["-N", "2", "-VN", "2", "--train_size", "17", "--balance_split", "--batch", "2"]
    fed = nb.build(base, nb.train_records(0, slice(0, 8)))
    assert list(loop.initial_state(fed).subclient_counts) == [1, 3]
    extra = fed.data.hospitals[0].train  # reuse a record the generator made for this hospital
    full = nb.build(base)
    neighbour = nb.build(base, nb.with_record(0, full.data.hospitals[0].train.images[8],
                                              full.data.hospitals[0].train.targets[8],
                                              then=nb.train_records(0, slice(0, 8))))
    assert len(extra) == 8 and list(loop.initial_state(neighbour).subclient_counts) == [2, 2]
    a, _ = nb.release(fed)
    b, _ = nb.release(neighbour)
    measured = nb.distance_in_clip_bounds(a, b, 1.0)
    charged = nb.charged_distance(fed, "patient", z=1.0)
    assert measured > 2.0  # more than one sub-client moved
    assert measured <= charged


# 20. randomness is keyed by identity: a hospital leaving changes nothing of the others
def test_20_removing_a_hospital_leaves_every_other_hospitals_messages_unchanged():
    base = TINY + DP + ALL_CLIPPED + ["-VN", "2"]
    fed = nb.build(base)
    neighbour = nb.build(base, nb.without_hospital(0))
    for r in (0, 1):
        a, _ = nb.release(fed, r)
        b, _ = nb.release(neighbour, r)
        for h, k in a.members:
            if h > 0:
                assert torch.equal(a.row((h, k)), b.row((h - 1, k))), f"round {r}: hospital {h} sub-client {k}"
        assert torch.equal(a.weights[:len(b.weights)], b.weights)  # public denominators
        assert nb.distance_in_clip_bounds(a, b, 1.0) <= 2.0 + 1e-6  # v C


def test_20_the_paper_split_of_one_hospital_does_not_move_another_hospitals_split():
    base = TINY + DP + ALL_CLIPPED + ["-VN", "2", "--subclient_split", "paper"]
    fed = nb.build(base)
    image = torch.rand(fed.data.hospitals[0].train.images.shape[1:], generator=torch.Generator().manual_seed(0))
    neighbour = nb.build(base, nb.with_record(0, image, torch.tensor(0)))
    split, other = loop.initial_state(fed).subclient_indices, loop.initial_state(neighbour).subclient_indices
    for h in (1, 2):
        assert all(torch.equal(x, y) for x, y in zip(split[h], other[h])), f"hospital {h}"
    a, _ = nb.release(fed)
    b, _ = nb.release(neighbour)
    assert nb.distance_in_clip_bounds(a, b, 1.0) <= 2 * 2 + 1e-6  # the patient's hospital only: 2vC


# 21. --epsilon calibration plans for the largest v the adaptive rule can reach
@pytest.mark.parametrize("rule", ["--ada_vn", "--init_vn"])
def test_21_calibration_keeps_the_target_whatever_v_the_rule_picks(rule, tmp_path):
    args = TINY + ["--mode", "dpsgd", "--adaclip", rule, "--epsilon", "5", "--target_unit", "patient",
                   "--subclient_split", "paper", "--delta", "1e-3", "--rounds", "4", "--train_size", "32"]
    summary = run(args, tmp_path)
    assert summary["final_v"] > 1  # the rule did split the hospitals
    assert summary["privacy"]["epsilon"]["patient"]["rdp"] <= 5.0


# Calibration charges what the run charges: with v fixed, the rounds the run makes are the
# rounds it planned, so the epsilon the run reports lands on the target (within the
# bisection's tolerance), for each sampling, split and noise term that enters a charge.
CALIBRATED = {
    "poisson, sub-client": POISSON + ["--target_unit", "subclient"],
    "fixed, paper split, patient": ["-sr", "0.67", "--subclient_split", "paper", "--target_unit", "patient"],
    "poisson, paper split, patient": POISSON + ["--subclient_split", "paper", "--target_unit", "patient"],
    "poisson, balanced, hospital": POISSON + ["--balance_split", "--target_unit", "hospital"],
    "strict quantile clip, sub-client": ["--strict_dp", "--adaclip", "--clip_count_noise", "3",
                                         "--norm_sum_noise", "3", "--target_unit", "subclient"],
}


@pytest.mark.parametrize("case", CALIBRATED)
def test_21_calibration_lands_on_the_target_the_run_reports(case, tmp_path):
    args = TINY + ["--mode", "dpsgd", "-VN", "2", "--epsilon", "4", "--delta", "1e-3", "--rounds", "3"]
    summary = run(args + CALIBRATED[case], tmp_path)
    unit = CALIBRATED[case][CALIBRATED[case].index("--target_unit") + 1]
    assert summary["privacy"]["epsilon"][unit]["rdp"] == pytest.approx(4.0, rel=5e-3)


def test_21_calibration_plans_the_first_split_then_the_largest_for_every_round():
    from federated.config import Config
    from federated.privacy_setup import planned_shapes
    from federated.subclients import allocate_subclients
    from privacy.events import RoundShape
    sizes, counts = [40, 24, 16], [1, 1, 1]
    for split, balanced in (("paper", False), ("hash", True)):
        cfg = Config(rounds=5, init_vn=True, subclient_split=split, balance_split=balanced)
        shapes = planned_shapes(cfg, sizes, counts, cap=4)
        largest = RoundShape(tuple(allocate_subclients(sizes, 4, balance=balanced)), split, balanced)
        assert shapes == [RoundShape((1, 1, 1), split, balanced)] + [largest] * 4
        assert largest.counts != (4, 4, 4) if balanced else largest.counts == (4, 4, 4)
        fixed = planned_shapes(Config(rounds=5, subclient_split=split, balance_split=balanced), sizes, counts, cap=4)
        assert fixed == [RoundShape((1, 1, 1), split, balanced)] * 5


# 22. local update DP and DP-SGD noise: declared when seeded, drawn from the OS under --secure_rng
def test_22_seeded_local_noise_is_declared_and_secure_rng_reaches_dp_sgd(tmp_path):
    local = run(TINY + ["--dp_level", "update_local", "--local_noise", "1.0"], tmp_path, "local")
    assert any(line.startswith("randomness") and "--seed" in line for line in local["privacy_report"]["not_covered"])
    cxr = ["--data", "synthetic-cxr", "--train_size", "32", "--val_size", "16", "--test_size", "16", "--img_size",
           "16", "--batch", "8", "--rounds", "1", "--model", "resnet9_small", "--no_progress", "--threads", "1",
           "--dp_level", "sample", "--sample_noise", "1.0"]
    seeded = run(cxr, tmp_path, "seeded")
    assert any(line.startswith("randomness") for line in seeded["privacy_report"]["not_covered"])
    params = []
    for name in ("secure_a", "secure_b"):
        summary = run(cxr + ["--secure_rng"], tmp_path, name)
        assert not any(line.startswith("randomness") for line in summary["privacy_report"]["not_covered"])
        params.append(torch.load(f"{summary['run_dir']}/last.pt", weights_only=True)["state"]["params"])
    assert not torch.equal(*params)  # the same seed, different noise and batches


# What each configuration's report says of its randomness: (flags, status of "randomness"
# or None when nothing private runs, the draws it names, what the local-training line adds).
RANDOMNESS = [
    (dict(mode="fedavg"), None, [], None),
    (dict(mode="dpsgd"), "not covered", ["client-level noise, client sampling and the sub-client assignment key"],
     "come from --seed;"),
    (dict(mode="dpsgd", secure_rng=True), "covered",
     ["client-level noise, client sampling and the sub-client assignment key"], "even under --secure_rng;"),
    (dict(mode="fedavg", dp_level="update_local"), "not covered", ["local update DP's noise"], "come from --seed;"),
    (dict(mode="dpsgd", dp_level="update_local"), "not covered",
     ["client-level noise, client sampling and the sub-client assignment key", "local update DP's noise"],
     "come from --seed;"),
    (dict(mode="dpsgd", dp_level="update_local", secure_rng=True), "covered",
     ["client-level noise, client sampling and the sub-client assignment key", "local update DP's noise"],
     "even under --secure_rng;"),
    (dict(mode="fedavg", dp_level="sample"), "not covered", ["DP-SGD's Poisson batches, augmentation and noise"],
     "listed separately"),
]


@pytest.mark.parametrize("flags, status, draws, local", RANDOMNESS)
def test_22_the_report_names_every_source_of_randomness(flags, status, draws, local):
    from federated.config import Config
    from federated.privacy_setup import declared_outputs
    outputs = {o.name: o for o in declared_outputs(Config(**flags))}
    if status is None:
        assert "randomness" not in outputs and "local training randomness" not in outputs
        return
    randomness = outputs["randomness"]
    assert randomness.status == status
    source = "come from the OS (--secure_rng)" if status == "covered" else \
        "come from --seed (reproducible, predictable); --secure_rng draws them from the OS"
    assert randomness.what == f"{', '.join(draws)} {source}"
    training = outputs["local training randomness"]
    assert training.status == "covered" and local in training.what
    assert training.what.startswith("local training's batch order and augmentation come from --seed")
    sample = flags.get("dp_level") == "sample"
    assert training.what.endswith("whatever that randomness is, so it need not be secret" +
                                  ("; DP-SGD's own randomness is listed separately" if sample else ""))


def secure_flags_of_round(args: list[str], modules: list) -> list[bool]:
    """The `secure` argument of every noise draw that `modules` make in round 0 of `args`."""
    fed = nb.build(args)
    state = loop.initial_state(fed)
    flags = []
    real = modules[0].gaussian_noise

    def spy(*a, **kwargs):
        flags.append(kwargs["secure"])
        return real(*a, **kwargs)

    with contextlib.ExitStack() as patches:
        for module in modules:
            patches.enter_context(mock.patch.object(module, "gaussian_noise", spy))
        loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    return flags


@pytest.mark.parametrize("secure", [False, True])
def test_22_secure_rng_reaches_every_client_level_noise_draw(secure):
    import privacy.client_dp
    import privacy.clipping
    args = TINY + DP + ["--strict_dp", "--adaclip", "--clip_count_noise", "3", "--norm_sum_noise", "3"]
    flags = secure_flags_of_round(args + (["--secure_rng"] if secure else []), [privacy.client_dp, privacy.clipping])
    assert flags == [secure] * 3  # the update, the norm sum, the clip count


@pytest.mark.parametrize("secure", [False, True])
def test_22_secure_rng_reaches_local_update_dp(secure):
    import privacy.local_update_dp
    args = TINY + ["--dp_level", "update_local", "--local_noise", "1.0"] + (["--secure_rng"] if secure else [])
    flags = secure_flags_of_round(args, [privacy.local_update_dp])
    assert flags and set(flags) == {secure}  # one draw per sending sub-client


# 23. --secure_rng and a crash: rounds released after the last checkpoint are charged again
def test_23_a_secure_run_resumed_after_a_crash_charges_the_rounds_it_repeats(tmp_path, monkeypatch):
    from tests.test_loop import crash_in_round
    args = TINY + DP + ["--secure_rng", "--rounds", "4", "--ckpt_every", "2", "--save_path", str(tmp_path),
                        "--exp", "r"]
    crash_in_round(args, monkeypatch, round_idx=3)  # round 2 was released, the checkpoint holds rounds 0-1
    assert fed_train.main(args + ["--resume"]) == 0
    summary = nb.summary_of(tmp_path, "r")
    assert summary["privacy"]["rounds_charged"] == 5  # rounds 0-3, and round 2's first release
    z_eff = 1.0 / math.sqrt(5)  # five plain Gaussians of multiplier 1
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(z_eff))
    assert summary["privacy"]["epsilon"]["subclient"]["rdp"] == pytest.approx(acc.get_epsilon(1e-3), rel=1e-9)


# Poisson sampling of 3 hospitals at q = 0.5 with two sub-clients each; (multiplier, rate,
# kind) per unit as docs/privacy.md's table gives them, a multiplier of None where only the
# rate and the kind are checked. Under --balance_split a hospital takes part in a round when
# it or any of the others does, and a patient when either of two hospitals does.
SAMPLED_RUNS = {
    "split": ([], {"hospital": (0.5, 0.5, "sampled"), "subclient": (1.0, 0.5, "revealed"),
                   "patient": (0.5, 0.5, "revealed")}),
    "balanced": (["--balance_split"], {"hospital": (None, 1 - 0.5 ** 4, "revealed"),
                                       "subclient": (1.0, 0.5, "revealed"),
                                       "patient": (None, 1 - 0.5 ** 2, "revealed")}),
}


@pytest.mark.parametrize("case", SAMPLED_RUNS)
def test_23_a_resumed_sampled_run_charges_the_repeat_as_the_round(case, tmp_path, monkeypatch, capsys):
    from privacy.declared import from_plain, releases_of
    from tests.test_loop import crash_in_round
    from utils import io
    flags, expected = SAMPLED_RUNS[case]
    args = TINY + DP + POISSON + flags + ["-VN", "2", "--secure_rng", "--rounds", "4", "--ckpt_every", "2",
                                          "--save_path", str(tmp_path), "--exp", "r"]
    crash_in_round(args, monkeypatch, round_idx=3)
    folder = next(tmp_path.rglob("r"))
    assert [entry["round"] for entry in io.read_json(folder / "releases.json")] == [0, 1, 2]
    capsys.readouterr()
    assert fed_train.main(args + ["--resume"]) == 0
    assert "note: 1 round(s) were released after the last checkpoint" in capsys.readouterr().out
    ledger = torch.load(folder / "last.pt", weights_only=True)["ledger"]
    for unit, (multiplier, rate, kind) in expected.items():
        history = [r for e in ledger[f"client/{unit}"]["events"] for r in releases_of(from_plain(e))]
        assert len(history) == 5, unit  # rounds 0-3, and round 2's first release
        assert len(set(history)) == 1, (unit, history)  # the repeat is charged as the round was
        assert history[0][1] == pytest.approx(rate) and history[0][2] == kind, (unit, history[0])
        assert multiplier is None or history[0][0] == pytest.approx(multiplier), (unit, history[0])


def test_23_a_journal_of_another_configuration_is_refused(tmp_path):
    from federated.config import ConfigError
    from federated.journal import ReleaseJournal
    import dp_accounting

    from privacy.accountants import Sampling
    from privacy.ledger import PrivacyLedger
    journal = ReleaseJournal(tmp_path)
    journal.record(0, [("local/h0", dp_accounting.GaussianDpEvent(1.0))])
    ledger = PrivacyLedger()
    ledger.open("client/subclient", level="client", unit="subclient", adjacency="x", relation="add_remove",
                sampling=Sampling("all", 1.0, 3, 3), delta=1e-3)
    with pytest.raises(ConfigError) as err:
        ReleaseJournal(tmp_path).charge_after(0, ledger)
    assert str(err.value) == (f"{tmp_path / 'releases.json'} records releases of privacy account 'local/h0', which "
                              "this run does not have (another configuration ran in this folder); use --overwrite "
                              "or another --exp")
    assert ledger.releases("client/subclient") == 0


def test_23_a_secure_run_that_stopped_before_its_first_checkpoint_keeps_what_it_released(tmp_path, monkeypatch):
    from tests.test_loop import crash_in_round
    args = TINY + DP + ["--secure_rng", "--rounds", "3", "--ckpt_every", "10", "--save_path", str(tmp_path),
                        "--exp", "r"]
    crash_in_round(args, monkeypatch, round_idx=2)  # rounds 0 and 1 released, nothing checkpointed
    folder = next(tmp_path.rglob("r"))
    assert sorted(p.name for p in folder.iterdir()) == ["releases.json"]
    assert fed_train.main(args) == 0  # starts afresh, and charges what the first attempt released
    assert nb.summary_of(tmp_path, "r")["privacy"]["rounds_charged"] == 5


def test_23_seeded_runs_journal_nothing(tmp_path, monkeypatch):
    from tests.test_loop import crash_in_round
    args = TINY + DP + ["--rounds", "4", "--ckpt_every", "2", "--save_path", str(tmp_path), "--exp", "r"]
    crash_in_round(args, monkeypatch, round_idx=3)
    assert fed_train.main(args + ["--resume"]) == 0  # the repeat of round 2 releases the same again
    assert nb.summary_of(tmp_path, "r")["privacy"]["rounds_charged"] == 4
    assert not list(tmp_path.rglob("releases.json"))


# 24. the hospital unit is charged with the largest sub-client count when counts differ
def test_24_the_hospital_is_charged_with_its_largest_subclient_count():
    from privacy.accountants import Sampling
    from privacy.client_dp import ReleasePlan
    from privacy.events import RoundShape
    charges = ReleasePlan(Sampling("all", 1.0, 3, 3)).declare(2.0, RoundShape((1, 3, 2), "hash", False)).charges
    assert charges["hospital"].multiplier == pytest.approx(2.0 / 3)
    assert charges["subclient"].multiplier == pytest.approx(2.0)


# 25. DP-SGD: the noise Opacus draws has the std the ledger charges
def test_25_dp_sgd_draws_noise_of_the_charged_std():
    cxr = ["--data", "synthetic-cxr", "--train_size", "64", "--val_size", "8", "--test_size", "8", "--img_size", "16",
           "--batch", "8", "--rounds", "1", "--model", "resnet9_small", "--no_progress", "--threads", "1",
           "--dp_level", "sample", "--sample_noise", "1.3", "--max_grad_norm", "0.7"]
    fed = nb.build(cxr)
    optimizer = fed.trainer.optimizer
    noise = []
    real = type(optimizer).add_noise

    def add_noise(self):
        real(self)
        noise.extend((p.grad - p.summed_grad).flatten() for p in self.params)

    with mock.patch.object(type(optimizer), "add_noise", add_noise):
        loop.run_round(fed, loop.initial_state(fed), loop.subclient_data(fed, loop.initial_state(fed)), 0)
    drawn = torch.cat(noise)
    assert drawn.numel() > 10_000
    assert float(drawn.std()) == pytest.approx(1.3 * 0.7, rel=0.02)
    assert fed.ledger.accounts["sample/" + fed.data.hospitals[0].name].history[0][0] == 1.3


# 26. local training randomness comes from --seed under --secure_rng too: the report says so
def test_26_the_report_says_local_training_randomness_is_seeded(tmp_path):
    summary = run(TINY + DP + ["--secure_rng", "--rounds", "1"], tmp_path)
    report = summary["privacy_report"]
    lines = report["covered"] + report["post_processing"] + report["not_covered"]
    assert any(line.startswith("local training randomness") and "--seed" in line for line in lines)
