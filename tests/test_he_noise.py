"""--secure_agg ckks|cyclic with --noise_at clients: each input carries a Gaussian share
added before it is encrypted. The shares' noise on the decrypted sum (Monte Carlo), the
charge (rebuilt and composed by dp-accounting directly), the real neighbouring pair, and
the flags it refuses."""
import math

import numpy as np
import pytest
import torch

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from federated import loop
from federated.config import parse_config
from federated.messages import UPDATE
from federated.setup import build_federation
from privacy.he.shares import GaussianShares
from privacy.secagg.distributed import DistributedNoise
from tests.conftest import TINY
from tests.test_loop import _run

Z, SIGMA_S = 1.0, 5.0
SHARED = ["--mode", "dpsgd", "--strict_dp", "--noise_multiplier", str(Z), "--norm_sum_noise", str(SIGMA_S), "-VN", "2",
          "--noise_at", "clients"]


def _inputs_and_total(fed):
    """Round 0: every input as its sub-client sent it (before encryption) and the decrypted sum."""
    sent = {}
    fed.pipeline.hooks.append(lambda m: sent.__setitem__(m.sender, m.payload.clone()) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    return sent, fed.pipeline.encrypted.last.total


def test_each_share_is_the_central_noise_divided_among_the_expected_inputs():
    shares = GaussianShares(DistributedNoise(2.0, 4.0))
    assert shares.share_std(clip=3.0, weight=0.25, expected=9) == pytest.approx(2.0 * 3.0 * 0.25 / 3, rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.stack([shares.draw(200_000, 3.0, 0.25, 9, gen, secure=False) for _ in range(9)])
    assert float(drawn.std()) == pytest.approx(0.5, rel=0.01)
    assert float(drawn.sum(0).std()) == pytest.approx(2.0 * 3.0 * 0.25, rel=0.01)  # the central std, all arriving
    assert drawn.dtype == torch.float64


def test_a_unit_is_charged_as_replaced_by_the_shares_of_the_others():
    noise = DistributedNoise(Z, SIGMA_S)
    shares = GaussianShares(noise)
    events = shares.events(expected=6, inputs=6, unit_inputs={"subclient": 1, "hospital": 2, "paper split": 3})
    side = math.sqrt(1 + (Z / SIGMA_S) ** 2)
    # std of the others' noise over the distance of a replaced unit's n inputs
    assert events["subclient"].noise_multiplier == pytest.approx(Z * math.sqrt(5 / 6) / (2 * 1 * side), rel=1e-12)
    assert events["hospital"].noise_multiplier == pytest.approx(Z * math.sqrt(4 / 6) / (2 * 2 * side), rel=1e-12)
    assert events["paper split"].noise_multiplier == pytest.approx(Z * math.sqrt(3 / 6) / (2 * 3 * side), rel=1e-12)
    alone = shares.events(expected=1, inputs=1, unit_inputs={"subclient": 1})
    assert alone["subclient"] == dp_accounting.GaussianDpEvent(0.0)  # its own share protects nobody from it


@pytest.mark.parametrize("kind", ["ckks", "cyclic"])
def test_the_decrypted_sum_carries_the_noise_it_is_charged_for(tiny_args, kind):
    """Monte Carlo over the model's coordinates: the decrypted sum minus the exact sum of
    the same clipped, weighted inputs (the shares removed) has the std of the central
    release, z C w per coordinate, when every expected input arrives."""
    fed = build_federation(parse_config(tiny_args + SHARED + ["--secure_agg", kind]))
    sent, total = _inputs_and_total(fed)
    numel = fed.trainer.flat.vector.numel()
    assert len(sent) == 6
    exact = torch.stack(list(sent.values())).sum(0)
    assert float((total - exact).abs().max()) < 1e-5  # what was sent already holds the shares: the sum is exact
    shares = torch.stack([s[:numel] for s in sent.values()])
    w = 1 / 6
    # each input's clipped update (norm <= w C over thousands of coordinates) is small next to its share
    assert numel > 2000
    assert float(shares.std()) == pytest.approx(Z * fed.cfg.S * w / math.sqrt(6), rel=0.05)
    assert float(shares.sum(0).std()) == pytest.approx(Z * fed.cfg.S * w, rel=0.06)


def test_a_run_spends_the_epsilon_dp_accounting_gives_its_gaussian_shares(tiny_args):
    summary = _run(tiny_args + SHARED + ["--secure_agg", "ckks"], "--exp", "shares")["summary"]
    side = math.sqrt(1 + (Z / SIGMA_S) ** 2)
    rounds, delta = 3, parse_config(TINY + SHARED + ["--secure_agg", "ckks"]).delta
    for unit, n in (("subclient", 1), ("hospital", 2)):
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.GaussianDpEvent(Z * math.sqrt((6 - n) / 6) / (2 * n * side)), rounds)
        rdp = rdp_privacy_accountant.RdpAccountant()
        rdp.compose(event)
        pld = pld_privacy_accountant.PLDAccountant()
        pld.compose(event)
        got = summary["privacy"]["epsilon"][unit]
        assert got["rdp"] == pytest.approx(rdp.get_epsilon(delta), rel=1e-6)
        assert got["pld"] == pytest.approx(pld.get_epsilon(delta), rel=1e-3)
    central = _run(tiny_args + SHARED[:-2] + ["--secure_agg", "ckks"], "--exp", "central")["summary"]
    assert summary["privacy"]["epsilon"]["subclient"]["rdp"] > central["privacy"]["epsilon"]["subclient"]["rdp"]
    report = summary["privacy_report"]["threat_model"]
    assert "Gaussian share before it is encrypted" in report and "protected as replaced" in report


def test_bounded_mode_declares_what_the_round_charges(tiny_args):
    fed = build_federation(parse_config(tiny_args + SHARED + ["--secure_agg", "ckks"]))
    declared = fed.pipeline.declare([2, 2, 2])
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert fed.ledger.accounts["client/subclient"].events[-1] == declared.events["subclient"]
    assert fed.ledger.accounts["client/hospital"].events[-1] == declared.events["hospital"]


def test_canaries_count_in_the_expected_inputs_and_the_shares_that_arrive(tiny_args):
    """With an audit's 4 canaries the shares are sized for 10 expected inputs; the charge
    declared beforehand counts the 6 hospital inputs, and the round states the share of
    the noise that arrived (the canaries whose secret bit is in)."""
    fed = build_federation(parse_config(tiny_args + SHARED + ["--secure_agg", "ckks", "--audit_canaries", "4"]))
    declared = fed.pipeline.declare([2, 2, 2])
    side = math.sqrt(1 + (Z / SIGMA_S) ** 2)
    assert declared.events["subclient"].noise_multiplier == pytest.approx(Z * math.sqrt(5 / 10) / (2 * side), rel=1e-12)
    state = loop.initial_state(fed)
    _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    inputs = fed.pipeline.encrypted.rounds[-1]["inputs"]
    assert 6 < inputs < 10 and stats["noise_survived"] == pytest.approx(inputs / 10, rel=1e-12)
    assert stats["noise_std"] == pytest.approx(Z * fed.cfg.S / 10 * math.sqrt(inputs / 10), rel=1e-6)


@pytest.mark.parametrize("removed", [0, 2])
def test_a_hospital_removed_moves_the_decrypted_sum_by_its_own_inputs_only(tiny_args, removed, monkeypatch):
    """The real neighbouring pair, with the shares switched off: the decrypted sums differ
    by the removed hospital's inputs (to CKKS's precision), each within the norm its charge
    uses; with the shares on, the noise it does not know has the std charged."""
    import privacy.he.shares as shares_module
    from tests import neighbours as nb
    args = tiny_args + SHARED + ["--secure_agg", "ckks"]
    monkeypatch.setattr(shares_module, "gaussian_noise", lambda n, std, gen, *, secure: torch.zeros(n))
    world_fed = nb.build(args)
    sent, world = _inputs_and_total(world_fed)
    _, other = _inputs_and_total(nb.build(args, nb.without_hospital(removed)))
    own = sum(x for (h, _), x in sent.items() if h == removed)
    assert float(torch.linalg.vector_norm(world - other - own)) < 1e-5
    bound = GaussianShares(DistributedNoise(Z, SIGMA_S)).input_norm(world_fed.cfg.S, 1 / 6)
    for x in sent.values():
        assert float(torch.linalg.vector_norm(x)) <= bound * (1 + 1e-6)


def test_every_input_is_within_the_norm_its_charge_assumes(tiny_args, monkeypatch):
    """Clipped updates (--S 0.01): the float32 clip ends up to ~2e-5 above C on tens of
    thousands of coordinates; each input is clipped again in float64 before its share."""
    import privacy.he.shares as shares_module
    monkeypatch.setattr(shares_module, "gaussian_noise", lambda n, std, gen, *, secure: torch.zeros(n))
    fed = build_federation(parse_config(tiny_args + SHARED + ["--secure_agg", "ckks", "--S", "0.01"]))
    sent, _ = _inputs_and_total(fed)
    bound = GaussianShares(DistributedNoise(Z, SIGMA_S)).input_norm(0.01, float(torch.tensor(1 / 6)))
    norms = [float(torch.linalg.vector_norm(x)) for x in sent.values()]
    assert all(n <= bound * (1 + 1e-12) for n in norms) and min(norms) > bound * (1 - 1e-4)  # all clipped
    numel, w = fed.trainer.flat.vector.numel(), 1 / 6
    for x in sent.values():  # the weighted clipped update, and its norm times w z / sigma_s
        assert float(torch.linalg.vector_norm(x[:numel])) == pytest.approx(w * 0.01, rel=1e-4)
        assert float(x[numel]) == pytest.approx(w * Z / SIGMA_S * 0.01, rel=1e-4) and float(x[numel + 1]) == 0


def test_the_released_norm_sum_is_the_inputs_clipped_norms(tiny_args, monkeypatch):
    """With the shares switched off, the norm statistic the intermediary rule reads is the
    sum of the clipped norms of what was sent: the side coordinate's scale is undone."""
    import privacy.he.shares as shares_module
    monkeypatch.setattr(shares_module, "gaussian_noise", lambda n, std, gen, *, secure: torch.zeros(n))
    fed = build_federation(parse_config(tiny_args + SHARED + ["--secure_agg", "ckks"]))
    sent = {}
    fed.pipeline.hooks.append(lambda m: sent.__setitem__(m.sender, m.payload.clone()) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    numel, w = fed.trainer.flat.vector.numel(), 1 / 6
    clipped = sum(float(torch.linalg.vector_norm(x[:numel])) / w for x in sent.values())
    # the clipped norm is the float32 norm of ~60k coordinates (2e-5 relative from the float64 one)
    assert stats["norm_sum"] == pytest.approx(clipped, rel=1e-4)
    assert stats["noise_survived"] == 1.0 and stats["noise_std"] == pytest.approx(Z * fed.cfg.S * w, rel=1e-12)


@pytest.mark.parametrize("flags, message", [
    (SHARED + ["--secure_agg", "ckks", "-sr", "0.5"], "--noise_at clients with --secure_agg ckks needs -sr 1"),
    (SHARED[:3] + ["--epsilon", "5"] + SHARED[5:] + ["--secure_agg", "ckks"],
     "--noise_at clients takes --noise_multiplier z"),
    (SHARED + ["--secure_agg", "cyclic", "--adaclip"], "--noise_at clients with --adaclip is not served"),
    (["--noise_at", "clients", "--secure_agg", "ckks"], "and client-level DP with --strict_dp"),
])
def test_shares_refuse_what_they_cannot_serve(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + flags)
    assert message in capsys.readouterr().err
    assert np is not None
