"""The release's two halves: what a sub-client computes reads its own row only, and the
message hook sees exactly what the server combines."""
from unittest import mock

import pytest
import torch

import federated.loop as loop
from federated import pipeline
from federated.config import parse_config
from federated.messages import NORM, UPDATE
from federated.setup import build_federation
from tests.conftest import TINY

FIXED_CLIP = ["--mode", "dpnova", "--noise_multiplier", "1.0", "--S", "0.01", "-VN", "2"]


def _round_messages(fed, deltas, members, round_idx=0):
    """Run the pipeline's round on given deltas; returns the messages sent."""
    sent = []
    fed.pipeline.hooks.append(sent.append)
    sizes = [[4] * fed.cfg.virtual_clients for _ in range(fed.cfg.clients)]
    part = pipeline.Participants(members, [4] * len(members), [k + 1 for k in range(len(members))], sizes,
                                 [torch.Generator().manual_seed(k) for k in range(len(members))],
                                 planned_subclients=len(members))
    fed.pipeline.round(torch.zeros(deltas.shape[1]), deltas, part, round_idx, torch.Generator().manual_seed(0))
    fed.pipeline.hooks.remove(sent.append)
    return sent


@pytest.mark.parametrize("flags", [FIXED_CLIP, FIXED_CLIP + ["--adaclip", "--strict_dp"],
                                   ["--mode", "fednova", "--dp_level", "update_local", "--local_noise", "1", "-VN", "2"]])
def test_a_subclients_messages_do_not_depend_on_another_subclients_update(flags):
    fed = build_federation(parse_config(TINY + flags))
    members = [(h, k) for h in range(3) for k in range(2)]
    deltas = torch.randn(6, fed.trainer.flat.numel, generator=torch.Generator().manual_seed(1))
    before = _round_messages(fed, deltas, members)
    changed = deltas.clone()
    changed[4] = torch.randn(deltas.shape[1], generator=torch.Generator().manual_seed(2))  # one sub-client's update
    after = _round_messages(build_federation(parse_config(TINY + flags)), changed, members)
    assert [m.sender for m in before] == [m.sender for m in after]
    for a, b in zip(before, after):
        same = torch.equal(a.payload, b.payload) and all(torch.equal(a.shares[k], b.shares[k]) for k in a.shares)
        assert same == (a.sender != (2, 0)), (a.kind, a.sender)


def test_the_client_half_is_given_one_row():
    fed = build_federation(parse_config(TINY + FIXED_CLIP))
    client = fed.pipeline.client
    rnd = pipeline.ClientRound(0, pipeline.ServerRound(0, torch.ones(1), torch.ones(1)), None)
    row = torch.ones(fed.trainer.flat.numel)
    message = client.send(client.prepare(row, rnd), (0, 0), rnd, bound=1.0)
    assert message.kind == UPDATE and message.payload.shape == row.shape
    assert float(torch.linalg.vector_norm(message.payload)) == pytest.approx(1.0, rel=1e-4)
    for call in (lambda rows: client.prepare(rows, rnd), lambda rows: client.send(rows, (0, 0), rnd, bound=1.0)):
        with pytest.raises(ValueError, match="one sub-client's update"):  # a stack of rows is not one row
            call(torch.ones(2, row.numel()))


@pytest.mark.parametrize("flags", [["--mode", "dpsgd", "--noise_multiplier", "1", "--adaclip", "-sr", "0.5",
                                    "--client_sampling", "poisson", "-VN", "2"],
                                   ["--mode", "dpadam", "--noise_multiplier", "1", "--adaclip", "--strict_dp"],
                                   ["--mode", "fedavg", "--dp_level", "update_local", "--local_noise", "1"]])
def test_the_hook_sees_every_message_the_server_combines(flags):
    fed = build_federation(parse_config(TINY + ["--rounds", "6"] + flags))
    hooked, combined = [], []
    fed.pipeline.hooks.append(hooked.append)
    real = pipeline.ServerHalf.combine

    def spy(messages, *args):
        combined.append(list(messages))
        return real(messages, *args)

    state = loop.initial_state(fed)
    shards = loop.subclient_data(fed, state)
    with mock.patch.object(pipeline.ServerHalf, "combine", staticmethod(spy)):
        for r in range(6):
            hooked.clear()
            loop.run_round(fed, state, shards, r)
            updates = [m for m in hooked if m.kind == UPDATE]
            assert (updates == combined[-1]) if combined else not updates  # the same messages, in order
            assert all(m.round == r for m in hooked)
            strict = "--strict_dp" in flags
            assert [m.sender for m in hooked if m.kind == NORM] == ([] if strict else [m.sender for m in updates])
