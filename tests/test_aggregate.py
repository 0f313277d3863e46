import torch

from federated.aggregate import round_weights, weighted_mean
from federated.flat import FlatState
from nets import build_model


def test_plain_mean_weights_are_one_over_k():
    w = round_weights([5, 10, 20, 1], weighted=False)
    assert torch.allclose(w, torch.full((4,), 0.25))


def test_weighted_average_uses_sample_counts():
    w = round_weights([5, 15], weighted=True)
    assert torch.allclose(w, torch.tensor([0.25, 0.75]))


def test_aggregate_equals_weighted_mean_of_deltas():
    gen = torch.Generator().manual_seed(0)
    deltas = torch.randn(4, 1000, generator=gen)
    for weighted in (False, True):
        w = round_weights([3, 1, 4, 2], weighted=weighted)
        expected = sum(w[k] * deltas[k] for k in range(4))
        assert torch.allclose(weighted_mean(deltas, w), expected, atol=1e-6)


def test_flat_state_round_trips_every_floating_tensor():
    model = build_model("cnn", 1, 2)
    flat = FlatState(model)
    assert flat.numel == sum(p.numel() for p in model.parameters())
    v = torch.randn(flat.numel)
    flat.set(v)
    assert torch.equal(flat.get(), v)


def test_flat_state_includes_floating_buffers():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    flat = FlatState(model)
    assert "1.running_mean" in flat.names and "1.running_var" in flat.names
    assert "1.num_batches_tracked" not in flat.names  # integer counter, not data statistics
