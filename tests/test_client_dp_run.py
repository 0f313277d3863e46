"""Client-level DP inside full (tiny) runs of fed_train.py."""

import pytest
import torch
import torch.nn as nn

import federated.loop as loop
from federated.config import parse_config
from federated.flat import FlatState
from federated.privacy_setup import build_client_dp
from federated.setup import build_federation
from privacy.client_dp import RoundPlan
from privacy.ledger import PrivacyLedger
from tests.dp_helpers import charge_round
from tests.test_loop import _run, crash_in_round

DP = ["--mode", "dpsgd", "--adaclip", "--noise_multiplier", "1.0", "--delta", "0.01"]


def test_dp_run_reports_three_units_under_three_accountants(tiny_args):
    s = _run(tiny_args + DP + ["--ada_vn"])["summary"]
    p = s["privacy"]
    assert p["rounds_charged"] == 3 and p["delta"] == 0.01 and p["sample_rate"] == 1.0
    for unit in ("subclient", "hospital", "patient"):
        assert set(p["epsilon"][unit]) == {"rdp", "prv", "pld"}
        assert p["epsilon"][unit]["pld"] <= p["epsilon"][unit]["rdp"]
    assert p["epsilon"]["hospital"]["rdp"] >= p["epsilon"]["subclient"]["rdp"]
    assert p["epsilon"]["patient"]["rdp"] > p["epsilon"]["subclient"]["rdp"]
    assert any("median" in item for item in s["privacy_report"]["not_covered"])
    assert s["final_v"] >= 1


def test_per_round_privacy_log_ends_at_the_reported_epsilon(tiny_args):
    out = _run(tiny_args + DP + ["-VN", "2"])
    rows = [r.split(",") for r in out["metrics"].splitlines()[1:] if ",privacy," in r]
    last = {m: float(v) for rnd, _, _, m, v in rows if int(rnd) == 2}
    eps = out["summary"]["privacy"]["epsilon"]
    assert last["epsilon_subclient"] == pytest.approx(eps["subclient"]["rdp"])
    assert last["epsilon_hospital"] == pytest.approx(eps["hospital"]["rdp"])
    assert last["epsilon_patient"] == pytest.approx(eps["patient"]["rdp"])
    assert last["v"] == 2.0


