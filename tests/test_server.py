"""Server optimizers: each step against a hand-computed one, and their wiring in the loop."""
import math

import pytest
import torch

import fed_train
import federated.loop as loop
from federated.config import MODES, parse_config
from federated.server import DP2RMSPropServer, FedAdamServer, FedAvgServer, FedNovaServer, ServerRound
from federated.setup import build_federation
from tests.test_loop import _run, crash_in_round


def _round(index=0, weights=(0.5, 0.5), steps=(1, 1)):
    return ServerRound(index, torch.tensor(weights), torch.tensor(steps, dtype=torch.float32))


def test_fedavg_adds_the_update():
    w = torch.tensor([1.0, 2.0])
    assert torch.equal(FedAvgServer().step(w, torch.tensor([0.5, -1.0]), _round()), torch.tensor([1.5, 1.0]))


def test_fedadam_two_steps_by_hand():
    server = FedAdamServer(0.1)
    w = torch.tensor([1.0, -1.0])
    g1, g2 = torch.tensor([0.2, -0.4]), torch.tensor([-0.1, 0.3])
    w1 = server.step(w, g1, _round(0))
    # m = 0.1 g1, v = 0.01 g1^2 -> m / sqrt(v) = sign(g1): each coordinate moves by lr
    assert w1.tolist() == pytest.approx([1.1, -1.1], abs=1e-6)
    w2 = server.step(w1, g2, _round(1))
    m = [0.9 * 0.1 * 0.2 + 0.1 * -0.1, 0.9 * 0.1 * -0.4 + 0.1 * 0.3]
    v = [0.99 * 0.01 * 0.04 + 0.01 * 0.01, 0.99 * 0.01 * 0.16 + 0.01 * 0.09]
    expected = [1.1 + 0.1 * m[0] / (math.sqrt(v[0]) + 1e-9), -1.1 + 0.1 * m[1] / (math.sqrt(v[1]) + 1e-9)]
    assert w2.tolist() == pytest.approx(expected, rel=1e-5)


def test_fednova_normalises_by_steps_and_rescales_by_tau_eff():
    server = FedNovaServer()
    rnd = _round(weights=(0.5, 0.5), steps=(2, 4))
    deltas = torch.tensor([[2.0, 4.0], [4.0, -8.0]])
    sent = server.precondition(deltas, rnd)
    assert sent.tolist() == [[1.0, 2.0], [1.0, -2.0]]  # Delta_i / tau_i
    update = rnd.weights @ sent  # the (here noiseless) aggregate of what was sent
    w = server.step(torch.zeros(2), update, rnd)
    # tau_eff = 0.5 * 2 + 0.5 * 4 = 3;  w = 3 * (0.5 * [1, 2] + 0.5 * [1, -2]) = [3, 0]
    assert w.tolist() == pytest.approx([3.0, 0.0])


def test_fednova_equals_fedavg_when_steps_are_equal():
    rnd = _round(weights=(0.5, 0.5), steps=(3, 3))
    deltas = torch.tensor([[0.3, 0.6], [0.9, -0.3]])
    nova = FedNovaServer()
    w_nova = nova.step(torch.zeros(2), rnd.weights @ nova.precondition(deltas, rnd), rnd)
    w_avg = FedAvgServer().step(torch.zeros(2), rnd.weights @ deltas, rnd)
    assert torch.allclose(w_nova, w_avg)


def test_dp2_rmsprop_schedule_by_hand():
    """interval 2: rounds 0-1 accumulate (lr 1) and set A at round 1; rounds 2-3 are
    preconditioned (lr rmsprop_lr); rounds 4-5 accumulate again and update A with gamma."""
    server = DP2RMSPropServer(0.5, interval=2, gamma=0.9, eps=0.0)
    w = torch.zeros(2)
    u0, u1 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    assert not server.adaptive(0) and server.precondition(u0[None], _round(0)).tolist() == [u0.tolist()]
    w = server.step(w, u0, _round(0))
    w = server.step(w, u1, _round(1))
    assert w.tolist() == [4.0, 0.0]                   # two plain steps
    assert server.A.tolist() == [4.0, 0.0]            # ((u0 + u1) / 2)^2 = [2, 0]^2
    assert server.adaptive(2) and server.adaptive(3) and not server.adaptive(4)
    server.A = torch.tensor([4.0, 0.25])              # avoid a zero denominator for the check
    sent = server.precondition(torch.tensor([[2.0, 1.0]]), _round(2))
    assert sent.tolist() == [[1.0, 2.0]]              # delta / sqrt(A)
    w = server.step(w, torch.tensor([1.0, 2.0]), _round(2))
    assert w.tolist() == [4.5, 1.0]                   # w + 0.5 * update
    w = server.step(w, torch.tensor([0.0, 0.0]), _round(3))
    u4, u5 = torch.tensor([2.0, 2.0]), torch.tensor([0.0, 2.0])
    w = server.step(w, u4, _round(4))
    w = server.step(w, u5, _round(5))
    # A = 0.9 * [4, 0.25] + 0.1 * ([1, 2])^2
    assert server.A.tolist() == pytest.approx([0.9 * 4 + 0.1 * 1, 0.9 * 0.25 + 0.1 * 4])
    assert w.tolist() == [6.5, 5.0]


