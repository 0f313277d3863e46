"""SecAgg+: the exact sum, recovery from drop-outs, aborts, and what the server can learn."""
import itertools

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from scipy import stats

from privacy.secagg import crypto
from privacy.secagg.protocol import MASK_PURPOSE, SHARE_PURPOSE, STAGES, SecAggAbort, SecAggParams, decode, \
    neighbourhood, secure_sum


def _inputs(n, dim, bits, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2 ** bits, dim, dtype=np.uint64) if bits < 64 else
            rng.integers(0, 2 ** 63, dim, dtype=np.uint64) for _ in range(n)]


def _ring_sum(vectors, bits):
    total = np.zeros_like(vectors[0])
    for v in vectors:
        total = total + v  # uint64 wraps mod 2^64
    return total if bits == 64 else total & np.uint64(2 ** bits - 1)


@pytest.mark.parametrize("n, k, t, bits", [(3, 2, 2, 8), (6, 5, 3, 16), (10, 4, 3, 32), (12, 6, 4, 64), (7, 2, 2, 1)])
def test_unmasking_gives_exactly_the_sum(n, k, t, bits):
    xs = _inputs(n, 257, bits)
    result = secure_sum(xs, SecAggParams(n, k, t, bits), np.random.default_rng(1))
    assert result.included == list(range(n))
    assert np.array_equal(result.total, _ring_sum(xs, bits))


@pytest.mark.parametrize("stage", STAGES)
def test_every_number_of_drop_outs_up_to_n_minus_t_is_recovered_and_one_more_aborts(stage):
    n, t, bits = 7, 3, 16
    params = SecAggParams(n, n - 1, t, bits)  # the complete graph: SecAgg's own tolerance
    xs = _inputs(n, 64, bits)
    rng = np.random.default_rng(5)
    for dropped in range(n - t + 1):
        gone = set(rng.choice(n, dropped, replace=False).tolist())
        result = secure_sum(xs, params, np.random.default_rng(dropped), {stage: gone})
        kept = [u for u in range(n) if u not in gone] if stage != "unmask" else list(range(n))
        assert result.included == kept, (stage, gone)
        assert np.array_equal(result.total, _ring_sum([xs[u] for u in kept], bits)), (stage, gone)
    with pytest.raises(SecAggAbort) as err:
        secure_sum(xs, params, np.random.default_rng(0), {stage: set(range(n - t + 1))})
    assert str(err.value) == (f"secure aggregation aborted at stage {stage!r}: {t - 1} of {n} clients remain, "
                              f"fewer than the threshold {t}")


def test_drop_outs_at_several_stages_in_a_sparse_neighbourhood():
    n, k, t, bits = 12, 6, 4, 32
    params = SecAggParams(n, k, t, bits)
    xs = _inputs(n, 100, bits)
    graph = neighbourhood(params, np.random.default_rng(3))
    u = 0  # one drop-out per stage among client 0's neighbours: it keeps k + 1 - 3 >= t holders
    drops = {"share": {graph[u][0]}, "mask": {graph[u][1]}, "unmask": {graph[u][2]}}
    result = secure_sum(xs, params, np.random.default_rng(3), drops)
    kept = [v for v in range(n) if v not in drops["share"] | drops["mask"]]
    assert result.included == kept
    assert np.array_equal(result.total, _ring_sum([xs[v] for v in kept], bits))


def test_a_secret_with_too_few_shares_left_aborts_and_names_it():
    params = SecAggParams(10, 2, 3, 16)  # each secret has 3 holders: one loss is too many
    graph = neighbourhood(params, np.random.default_rng(0))
    with pytest.raises(SecAggAbort, match=r"stage 'unmask': 2 shares of client \d+'s self-mask seed came back"):
        secure_sum(_inputs(10, 8, 16), params, np.random.default_rng(0), {"unmask": {graph[0][0]}})


def test_survivors_in_groups_joined_by_no_mask_abort():
    params = SecAggParams(10, 2, 2, 16)  # a ring: removing two opposite clients cuts it in two
    graph = neighbourhood(params, np.random.default_rng(0))
    order = [0]
    while len(order) < 10:
        order.append(next(v for v in graph[order[-1]] if v not in order))
    cut = {order[1], order[3]}  # leaves order[2] alone, joined to nobody
    with pytest.raises(SecAggAbort, match="stage 'mask'.*one of 1 .*its sum would be exposed"):
        secure_sum(_inputs(10, 8, 16), params, np.random.default_rng(0), {"mask": cut})


def test_bad_parameters_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="threshold 7 must be between 1 and the 5 holders"):
        SecAggParams(10, 4, 7, 16)
    with pytest.raises(ValueError, match="needs an even k, or k >= 9"):
        SecAggParams(10, 3, 2, 16)
    with pytest.raises(ValueError, match="1 to 64 bits, not 0"):
        SecAggParams(10, 4, 3, 0)
    with pytest.raises(ValueError, match="drop-outs must map stages"):
        secure_sum(_inputs(4, 2, 8), SecAggParams(4, 3, 2, 8), np.random.default_rng(0), {"mask": {9}})


def test_bytes_on_the_wire_are_counted():
    n, dim, bits = 5, 1000, 20  # 20 bits travel in 4-byte words
    result = secure_sum(_inputs(n, dim, bits), SecAggParams(n, 4, 3, bits), np.random.default_rng(0))
    masked = [p for stage, _, p in result.server.received if stage == "mask"]
    assert [len(p) for p in masked] == [4 * dim] * n
    assert all(sent > 4 * dim + 64 for sent in result.sent)  # keys, four encrypted shares, the masked input
    assert sum(len(p) for _, _, p in result.server.received) == sum(result.sent)