def test_probe_round_is_charged_and_its_aggregate_discarded(tiny_args):
    cfg = parse_config(tiny_args + DP + ["--ada_vn"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    before = state.params.clone()
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert torch.equal(state.params, before)
    assert fed.ledger.releases("client/subclient") == 1
    loop.run_round(fed, state, loop.subclient_data(fed, state), 1)
    assert not torch.equal(state.params, before)


def test_resplit_hands_each_hospital_its_averaged_optimizer_state(tiny_args):
    cfg = parse_config(tiny_args + DP + ["--ada_vn", "-VN", "2"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    old = state.moments.state.exp_avg.clone()  # rows: hospital 0's two sub-clients first
    # a tiny noise-to-norm ratio gives a factor < 1: v drops from 2 to 1
    loop.adapt_subclients(fed, state, {"expected_noise_norm": 1e-6, "aggregate_norm": 1.0, "norm_sum": 1.0}, 1)
    assert state.v == 1 and state.subclient_counts == [1, 1, 1]
    assert sorted(state.subclient_indices[0][0].tolist()) == list(range(16))
    assert torch.allclose(state.moments.of(0, 0).exp_avg[0], old[0:2].mean(0))
    assert torch.allclose(state.moments.of(2, 0).exp_avg[0], old[4:6].mean(0))


def test_ledger_survives_a_crash_and_resume(tiny_args, monkeypatch):
    args = tiny_args + DP + ["--ada_vn", "--rounds", "4"]
    full = _run(args, "--exp", "full")
    crash_in_round(args + ["--exp", "resumed"], monkeypatch)
    checkpoint = torch.load(full["dir"].parent / "resumed" / "last.pt", weights_only=False)
    assert len(checkpoint["ledger"]["client/subclient"]["events"]) == 2
    resumed = _run(args, "--exp", "resumed", "--resume")
    assert resumed["metrics"] == full["metrics"]
    assert resumed["summary"]["privacy"]["epsilon"] == full["summary"]["privacy"]["epsilon"]


def test_bounded_run_stops_within_budget(tiny_args):
    s = _run(tiny_args + ["--mode", "dpsgd", "--S", "1", "--noise_multiplier", "2.0", "--epsilon", "4.0",
                          "--dp_mode", "bounded", "--rounds", "50"])["summary"]
    assert s["stopped_by_budget"] and 1 <= s["rounds_run"] < 50
    assert s["privacy"]["epsilon"]["subclient"]["rdp"] <= 4.0


def test_bounded_run_spends_its_budget_unit_by_its_accountant(tiny_args):
    """Bounded mode runs every round that keeps --target_unit within --epsilon by
    --accountant, and no more. Two sub-clients per hospital under the hash split: a patient
    moves one sub-client's update by 2C, so each round is a Gaussian of multiplier z / 2 = 1
    for the patient (the sub-client's is 2, so the sub-client unit would allow 9 rounds)."""
    import math

    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    def pld(rounds):  # q = 1: the rounds compose into one Gaussian of multiplier 1 / sqrt(rounds)
        acc = pld_privacy_accountant.PLDAccountant()
        return acc.compose(dp_accounting.GaussianDpEvent(1 / math.sqrt(rounds))).get_epsilon(1e-3)

    s = _run(tiny_args + ["--mode", "dpsgd", "-VN", "2", "--noise_multiplier", "2.0", "--epsilon", "9",
                          "--dp_mode", "bounded", "--target_unit", "patient", "--accountant", "pld",
                          "--delta", "1e-3", "--rounds", "20"])["summary"]
    rounds = s["privacy"]["rounds_charged"]
    assert s["stopped_by_budget"] and pld(rounds) <= 9 < pld(rounds + 1)  # 5 rounds; RDP would allow 4
    assert s["privacy"]["epsilon"]["patient"]["pld"] == pytest.approx(pld(rounds), rel=1e-3)


def test_epsilon_target_calibrates_the_noise(tiny_args):
    s = _run(tiny_args + ["--mode", "dpsgd", "--epsilon", "5.0", "--rounds", "3"])["summary"]
    assert 0 < s["privacy"]["epsilon"]["subclient"]["rdp"] <= 5.0


def test_batchnorm_running_statistics_are_privatised():
    """BatchNorm buffers are data statistics; they travel inside the clipped, noised vector."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 1, 8, 8))
    flat = FlatState(model)
    running = [i for i, name in enumerate(flat.names) if "running" in name]
    assert running
    offsets = torch.cumsum(torch.tensor([0] + [t.numel() for t in flat.tensors]), 0)
    cfg = parse_config(["--mode", "dpsgd", "--noise_multiplier", "1.0", "--S", "1.0"])
    dp = build_client_dp(cfg, PrivacyLedger(), [])  # no --epsilon: nothing to calibrate
    deltas = torch.zeros(5, flat.numel)
    out = dp.release(deltas, torch.full((5,), 0.2), RoundPlan(0.2, torch.Generator().manual_seed(0), 5))
    for i in running:
        assert out.update[offsets[i]:offsets[i + 1]].abs().sum() > 0  # noised like every other coordinate


@pytest.mark.parametrize("argv, expected", [
    (["--mode", "dpsgd"], "needs exactly one of --noise_multiplier z or --epsilon"),
    (["--ada_vn"], "--ada_vn needs a private --mode"),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--adaclip", "--noclip"], "exclude each other"),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--strict_dp", "--noclip"], "--strict_dp cannot"),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--delta", "1.5"], "--delta must be in [1e-10, 1)"),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--dp_mode", "bounded"], "needs both"),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--max_vn", "3"], "--max_vn caps the v"),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--ada_vn", "--max_vn", "-1"], "--max_vn must be"),
])
def test_bad_privacy_flags(argv, expected, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv)
    assert expected in capsys.readouterr().err


def test_a_round_without_participants_is_still_charged(tiny_args):
    cfg = parse_config(tiny_args + DP + ["--client_sampling", "poisson", "-sr", "0.3"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    shards = loop.subclient_data(fed, state)
    idle = 0
    for r in range(12):
        _, stats = loop.run_round(fed, state, shards, r)
        idle += stats["norm_sum"] == 0  # nobody sampled: no update norms
    assert idle  # P(no hospital of 3 sampled at q = 0.3) = 0.34 a round; seed 0 has such rounds
    assert fed.ledger.releases("client/subclient") == 12  # whether or not anyone was sampled


def test_strict_mode_reports_nothing_unnoised(tiny_args):
    out = _run(tiny_args + ["--mode", "dpsgd", "--adaclip", "--ada_vn", "--strict_dp", "--noise_multiplier", "1.0",
                            "--rounds", "4"])
    s = out["summary"]
    assert ",train," not in out["metrics"]  # no training losses leave a hospital
    assert ",clipped_fraction," not in out["metrics"]
    assert s["best_round"] == 3  # the final model, not one picked on unnoised val scores
    not_covered = [item.split(":")[0] for item in s["privacy_report"]["not_covered"]]
    # what remains: the rule's cap from hospital sizes (no --max_vn), scores of the final model,
    # diagnostics, the seeded randomness and simulation artefacts
    assert not_covered == ["intermediary cap", "randomness", "validation scores", "test scores", "hospital sizes",
                           "divergence stop", "checkpoint last.pt"]
    # update + norm sum + clip count, every round
    assert s["privacy"]["rounds_charged"] == 4


def test_faithful_mode_lists_the_unnoised_reports(tiny_args):
    s = _run(tiny_args + DP)["summary"]
    not_covered = " ".join(s["privacy_report"]["not_covered"])
    assert "training losses" in not_covered and "validation scores" in not_covered and "test scores" in not_covered


def test_idle_round_in_strict_mode_charges_every_planned_release(tiny_args):
    cfg = parse_config(tiny_args + ["--mode", "dpsgd", "--adaclip", "--strict_dp", "--noise_multiplier", "1.0"])
    dp = build_client_dp(cfg, PrivacyLedger(), [])
    charge_round(dp, [2, 2, 2])
    z_eff = (1 + 1 / 25 + 1 / 25) ** -0.5  # update, norm sum, count: one Gaussian
    assert dp.ledger.accounts["client/subclient"].history == [(pytest.approx(z_eff), 1.0, "sampled")]
    assert dp.ledger.accounts["client/hospital"].history == [(pytest.approx(z_eff / 2), 1.0, "sampled")]


def test_strict_flags_reach_the_mechanism(tiny_args):
    cfg = parse_config(tiny_args + ["--mode", "dpsgd", "--adaclip", "--strict_dp", "--noise_multiplier", "1.0",
                                    "--S", "3", "--clip_quantile", "0.7", "--clip_lr", "0.1",
                                    "--clip_count_noise", "2.5", "--norm_sum_noise", "4.0"])
    dp = build_client_dp(cfg, PrivacyLedger(), [])
    policy = dp.clip_policy
    assert (policy.bound, policy.quantile, policy.lr, policy.count_noise) == (3.0, 0.7, 0.1, 2.5)
    assert [r.std / r.sensitivity["subclient"] for r in dp.declare([1, 1, 1]).gaussians] == [1.0, 4.0, 2.5]


def test_probe_round_aggregate_reaches_the_server_optimizers_state_but_not_the_model(tiny_args):
    """The paper's code runs round 0's aggregate through the server optimizer and then restores
    the model only: FedAdam's moments (and DP2-RMSProp's accumulator) keep what it added."""
    cfg = parse_config(tiny_args + ["--mode", "dpadam", "--noise_multiplier", "1.0", "--ada_vn"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    before = state.params.clone()
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert torch.equal(state.params, before)
    assert fed.server.m is not None and fed.server.m.abs().sum() > 0
