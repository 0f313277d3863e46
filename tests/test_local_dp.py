"""Sample-level DP-SGD (Opacus) and local update DP inside each hospital."""
import copy

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer

from federated.adam import AdamMoments
import federated.loop as loop
from federated.config import ConfigError, parse_config
from federated.setup import build_federation
from privacy.accountants import Sampling, epsilon
from tests.test_loop import _run

CXR = ["--data", "synthetic-cxr", "--train_size", "48", "--val_size", "16", "--test_size", "16",
       "--img_size", "16", "--batch", "8", "--rounds", "2", "--model", "resnet9_small", "--no_progress"]
BLOOD = ["--data", "synthetic-blood", "-N", "3", "--train_size", "16", "--val_size", "8", "--test_size", "8",
         "--img_size", "16", "--batch", "8", "--rounds", "2", "--model", "dpresnet_small", "--no_progress"]


def test_dp_sgd_clips_every_per_sample_gradient(tmp_path, monkeypatch):
    cfg = parse_config(CXR + ["--save_path", str(tmp_path), "--dp_level", "sample", "--sample_noise", "0.0001",
                              "--max_grad_norm", "0.05"])
    fed = build_federation(cfg)
    checked = []
    real_pre_step = DPOptimizer.pre_step

    def spy(self, closure=None):
        per_sample = [p.grad_sample.clone() for p in self.params]  # filled by Opacus's hooks
        result = real_pre_step(self, closure)
        norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per_sample))
        factors = torch.clamp(0.05 / (norms + 1e-6), max=1.0)
        assert (norms > 0.05).any()  # the bound binds, so the check has teeth
        for g, p in zip(per_sample, self.params):
            expected = torch.einsum("i,i...->...", factors, g)
            assert torch.allclose(p.summed_grad, expected, rtol=1e-4, atol=1e-7)
        checked.append(len(norms))
        return result

    monkeypatch.setattr(DPOptimizer, "pre_step", spy)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert len(checked) == 48 // 8  # one check per DP-SGD step of the epoch


def test_sample_level_epsilon_is_opacus_on_the_steps_taken(tmp_path, monkeypatch):
    steps = []
    real_step = torch.optim.Adam.step

    def count(self, *args, **kwargs):  # Adam steps only when DPOptimizer does not skip
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", count)
    out = _run(CXR + ["--save_path", str(tmp_path), "--dp_level", "sample", "--sample_noise", "1.1"])
    report = out["summary"]["sample_privacy"]
    assert report["steps"] == {"hospital00": len(steps)} and len(steps) == 2 * 6
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(8 / 48, dp_accounting.GaussianDpEvent(1.1)), len(steps))
    expected = rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(1e-5)
    assert report["epsilon_max"]["rdp"] == pytest.approx(expected, rel=1e-9)
    opacus = RDPAccountant()
    opacus.history = [(1.1, 8 / 48, len(steps))]
    assert report["epsilon_max"]["rdp"] == pytest.approx(opacus.get_epsilon(1e-5), rel=0.05)
    assert "epsilon_sample_max" in out["metrics"]


def test_sample_epsilon_target_is_not_exceeded(tmp_path):
    out = _run(CXR + ["--save_path", str(tmp_path), "--dp_level", "sample", "--sample_epsilon", "4"])
    eps = out["summary"]["sample_privacy"]["epsilon_max"]["rdp"]
    assert 3.9 < eps <= 4.0


def test_physical_batches_take_the_same_logical_steps(tmp_path):
    args = CXR + ["--save_path", str(tmp_path), "--dp_level", "sample", "--sample_noise", "1.0"]
    a = _run(args, "--exp", "a")
    b = _run(args, "--exp", "b", "--physical_batch", "3")
    assert a["summary"]["sample_privacy"]["steps"] == b["summary"]["sample_privacy"]["steps"]


def test_sample_dp_combines_with_client_level_dp(tmp_path):
    out = _run(BLOOD + ["--save_path", str(tmp_path), "--dp_level", "sample", "--sample_noise", "1.0",
                        "--mode", "dpsgd", "--noise_multiplier", "1.0"])
    s = out["summary"]
    assert set(s["sample_privacy"]["epsilon_per_hospital"]) == {"hospital00", "hospital01", "hospital02"}
    assert s["privacy"]["epsilon"]["subclient"]["rdp"] > 0


