"""--secure_agg ckks|cyclic in a run: the plain model to CKKS's precision, the same epsilon,
a server that handles ciphertexts only, and bad flags refused."""
from __future__ import annotations

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


@pytest.mark.parametrize("flags, message", [
    (["-N", "2", "--secure_agg", "cyclic"], "--secure_agg cyclic needs at least 3 inputs"),
    (["--secure_agg", "cyclic", "-sr", "0.5"], "use -sr 1"),
    (["--secure_agg", "ckks", "--secagg_neighbours", "2"], "--secagg_neighbours needs --secure_agg secagg+"),
    (["--secure_agg", "ckks", "--mode", "dpsgd", "--noise_multiplier", "1.0"], "needs --strict_dp"),
])
def test_bad_encrypted_aggregation_flags_get_one_clear_line(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + flags)
    assert message in capsys.readouterr().err
    assert np is not None