# --- what the server holds -----------------------------------------------------------------
def _server_view(result):
    return {stage: {u: p for s, u, p in result.server.received if s == stage} for stage in STAGES}


def _revealed(view):
    """The shares the server got back: {"b" or "s": {owner: {index: share}}}."""
    out = {"b": {}, "s": {}}
    for payload in view["unmask"].values():
        for at in range(0, len(payload), 9 + 32):
            kind, owner, index = payload[at:at + 1].decode(), *np.frombuffer(payload[at + 1:at + 9], "<u4")
            out[kind].setdefault(int(owner), {})[int(index)] = payload[at + 9:at + 41]
    return out


def test_each_masked_vector_is_uniform_in_the_ring_whatever_the_input():
    n, dim, bits = 6, 20_000, 8
    xs = [np.zeros(dim, dtype=np.uint64), np.full(dim, 255, dtype=np.uint64)] + _inputs(n - 2, dim, bits)
    result = secure_sum(xs, SecAggParams(n, 4, 3, bits), np.random.default_rng(0))
    for u, payload in _server_view(result)["mask"].items():
        counts = np.bincount(decode(payload, result.server.params).astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4, u  # 6 tests: a false alarm at 6e-4 at most


def test_the_server_can_compute_no_individual_input_and_no_sum_of_fewer_than_t():
    """Everything the server received, used as well as the protocol lets it: it removes each
    survivor's self-mask (whose seed it rebuilt) and the masks of the dropped client (whose
    key it rebuilt). Every proper group of survivors is still masked, uniformly; only the
    sum over all survivors comes out."""
    n, dim, bits, t = 6, 5000, 16, 3
    params = SecAggParams(n, n - 1, t, bits)
    xs = [np.zeros(dim, dtype=np.uint64)] * n  # the easiest inputs to recognise
    result = secure_sum(xs, params, np.random.default_rng(0), {"mask": {5}})
    view, revealed = _server_view(result), _revealed(_server_view(result))
    survivors, dropped = result.included, [5]
    assert set(revealed["b"]) == set(survivors) and set(revealed["s"]) == set(dropped)  # never both for one client
    keys = view["advertise"]
    dropped_key = crypto.private_key(crypto.combine(revealed["s"][5]))
    unmasked = {}
    for u in survivors:
        y = decode(view["mask"][u], params) - crypto.prg(crypto.combine(revealed["b"][u]), dim)
        pair = crypto.prg(crypto.agree(dropped_key, keys[u][32:], MASK_PURPOSE), dim)
        unmasked[u] = y - pair if u < 5 else y + pair
    mask = np.uint64(2 ** bits - 1)
    for size in range(1, len(survivors)):
        for group in itertools.combinations(survivors, size):
            guess = sum((unmasked[u] for u in group), np.zeros(dim, dtype=np.uint64)) & mask
            assert not np.any(guess == 0) or np.mean(guess == 0) < 0.001, group  # the true sum is all zeros
            assert stats.chisquare(np.bincount((guess >> np.uint64(8)).astype(np.int64), minlength=256)).pvalue > 1e-6
    everyone = sum(unmasked.values(), np.zeros(dim, dtype=np.uint64)) & mask
    assert not everyone.any()  # the sum over all survivors is all the server learns
    assert np.array_equal(result.total, everyone)


def test_the_server_cannot_open_the_shares_it_routes():
    result = secure_sum(_inputs(4, 8, 8), SecAggParams(4, 3, 2, 8), np.random.default_rng(0))
    own, _ = crypto.keypair()
    for sender, payload in _server_view(result)["share"].items():
        recipient = int(np.frombuffer(payload[4:8], "<u4")[0])
        blob = payload[8:8 + 12 + 12 + 64 + 16]
        header = payload[:8]
        key = crypto.agree(own, _server_view(result)["advertise"][recipient][:32], SHARE_PURPOSE)
        with pytest.raises(InvalidTag):
            crypto.unseal(key, blob, header)


def test_a_client_refuses_to_unmask_for_too_few_or_to_reveal_both_shares():
    from privacy.secagg.protocol import Client
    client = Client(0, [1, 2], SecAggParams(3, 2, 2, 8))
    with pytest.raises(SecAggAbort) as err:
        client.unmask([0], [])
    assert str(err.value) == ("secure aggregation aborted at stage 'unmask': the server names 1 clients with masked "
                              "inputs, fewer than the threshold 2")
    assert err.value.stage == "unmask"
    with pytest.raises(SecAggAbort) as err:
        client.unmask([0, 1], [1])
    assert str(err.value) == ("secure aggregation aborted at stage 'unmask': client 0 was asked for both shares of "
                              "clients [1]")


def test_key_agreement_separates_purposes_and_the_neighbourhood_is_k_regular():
    a, a_public = crypto.keypair()
    b, b_public = crypto.keypair()
    assert crypto.agree(a, b_public, SHARE_PURPOSE) == crypto.agree(b, a_public, SHARE_PURPOSE)
    assert crypto.agree(a, b_public, SHARE_PURPOSE) != crypto.agree(a, b_public, MASK_PURPOSE)
    for n, k in [(6, 4), (9, 2), (10, 6)]:
        graph = neighbourhood(SecAggParams(n, k, 2, 8), np.random.default_rng(n))
        assert all(len(vs) == k and u not in vs for u, vs in enumerate(graph))
        assert all(u in graph[v] for u, vs in enumerate(graph) for v in vs)  # symmetric
    assert neighbourhood(SecAggParams(5, 8, 2, 8), np.random.default_rng(0))[0] == [1, 2, 3, 4]
