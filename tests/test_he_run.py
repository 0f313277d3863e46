"""--secure_agg ckks|cyclic in a run: the plain model to CKKS's precision, the same epsilon,
a server that handles ciphertexts only, and bad flags refused."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from federated import loop
from federated.config import parse_config
from federated.messages import UPDATE
from federated.setup import build_federation
from tests.conftest import TINY
from tests.test_loop import _run
from tests.test_secagg_run import _final_params

PRIVATE = ["--mode", "dpsgd", "--strict_dp", "--noise_multiplier", "1.0", "-VN", "2"]


@pytest.mark.parametrize("kind", ["ckks", "cyclic"])
@pytest.mark.parametrize("flags", [[], PRIVATE], ids=["fedavg", "strict client-level DP"])
def test_the_encrypted_sum_gives_the_plain_model(tiny_args, kind, flags):
    plain, _ = _final_params(tiny_args + flags)
    encrypted, fed = _final_params(tiny_args + flags + ["--secure_agg", kind])
    assert float(torch.linalg.vector_norm(plain - encrypted)) <= 1e-5 * float(torch.linalg.vector_norm(plain))
    summary = fed.pipeline.encrypted.summary()
    assert summary["rounds"] == 3 and summary["kind"] == kind and summary["mean_bytes_sent"] > 0


@pytest.mark.parametrize("kind", ["ckks", "cyclic"])
def test_each_kind_runs_its_own_protocol_and_times_it(kind, monkeypatch):
    from privacy.he import aggregate
    rings = []
    original = aggregate.cyclic_sum
    monkeypatch.setattr(aggregate, "cyclic_sum", lambda *a, **k: rings.append(1) or original(*a, **k))
    encrypted = aggregate.EncryptedAggregation(kind)
    assert encrypted.summary() == {"rounds": 0, "kind": kind}
    inputs = [np.full(10, float(k)) for k in range(3)]
    start = time.perf_counter()
    total = encrypted.combine(inputs, 0).total
    elapsed = time.perf_counter() - start
    assert np.allclose(total.numpy(), 3.0, atol=1e-6) and len(rings) == (kind == "cyclic")
    summary = encrypted.summary()
    assert summary["rounds"] == 1 and summary["mean_inputs"] == 3 and 0 < summary["mean_seconds"] <= elapsed


def test_an_encrypted_private_run_spends_the_plain_run_s_epsilon(tiny_args):
    plain = _run(tiny_args + PRIVATE, "--exp", "plain")["summary"]
    ckks = _run(tiny_args + PRIVATE + ["--secure_agg", "ckks"], "--exp", "ckks")["summary"]
    assert ckks["privacy"]["epsilon"] == plain["privacy"]["epsilon"]
    assert "CKKS ciphertexts" in ckks["privacy_report"]["threat_model"]
    assert ckks["encrypted_aggregation"]["rounds"] == 3


def test_the_server_handles_ciphertexts_only(tiny_args):
    fed = build_federation(parse_config(tiny_args + PRIVATE + ["--secure_agg", "ckks"]))
    sent = []
    fed.pipeline.hooks.append(lambda m: sent.append(m) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    received = b"".join(fed.pipeline.encrypted.last.received)
    assert len(sent) == 6 and len(received) > 6 * 8 * sent[0].payload.numel()
    for m in sent:  # no input's values, in float32 or float64, appear in what the server handled
        assert m.payload.numpy().tobytes()[:64] not in received
        assert m.payload.double().numpy().tobytes()[:64] not in received


@pytest.mark.parametrize("kind", ["ckks", "cyclic"])
def test_the_hospitals_decrypt_only_a_sum_that_holds_the_central_noise(tiny_args, kind, monkeypatch):
    """--noise_at server: the server encrypts its Gaussian draw under the hospitals' public
    key and adds it to the encrypted sum, so what a hospital decrypts already holds the
    noise (std z C w per coordinate), and the released update is that decrypted sum."""
    from privacy.he import ckks
    decrypted = []
    original = ckks.HospitalKeys.decrypt
    monkeypatch.setattr(ckks.HospitalKeys, "decrypt",
                        lambda self, ct, n: decrypted.append(original(self, ct, n)) or decrypted[-1])
    fed = build_federation(parse_config(tiny_args + PRIVATE + ["--secure_agg", kind]))
    sent = []
    fed.pipeline.hooks.append(lambda m: sent.append(m.payload.clone()) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    numel = fed.trainer.flat.vector.numel()
    seen = torch.from_numpy(decrypted[-1])[:numel]
    exact = torch.stack(sent).sum(0)[:numel]
    # the cyclic initiator removes its mask after decrypting: what it decrypted is mask + noisy sum
    if kind == "cyclic":
        seen = fed.pipeline.encrypted.last.total[:numel]
    noise = seen - exact
    assert float(noise.std()) == pytest.approx(1.0 * fed.cfg.S / 6, rel=0.05)


def test_the_released_norm_sum_is_the_decrypted_one(tiny_args, monkeypatch):
    """With the server's noise switched off, the norm statistic is the decrypted sum of
    the inputs' clipped norms: nothing is added to it after decryption."""
    import privacy.client_dp as client_dp
    monkeypatch.setattr(client_dp, "gaussian_noise", lambda n, std, gen, *, secure, device=None: torch.zeros(n))
    fed = build_federation(parse_config(tiny_args + PRIVATE + ["--secure_agg", "ckks"]))
    sent = []
    fed.pipeline.hooks.append(lambda m: sent.append(m.payload.clone()) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    numel = fed.trainer.flat.vector.numel()
    assert stats["norm_sum"] == pytest.approx(float(sum(float(x[numel]) for x in sent)), abs=1e-6)


def test_an_encrypted_round_with_no_input_still_releases_the_noise(tiny_args):
    from federated.pipeline import ServerHalf
    from privacy.he.aggregate import EncryptedAggregation
    noise = np.random.default_rng(0).normal(size=12)
    total, sides = ServerHalf.combine_encrypted(EncryptedAggregation("ckks"), [], 10, torch.device("cpu"), 0,
                                                server_noise=noise)
    assert torch.equal(total, torch.from_numpy(noise[:10]).float())
    assert float(sides["clipped_norm"]) == pytest.approx(noise[10])


@pytest.mark.parametrize("flags, message", [
    (["-N", "2", "--secure_agg", "cyclic"], "--secure_agg cyclic needs at least 3 inputs"),
    (["--secure_agg", "cyclic", "-sr", "0.5"], "use -sr 1"),
    (["--secure_agg", "ckks", "--secagg_neighbours", "2"], "--secagg_neighbours needs --secure_agg secagg+"),
    (["--secure_agg", "ckks", "--mode", "dpsgd", "--noise_multiplier", "1.0"], "needs --strict_dp"),
    (PRIVATE + ["--secure_agg", "ckks", "--adaclip"], "--secure_agg ckks with --adaclip is not served"),
])
def test_bad_encrypted_aggregation_flags_get_one_clear_line(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + flags)
    assert message in capsys.readouterr().err
    assert np is not None
