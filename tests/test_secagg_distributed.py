"""--noise_at clients: the shares' noise on the decoded sum, each input's bound, the charge
of what survived, and the run against the central release at the same z."""
import math

import numpy as np
import pytest
import torch

import dp_accounting

from federated import loop
from federated.config import parse_config
from federated.setup import build_federation
from privacy.secagg.aggregate import RingRound, SecAggSettings, SecureAggregation
from privacy.secagg.distributed import DistributedNoise, rounded_norm_bound
from privacy.secagg.protocol import SecAggParams, secure_sum
from privacy.secagg.ring import from_ring
from tests.conftest import TINY
from tests.test_loop import _run

DISTRIBUTED = ["--mode", "dpsgd", "--strict_dp", "--noise_multiplier", "1.0", "-VN", "2", "--secure_agg", "secagg+",
               "--noise_at", "clients"]


def _ring(noise, k, dim=20_000, clip=1.0, bits=32):
    weight = 1.0 / k
    secure = SecureAggregation(SecAggSettings(bits=bits), seed=0)
    code = secure.code(0, dim, update_norm=clip, side_norm=weight * noise.side_scale * clip, clients=k,
                       noise_std=noise.central_std(clip, weight))
    return RingRound(code, noise.input_bound(code, clip, weight), noise.share_mu(code, clip, weight, k),
                     weight * noise.side_scale, noise.input_norm(clip, weight)), weight


@pytest.mark.parametrize("dropped", [0, 3])
def test_the_shares_that_reach_the_sum_give_the_noise_charged(dropped):
    """Monte Carlo: k zero updates, each with its share; the decoded sum's per-coordinate
    variance is (z C w)^2 x survivors / k, the noise the round is charged with."""
    k, z = 8, 1.5
    noise = DistributedNoise(z, 5.0)
    ring, weight = _ring(noise, k)
    inputs = [SecureAggregation.encode(ring, torch.zeros(ring.code.dim - 2), (0.0, 0.0),
                                       torch.Generator().manual_seed(u)) for u in range(k)]
    drops = {"mask": set(range(dropped))}
    result = secure_sum(inputs, SecAggParams(k, k - 1, 4, ring.code.bits), np.random.default_rng(0), drops)
    decoded = ring.code.decode(result.total)
    expected = noise.central_std(1.0, weight) ** 2 * (k - dropped) / k
    # 20k coordinates: the sample variance's relative standard error is ~1%
    assert float(decoded.var()) == pytest.approx(expected, rel=0.05)
    # the charge: rho ~ D2^2 / (2 mu) with mu the surviving shares' variance in ring units
    event = noise.events(ring.code, 1.0, weight, k, k - dropped, {"subclient": 1})["subclient"]
    others = ring.noise_mu * (k - dropped - 1)  # a sub-client's own share is known to it
    assert event.rho == pytest.approx((2 * ring.input_bound) ** 2 / (2 * others) * (1 + 1 / others), rel=1e-12)
    assert ring.noise_mu * (k - dropped) * ring.code.step ** 2 == pytest.approx(expected, rel=1e-12)
    alone = noise.events(ring.code, 1.0, weight, k, 1, {"subclient": 1})["subclient"]
    assert alone == dp_accounting.GaussianDpEvent(0.0)  # nobody else's noise: no guarantee


def test_each_input_stays_within_the_bound_it_is_charged_for():
    noise = DistributedNoise(1.0, 5.0)
    ring, weight = _ring(noise, 4, dim=3000, bits=24)
    x = torch.randn(ring.code.dim - 2, generator=torch.Generator().manual_seed(0))
    x = x / torch.linalg.vector_norm(x) * weight  # a clipped update at the bound, weighted
    quiet = RingRound(ring.code, ring.input_bound, 0.0, ring.side_scale, ring.input_norm)
    for seed in range(10):
        encoded = SecureAggregation.encode(quiet, x, (weight * noise.side_scale * 1.0, 0.0),
                                           torch.Generator().manual_seed(seed))
        assert float(torch.linalg.vector_norm(from_ring(encoded, 24))) <= ring.input_bound