def test_local_update_dp_noise_has_the_calibrated_std(tmp_path):
    """With a learning rate of ~0 each update is ~0, so what a hospital sends is the noise."""
    cfg = parse_config(BLOOD + ["--save_path", str(tmp_path), "--dp_level", "update_local",
                                "--local_epsilon", "8", "--local_clip", "0.5", "--lr", "1e-12"])
    fed = build_federation(cfg)
    z = fed.local_update_dp.z
    # calibrated over all --rounds: the planned releases spend at most the target, and not much less
    spent = epsilon([(z, 1.0)] * cfg.rounds, delta=1e-5, accountant="rdp", sampling=Sampling("all", 1.0, 1, 1),
                    relation="replace")
    assert 7.95 < spent <= 8.0
    sent = []
    fed.pipeline.hooks.append(lambda m: sent.append(m.payload.clone()) if m.kind == "update" else None)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    rows = torch.stack(sent)  # what left the hospitals
    assert rows.shape[0] == 3
    expected = z * 2 * 0.5
    for row in rows:  # each hospital's message separately
        assert row.std().item() == pytest.approx(expected, rel=0.02)
    report = fed.local_update_dp.report()
    assert (report["noise_std"], report["clip"]) == (pytest.approx(expected), 0.5)
    assert not torch.allclose(rows[0], rows[1])  # independent noise per sender


