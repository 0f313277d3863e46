"""--secure_agg secagg+ in a run: the same model as the plain sum (to the ring's rounding),
the same epsilon, a clear stop when too many inputs drop, and bad flags refused."""
import numpy as np
import pytest
import torch

import fed_train
from federated import loop
from federated.config import SECAGG_STAGES, parse_config
from federated.messages import UPDATE
from federated.setup import build_federation
from privacy.secagg.protocol import STAGES
from tests.conftest import TINY
from tests.test_loop import _run

SECAGG = ["--secure_agg", "secagg+"]
PRIVATE = ["--mode", "dpsgd", "--strict_dp", "--noise_multiplier", "1.0", "-VN", "2"]


def _final_params(args):
    fed = build_federation(parse_config(args))
    state = loop.initial_state(fed)
    shards = loop.subclient_data(fed, state)
    for r in range(3):
        loop.run_round(fed, state, shards, r)
    return state.params, fed


@pytest.mark.parametrize("flags", [[], PRIVATE], ids=["fedavg", "strict client-level DP"])
def test_the_secure_sum_gives_the_plain_model_to_the_ring_s_rounding(tiny_args, flags):
    plain, _ = _final_params(tiny_args + flags)
    secure, fed = _final_params(tiny_args + flags + SECAGG)
    assert not torch.equal(plain, secure)  # the rounding is there ...
    assert float(torch.linalg.vector_norm(plain - secure)) <= 1e-4 * float(torch.linalg.vector_norm(plain))  # ... small
    assert fed.pipeline.secure.last.included == list(range(len(fed.pipeline.secure.last.included)))


def test_a_private_secure_run_spends_the_plain_run_s_epsilon(tiny_args):
    plain = _run(tiny_args + PRIVATE, "--exp", "plain")["summary"]
    secure = _run(tiny_args + PRIVATE + SECAGG, "--exp", "secure")["summary"]
    assert secure["privacy"]["epsilon"] == plain["privacy"]["epsilon"]
    assert "SecAgg+" in secure["privacy_report"]["threat_model"]
    cost = secure["secure_aggregation"]
    assert cost["rounds"] == 3 and cost["mean_inputs"] == cost["mean_included"] == 6 and cost["mean_bytes_sent"] > 0
    assert cost["noise_at"] == "server" and "secure_aggregation" not in plain
    assert "sees every sub-client's message" in plain["privacy_report"]["threat_model"]


def test_the_server_receives_no_input_it_could_read(tiny_args):
    fed = build_federation(parse_config(tiny_args + PRIVATE + SECAGG))
    sent = []
    fed.pipeline.hooks.append(lambda m: sent.append(m) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    received = fed.pipeline.secure.last.protocol.server.received
    inputs = [m.payload.numpy().view(np.uint64) for m in sent]
    masked = [np.frombuffer(p, "<u4").astype(np.uint64) for stage, _, p in received if stage == "mask"]
    assert len(masked) == len(inputs) == 6
    for x in inputs:  # no masked vector agrees with any input beyond chance (2^-32 per coordinate)
        assert all(np.mean(x == y) < 1e-3 for y in masked)
    payloads = b"".join(p for _, _, p in received)
    assert all(x.astype("<u4").tobytes()[:64] not in payloads for x in inputs)


def test_too_many_drop_outs_stop_the_run_with_one_line(tiny_args, capsys):
    args = tiny_args + PRIVATE + SECAGG + ["--secagg_drops", "mask:0,1,2,3"]  # 6 inputs, threshold 4
    assert fed_train.main(args) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("fed_train.py: stopped: round 0: secure aggregation aborted at stage 'mask': 2 of 6 clients "
                       "remain, fewer than the threshold 4; the model keeps the rounds before it. Lower "
                       "--secagg_threshold or --dropout_rate, or send more inputs a round (-VN, -sr)")


def test_drop_outs_within_the_threshold_leave_their_inputs_out(tiny_args):
    fed = build_federation(parse_config(tiny_args + PRIVATE + SECAGG + ["--secagg_drops", "share:1;unmask:4"]))
    state = loop.initial_state(fed)
    _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert fed.pipeline.secure.last.included == [0, 2, 3, 4, 5]  # the unmask drop-out's input is in the sum
    assert (stats["secagg_inputs"], stats["secagg_included"]) == (6, 5)
    assert "secagg_quantisation_error" not in stats  # the exact sum of the included inputs is not rebuilt


def test_the_stages_are_named_alike():
    assert SECAGG_STAGES == STAGES


@pytest.mark.parametrize("flags, message", [
    (["--secagg_threshold", "9"], "--secagg_threshold 9 is above the 6 holders of each input's shares"),
    (["--secagg_threshold", "1"], "--secagg_threshold 1 lets the server rebuild every secret from one share"),
    (["--secagg_neighbours", "3"], "--secagg_neighbours must be an even number >= 0 (got 3)"),
    (["--secagg_neighbours", "8"], "--secagg_neighbours 8 is larger than the federation: 6 sub-clients send"),
    (["--secagg_bits", "10"], "--secagg_bits 10: the ring must hold the sum of 6 inputs with 8 bits of resolution "
                              "each, so at least 11"),
    (["--dropout_rate", "1"], "--dropout_rate must be in [0, 1) (got 1.0)"),
    (["--secagg_drops", "masking:1"], "'masking:1' is not STAGE:i,j with STAGE one of advertise, share, mask, unmask"),
    (["--secagg_drops", "mask:x"], "'x' is not a list of input positions"),
    (["--dp_level", "update_local", "--local_noise", "1"], "with --dp_level update_local is not served"),
    (["--mode", "dpsgd", "--noise_multiplier", "1"], "--secure_agg secagg+ with --mode dpsgd needs --strict_dp"),
])
def test_bad_secure_aggregation_flags_get_one_clear_line(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + ["-VN", "2"] + SECAGG + flags)
    assert message in capsys.readouterr().err


def test_secure_aggregation_flags_need_secure_aggregation(capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + ["--dropout_rate", "0.1"])
    assert "--dropout_rate needs --secure_agg secagg+" in capsys.readouterr().err