def test_the_rounding_bound_is_kairouz_et_al_s():
    c, d = 100.0, 1024
    expected = math.sqrt(c ** 2 + d / 4 + math.sqrt(2 * 0.5) * (c + math.sqrt(d) / 2))
    assert rounded_norm_bound(c, d) == pytest.approx(expected, rel=1e-12)
    x = torch.full((d,), c / math.sqrt(d)) + 0.5  # half-way between integers: the most rounding noise
    gen = torch.Generator().manual_seed(0)
    draws = [float(torch.linalg.vector_norm(torch.floor(x) + (torch.rand(d, generator=gen) < 0.5))) for _ in range(200)]
    assert np.mean(np.array(draws) <= rounded_norm_bound(float(torch.linalg.vector_norm(x)), d)) >= 1 - math.exp(-0.5)


def test_a_distributed_run_is_charged_its_zcdp_events_as_dp_accounting_composes_them(tiny_args):
    """Each round's charge, rebuilt from the run's public ring code and composed by
    dp-accounting's own RDP accountant, is the epsilon the run reports."""
    from dp_accounting.rdp import rdp_privacy_accountant
    from privacy.secagg.skellam import l1_bound, zcdp_event
    run = _run(tiny_args + DISTRIBUTED, "--exp", "distributed")
    summary = run["summary"]
    fed = build_federation(parse_config(tiny_args + DISTRIBUTED))
    ring = fed.pipeline.secure_release.ring_round(0, torch.ones(6), fed.cfg.S, 1 / 6, 6.0, 6)
    others = ring.noise_mu * 5  # six inputs a round, one of them the sub-client's own
    event = zcdp_event(mu=others, l1=2 * l1_bound(ring.input_bound, ring.code.padded), l2=2 * ring.input_bound)
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, fed.cfg.rounds))
    assert summary["privacy"]["epsilon"]["subclient"]["rdp"] == pytest.approx(accountant.get_epsilon(fed.cfg.delta),
                                                                              rel=1e-9)
    # replaced, by the others' noise: dearer than the central release's add-or-remove at the same z
    central = _run(tiny_args + DISTRIBUTED[:-2], "--exp", "central")["summary"]["privacy"]["epsilon"]
    assert summary["privacy"]["epsilon"]["subclient"]["rdp"] > central["subclient"]["rdp"]
    assert "protected as replaced" in summary["privacy_report"]["threat_model"]


def test_a_round_is_charged_with_the_shares_that_survived(tiny_args):
    fed = build_federation(parse_config(tiny_args + DISTRIBUTED + ["--secagg_drops", "mask:0,1"]))
    state = loop.initial_state(fed)
    _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    full = build_federation(parse_config(tiny_args + DISTRIBUTED))
    full_state = loop.initial_state(full)
    loop.run_round(full, full_state, loop.subclient_data(full, full_state), 0)
    assert stats["noise_survived"] == pytest.approx(4 / 6)
    dropped = fed.ledger.accounts["client/subclient"].zcdp[-1]
    everyone = full.ledger.accounts["client/subclient"].zcdp[-1]
    assert dropped.rho / everyone.rho == pytest.approx(5 / 3, rel=1e-3)  # the others' shares: 3 against 5


def test_bounded_mode_plans_for_the_threshold_s_shares_only(tiny_args):
    fed = build_federation(parse_config(tiny_args + DISTRIBUTED))
    declared = fed.pipeline.declare([2, 2, 2])
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    charged = fed.ledger.accounts["client/subclient"].zcdp[-1]
    threshold = fed.pipeline.secure.settings.params(6).threshold
    assert declared.events["subclient"].rho == pytest.approx(charged.rho * 5 / (threshold - 1), rel=1e-3)


@pytest.mark.parametrize("flags, message", [
    (["--mode", "dpsgd", "--strict_dp", "--noise_multiplier", "1", "--noise_at", "clients"],
     "--noise_at clients needs --secure_agg (secagg+, ckks or cyclic)"),
    (DISTRIBUTED[:3] + ["--epsilon", "5"] + DISTRIBUTED[5:], "--noise_at clients takes --noise_multiplier z"),
    (DISTRIBUTED + ["--accountant", "pld"], "--noise_at clients is accounted by RDP"),
    (DISTRIBUTED + ["--adaclip"], "--noise_at clients with --adaclip is not served"),
    (DISTRIBUTED + ["--secure_rng"], "--noise_at clients with --secure_rng is not served"),
    (DISTRIBUTED + ["--balance_split"], "--noise_at clients with --balance_split is not served"),
])
def test_distributed_noise_refuses_what_it_cannot_serve(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + flags)
    assert message in capsys.readouterr().err