def test_dp2_rule_reads_clipped_norms_in_preconditioned_rounds():
    server = DP2RMSPropServer(1.0, interval=1)
    stats = {"norm_sum": 9.0, "clipped_norm_sum": 4.0}
    assert server.rule_stats(stats, _round(0))["norm_sum"] == 9.0
    server.A = torch.ones(2)
    assert server.rule_stats(stats, _round(1))["norm_sum"] == 4.0


def test_server_state_round_trips():
    server = DP2RMSPropServer(0.1, interval=1)
    server.step(torch.zeros(3), torch.ones(3), _round(0))
    copy = DP2RMSPropServer(0.1, interval=1)
    copy.load_state_dict(server.state_dict())
    assert torch.equal(copy.A, server.A) and copy.adaptive(1)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_end_to_end(tiny_args, mode):
    extra = ["--noise_multiplier", "0.5", "--adaclip", "--ada_vn"] if mode.startswith("dp") else []
    out = _run(tiny_args, "--mode", mode, "--dp2_interval", "1", *extra)
    assert out["summary"]["rounds_run"] == 3
    assert 0.0 <= out["summary"]["test"]["auc"] <= 1.0


@pytest.mark.parametrize("mode", ["dpadam", "dp2rmsprop"])
def test_resume_restores_the_server_state(tiny_args, monkeypatch, mode):
    args = tiny_args + ["--rounds", "4", "--mode", mode, "--noise_multiplier", "0.5", "--dp2_interval", "1"]
    full = _run(args, "--exp", "full")
    crash_in_round(args + ["--exp", "resumed"], monkeypatch)
    resumed = _run(args, "--exp", "resumed", "--resume")
    assert resumed["metrics"] == full["metrics"]


def test_dpnova_clips_the_normalised_updates(tiny_args):
    """The privacy mechanism receives Delta_k / tau_k: the clip bound, the noise and the
    rule's norm sum all refer to the normalised updates, as in the paper's code."""
    cfg = parse_config(tiny_args + ["--mode", "dpnova", "--noise_multiplier", "0.5", "-VN", "2", "--batch", "4"])
    fed = build_federation(cfg)
    seen = {}
    real_update = fed.trainer.update

    def spy_update(*args, **kwargs):
        result = real_update(*args, **kwargs)
        seen.setdefault("raw", []).append((result.delta.clone(), result.num_steps))
        return result

    fed.trainer.update = spy_update
    fed.pipeline.hooks.append(lambda m: seen.setdefault(m.kind, []).append(m.payload.clone()))
    state = loop.initial_state(fed)
    _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    expected = torch.stack([d / s for d, s in seen["raw"]])
    norms = torch.linalg.vector_norm(expected, dim=1)
    assert torch.allclose(torch.stack(seen["norm"]), norms)  # what the median clip and the rule read
    assert torch.allclose(torch.stack(seen["update"]), expected * torch.clamp(10.0 / norms, max=1.0)[:, None])
    assert stats["norm_sum"] == pytest.approx(float(norms.sum()), rel=1e-5)


def test_dpnova_report_lists_step_counts_as_not_covered(tiny_args, capsys):
    assert fed_train.main(tiny_args + ["--mode", "dpnova", "--noise_multiplier", "0.5"]) == 0
    assert "tau_eff" in capsys.readouterr().out


def test_server_flags_are_validated(tiny_args, capsys):
    for flag, value in (("--adam_lr", "0"), ("--rmsprop_lr", "-1"), ("--dp2_interval", "0")):
        with pytest.raises(SystemExit):
            parse_config(tiny_args + [flag, value])
        assert flag in capsys.readouterr().err