def test_local_update_dp_reports_both_units(tmp_path):
    out = _run(BLOOD + ["--save_path", str(tmp_path), "--dp_level", "update_local", "--local_noise", "2.0",
                        "--rounds", "3", "-VN", "2"])
    report = out["summary"]["local_privacy"]
    accounts = out["summary"]["privacy_report"]["accounts"]
    assert {h: accounts[f"local/{h}/subclient"]["releases"] for h in ("hospital00", "hospital01", "hospital02")} == \
        {"hospital00": 3, "hospital01": 3, "hospital02": 3}
    assert accounts["local/hospital00/hospital"]["releases"] == 6  # two sub-clients each
    assert any("training losses" in item for item in out["summary"]["privacy_report"]["not_covered"])
    acc = RDPAccountant()
    for _ in range(3):  # a sub-client (= each of its patients): one release a round
        acc.step(noise_multiplier=2.0, sample_rate=1.0)
    assert report["epsilon_max"]["rdp"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    for _ in range(3):  # the hospital as a whole: both sub-clients' messages, every round
        acc.step(noise_multiplier=2.0, sample_rate=1.0)
    assert report["epsilon_hospital_max"]["rdp"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert "epsilon_local_hospital_max" in out["metrics"]


@pytest.mark.parametrize("flags, message", [
    (["--dp_level", "sample"], "exactly one of --sample_noise"),
    (["--dp_level", "update_local", "--local_noise", "1", "--local_epsilon", "2"], "exactly one of --local_noise"),
    (["--sample_noise", "1.0"], "--sample_noise needs --dp_level sample"),
    (["--dp_level", "sample", "--sample_noise", "1", "--balance_split"], "--balance_split hands a sub-client"),
    (["--dp_level", "update_local", "--local_noise", "1", "--balance_split"], "--balance_split hands a sub-client"),
    (["--dp_level", "sample", "--sample_epsilon", "5", "--mode", "dpsgd", "--noise_multiplier", "1", "--ada_vn"],
     "give --sample_noise instead"),
])
def test_local_dp_flags_are_validated(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(BLOOD + flags)
    assert message in capsys.readouterr().err


def test_ghost_clipping_takes_the_same_steps_as_hooks(tmp_path):
    """Opacus's ghost clipping (norms only, two backward passes) gives the update that
    per-sample gradient hooks give: same clipped sum, same noise from the same stream."""
    deltas = {}
    for mode in ("hooks", "ghost"):
        cfg = parse_config(CXR + ["--save_path", str(tmp_path), "--dp_level", "sample", "--sample_noise", "0.5",
                                  "--max_grad_norm", "0.1", "--grad_sample_mode", mode])
        fed = build_federation(cfg)
        state = loop.initial_state(fed)
        shard = loop.subclient_data(fed, state)[0][0]
        fresh = AdamMoments.zeros(1, state.params.numel(), dtype=state.params.dtype, device=state.params.device)
        result = fed.trainer.update(state.params, shard, fresh, lr=1e-3, gen=torch.Generator().manual_seed(0))
        deltas[mode] = result.delta
    assert torch.allclose(deltas["hooks"], deltas["ghost"], atol=1e-5, rtol=1e-3)


def test_ghost_clipping_is_refused_for_segmentation(tmp_path):
    cfg = parse_config(["--data", "synthetic-prostate", "-N", "2", "--train_size", "8", "--img_size", "16",
                        "--batch", "4", "--dp_level", "sample", "--sample_noise", "1", "--grad_sample_mode", "ghost",
                        "--save_path", str(tmp_path)])
    with pytest.raises(ConfigError, match="grad_sample_mode hooks"):
        build_federation(cfg)


def test_dp_sgd_cost_prints_both_timings_and_their_ratio(capsys):
    from tools.dp_sgd_cost import main
    assert main(["--epochs", "1"] + CXR[:-1]) == 0
    out = capsys.readouterr().out
    assert "non-private" in out and "DP-SGD" in out and out.strip().endswith("x")


def test_dp_sgd_refuses_batchnorm_models(tmp_path):
    cfg = parse_config(["--data", "synthetic-prostate", "-N", "2", "--train_size", "8", "--img_size", "32",
                        "--batch", "4", "--model", "unet", "--dp_level", "sample", "--sample_noise", "1",
                        "--save_path", str(tmp_path)])
    with pytest.raises(ConfigError, match="GroupNorm model"):
        build_federation(cfg)


# --- pinned by mutation testing -------------------------------------------------------------
def test_sample_calibration_charges_the_largest_rate_and_the_most_steps():
    from privacy.accountants import Sampling, epsilon
    from privacy.sample_dp import sample_noise_multiplier
    # a one-record sub-client (q = 1, one step an epoch) next to an empty one and a 64-record one
    # (q = 1/4, four steps)
    z = sample_noise_multiplier(target_epsilon=3.0, delta=1e-5, subclient_sizes=[[1, 0, 64]], batch=16,
                                steps_per_round=1, rounds=2, accountant="rdp")
    spent = lambda z: epsilon([(z, 1.0)] * 8, delta=1e-5, accountant="rdp",  # noqa: E731
                              sampling=Sampling("poisson", 1.0, 1, 1))
    assert spent(z) <= 3.0 < spent(z * 0.995)
    with pytest.raises(ValueError, match="^--sample_epsilon 1e-09 is not reachable"):
        sample_noise_multiplier(target_epsilon=1e-9, delta=1e-5, subclient_sizes=[[4]], batch=8, steps_per_round=1,
                                rounds=1000, accountant="rdp")


def test_sample_charge_skips_subclients_that_took_no_step():
    from privacy.ledger import PrivacyLedger
    from privacy.sample_dp import charge_round, open_sample_accounts
    ledger = PrivacyLedger()
    open_sample_accounts(ledger, ["h0", "h1"], delta=1e-5)
    charge_round(ledger, 1.0, {"h0": [(1.0, 0)], "h1": [(1.0, 0), (0.75, 1), (0.5, 2)]})
    assert ledger.releases("sample/h0") == 0
    assert ledger.accounts["sample/h1"].history == [(1.0, 0.75, "sampled")] * 2  # the largest rate, the most steps
    report = ledger.report()["sample/h1"]
    assert report["unit"] == "record" and "record" in report["adjacency"]


def test_local_noise_calibration_names_its_flag():
    from privacy.local_update_dp import local_noise_multiplier
    with pytest.raises(ValueError, match="^--local_epsilon 1e-09 is not reachable"):
        local_noise_multiplier(target_epsilon=1e-9, rounds=1000, delta=1e-5, accountant="rdp")


def test_per_sample_loss_returns_the_batch_mean_unless_asked_per_sample():
    from privacy.sample_dp import PerSampleLoss
    loss = PerSampleLoss(torch.nn.CrossEntropyLoss())
    out, target = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1])
    per_sample = torch.nn.functional.cross_entropy(out, target, reduction="none")
    assert torch.allclose(loss(out, target), per_sample.mean())
    loss.reduction = "none"
    assert torch.allclose(loss(out, target), per_sample)
    with pytest.raises(ValueError, match="MSELoss"):
        PerSampleLoss(torch.nn.MSELoss())


def test_local_noise_comes_from_each_senders_own_generator():
    from privacy.ledger import PrivacyLedger
    from privacy.local_update_dp import LocalUpdateDP
    dp = LocalUpdateDP(noise_multiplier=1.0, clip_bound=1.0, delta=1e-5, secure=False, hospitals=["h"],
                       ledger=PrivacyLedger())
    deltas = torch.zeros(2, 1000)
    gens = lambda: [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]  # noqa: E731
    torch.manual_seed(0)
    a = dp.privatize(deltas, [0, 0], gens())
    torch.manual_seed(1)
    b = dp.privatize(deltas, [0, 0], gens())
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert dp.ledger.releases("local/h/subclient") == 2 and dp.ledger.releases("local/h/hospital") == 4
    report = dp.report()
    assert report["epsilon_max"]["pld"] < report["epsilon_max"]["rdp"]
    assert report["epsilon_hospital_max"]["pld"] < report["epsilon_hospital_max"]["rdp"]
    assert all(a["adjacency"] for a in dp.ledger.report().values())


def test_dp_sgd_refuses_batchnorm_without_affine_parameters(tmp_path):
    """The paper's BatchNorm has no parameters, so Opacus's validator passes it, but it still
    mixes the samples of a batch: DP-SGD must refuse it as it refuses any BatchNorm."""
    cfg = parse_config(["--data", "synthetic-ich", "-N", "2", "--train_size", "8", "--img_size", "64",
                        "--batch", "4", "--model", "densenet121", "--dp_level", "sample", "--sample_noise", "1",
                        "--save_path", str(tmp_path)])
    with pytest.raises(ConfigError, match="BatchNorm2d normalises with batch statistics"):
        build_federation(cfg)


@pytest.mark.parametrize("optimizer", ["nadam", "sgd"])
def test_dp_sgd_steps_as_the_stacked_optimizer(optimizer):
    """Noise 0, a clip bound that never binds and Poisson rate 1 make DP-SGD full-batch
    gradient descent, so the optimizer through Opacus must move the parameters as the
    stacked step does: NAdam with its state lent as views and its momentum product from
    the step count; SGD, which keeps no step count, with the row's count advanced by the
    steps taken."""
    from datasets.base import Shard, Split
    from federated.local import LocalTrainer
    from privacy.sample_dp import SampleDPSettings

    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(12, 1, 4, 4, generator=gen), torch.randint(0, 2, (12, 3), generator=gen).float())
    shard = Shard(split, torch.arange(12))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    loss = torch.nn.BCEWithLogitsLoss()
    twin = copy.deepcopy(model)  # each trainer re-homes its model's tensors
    dp = LocalTrainer(model, loss, batch=12, epochs=3, sample_dp=SampleDPSettings(0.0, 1e6, 0), optimizer=optimizer)
    plain = LocalTrainer(twin, loss, batch=12, epochs=3, optimizer=optimizer)
    start = dp.flat.get().clone()
    numel = start.numel()
    states = []
    for _ in range(2):  # a state that has already taken 5 steps, so the lent step count matters
        s = AdamMoments.zeros(1, numel, dtype=start.dtype, device=start.device)
        s.step[:] = 5
        s.exp_avg[:] = 0.01
        s.exp_avg_sq[:] = 1e-4
        states.append(s)
    a = dp.update(start, shard, states[0], lr=0.05, gen=torch.Generator().manual_seed(1))
    b = plain.update(start, shard, states[1], lr=0.05, gen=torch.Generator().manual_seed(1), in_order=True)
    assert a.num_steps == b.num_steps == 3 and states[0].step.item() == states[1].step.item() == 8
    torch.testing.assert_close(a.delta, b.delta, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(states[0].exp_avg, states[1].exp_avg, rtol=1e-4, atol=1e-7)