def test_an_input_a_little_over_its_clip_is_clipped_again_before_rounding():
    """A float32 clip leaves the norm up to ~1e-5 above C on millions of coordinates, far
    beyond the conditional rounding's slack (about half a ring unit): the input is clipped
    again in float64 to the norm it is charged for."""
    noise = DistributedNoise(1.0, 5.0)
    weight = 0.25
    secure = SecureAggregation(SecAggSettings(bits=32), seed=0)
    code = secure.code(0, 3000, update_norm=1.0, side_norm=weight * noise.side_scale, clients=4,
                       noise_std=noise.central_std(1.0, weight))
    ring = RingRound(code, noise.input_bound(code, 1.0, weight), 0.0, weight * noise.side_scale,
                     noise.input_norm(1.0, weight))
    x = torch.randn(3000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x / torch.linalg.vector_norm(x) * weight * (1 + 1e-5)
    vector = torch.cat([x, torch.tensor([weight * noise.side_scale, 0.0], dtype=torch.float64)])
    with pytest.raises(RuntimeError, match="conditional rounding found no rounding"):
        code.encode(vector, torch.Generator().manual_seed(1), bound=ring.input_bound)
    encoded = SecureAggregation.encode(ring, x, (weight * noise.side_scale, 0.0), torch.Generator().manual_seed(1))
    assert float(torch.linalg.vector_norm(from_ring(encoded, 32))) <= ring.input_bound


def _ring_sum(fed, monkeypatch):
    """Round 0 with every Skellam share zero: the ring sum and each sender's ring input."""
    import privacy.secagg.ring as ring_module
    monkeypatch.setattr(ring_module, "skellam_share", lambda size, mu, gen: torch.zeros(size, dtype=torch.int64))
    sent = {}
    fed.pipeline.hooks.append(lambda m: sent.__setitem__(m.sender, m.payload.numpy().view(np.uint64).copy()))
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    return fed.pipeline.secure.last.protocol.total, sent


@pytest.mark.parametrize("removed", [0, 2])
def test_a_hospital_removed_moves_the_ring_sum_by_its_own_inputs_only(tiny_args, removed, monkeypatch):
    """The real neighbouring pair: the federation with one hospital fewer, every other
    hospital's records, keys and draws as they were. Without the shares, the two ring sums
    differ by exactly the removed hospital's rounded inputs (the same public ring code,
    every other input rounded alike), each within the rounding bound its charge uses."""
    from tests import neighbours as nb
    args = tiny_args + DISTRIBUTED
    fed = nb.build(args)
    world, sent = _ring_sum(fed, monkeypatch)
    other, _ = _ring_sum(nb.build(args, nb.without_hospital(removed)), monkeypatch)
    bits = fed.pipeline.secure.last.protocol.server.params.bits
    own = sum((x for (h, _), x in sent.items() if h == removed), np.zeros_like(world))
    mask = np.uint64(2 ** bits - 1)
    assert np.array_equal((world - other) & mask, own & mask)
    bound = fed.pipeline.secure_release.ring_round(0, torch.ones(6), fed.cfg.S, 1 / 6, 6.0, 6).input_bound
    for (h, _), x in sent.items():
        assert float(torch.linalg.vector_norm(from_ring(x, bits))) <= bound


def test_the_protocol_parameters_of_a_round():
    from privacy.secagg.protocol import SecAggAbort
    auto = SecAggSettings(neighbours=4).params(10)
    assert (auto.degree, auto.threshold, auto.bits) == (4, 3, 32)  # a majority of 5 holders, plus one
    assert SecAggSettings().params(7).degree == 6 and SecAggSettings().params(7).threshold == 4
    small = SecAggSettings(neighbours=4).params(3)
    assert (small.degree, small.threshold) == (2, 2)
    assert SecAggSettings(threshold=3).params(3).threshold == 3
    with pytest.raises(SecAggAbort, match=r"stage 'advertise': 3 input\(s\) this round, each with 3 share holder"):
        SecAggSettings(threshold=5).params(3)
    with pytest.raises(SecAggAbort, match="fewer than the threshold 2"):
        SecAggSettings().params(1)


def test_drop_outs_by_rate_and_by_list():
    secure = SecureAggregation(SecAggSettings(dropout_rate=0.5, drops={"mask": (1, 40)}), seed=3)
    rng = np.random.default_rng(0)
    drops = secure._drops(20, rng)
    dropped = set().union(*drops.values())
    assert 1 in drops["mask"] and 40 not in dropped  # a listed position beyond the round's inputs is ignored
    assert 4 <= len(dropped - {1}) <= 16  # about half, at stages drawn uniformly
    assert secure._drops(20, np.random.default_rng(0)) == drops  # reproducible from the round's seed
    assert SecureAggregation(SecAggSettings(), seed=3)._drops(20, rng) == {s: set() for s in
                                                                           ("advertise", "share", "mask", "unmask")}


def test_each_unit_owns_its_inputs():
    from tests.dp_helpers import make_client_dp
    from privacy.accountants import Sampling
    from privacy.clipping import FixedClip
    everyone = Sampling("all", 1.0, 3, 3)
    hashed = make_client_dp(clip_policy=FixedClip(1.0), sampling=everyone, strict=True)
    paper = make_client_dp(clip_policy=FixedClip(1.0), sampling=everyone, strict=True, split="paper")
    assert hashed.unit_inputs([2, 3, 1]) == {"hospital": 3, "subclient": 1, "patient": 1}
    assert paper.unit_inputs([2, 3, 1]) == {"hospital": 3, "subclient": 1, "patient": 3}


def test_a_unit_of_n_inputs_is_charged_as_replaced_by_the_others_shares():
    from privacy.secagg.skellam import l1_bound, zcdp_event
    noise = DistributedNoise(1.0, 4.0)
    ring, weight = _ring(noise, 6, dim=1000)
    assert noise.input_norm(2.0, 0.5) == pytest.approx(0.5 * 2.0 * math.sqrt(1 + 0.25 ** 2), rel=1e-12)
    events = noise.events(ring.code, 1.0, weight, 6, 5, {"hospital": 2, "alone": 4})
    bound, share = ring.input_bound, ring.noise_mu
    assert events["hospital"] == zcdp_event(mu=share * 3, l1=4 * l1_bound(bound, ring.code.padded), l2=4 * bound)
    assert events["alone"] == zcdp_event(mu=share * 1, l1=8 * l1_bound(bound, ring.code.padded), l2=8 * bound)


def test_the_side_values_norm_and_the_cost_summary():
    from privacy.secagg.aggregate import side_norm
    assert side_norm(3.0) == pytest.approx(math.sqrt(10.0), rel=1e-12)
    secure = SecureAggregation(SecAggSettings(bits=16), seed=0)
    assert secure.summary() == {"rounds": 0}
    code = secure.code(0, 8, update_norm=1.0, side_norm=side_norm(1.0), clients=4)
    inputs = [secure.encode(RingRound(code), torch.zeros(8), (0.0, 0.0), torch.Generator().manual_seed(k))
              for k in range(4)]
    secure.combine(inputs, code, 0)
    secure.combine(inputs[:3], code, 1)
    summary = secure.summary()
    assert (summary["rounds"], summary["bits"], summary["mean_inputs"], summary["mean_included"]) == (2, 16, 3.5, 3.5)
    assert summary["mean_bytes_sent"] == pytest.approx(np.mean([r["bytes_sent"] for r in secure.rounds]))


def test_the_distributed_release_states_the_noise_that_survived():
    noise = DistributedNoise(1.5, 5.0)
    assert noise.central_std(2.0, 0.25) == pytest.approx(1.5 * 2.0 * 0.25)
    from tests.dp_helpers import make_client_dp
    from privacy.accountants import Sampling
    from privacy.clipping import FixedClip
    dp = make_client_dp(clip_policy=FixedClip(2.0), sampling=Sampling("all", 1.0, 3, 3), strict=True)
    total = torch.ones(100)
    result = dp.distributed_release(total, bound=2.0, noise_std=0.5, norm_sum=3.0)
    assert result.update is total  # the server adds nothing
    assert result.stats == {"clip_bound": 2.0, "noise_std": 0.5, "expected_noise_norm": pytest.approx(5.0),
                            "aggregate_norm": pytest.approx(10.0), "norm_sum": 3.0}
