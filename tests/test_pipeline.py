import torch

from federated.pipeline import round_weights
from federated.flat import FlatState
from nets import build_model


def test_plain_mean_weights_are_one_over_k():
    w = round_weights([5, 10, 20, 1], weighted=False)
    assert torch.allclose(w, torch.full((4,), 0.25))


def test_weighted_average_uses_sample_counts():
    w = round_weights([5, 15], weighted=True)
    assert torch.allclose(w, torch.tensor([0.25, 0.75]))


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


def test_evaluation_scores_each_hospital_with_its_own_parameters():
    from federated import loop
    from federated.config import parse_config
    from federated.evaluate import MEAN, eval_set, evaluate
    from federated.setup import build_federation
    from tests.conftest import TINY

    fed = build_federation(parse_config(TINY))
    es = eval_set(fed.data, "val", merge=False)
    params = loop.initial_state(fed).params
    shared = evaluate(fed.model, fed.trainer.flat, params, es, fed.task)
    same = evaluate(fed.model, fed.trainer.flat, [params] * 3, es, fed.task)
    assert same == shared
    other = params + 0.5 * torch.randn(params.shape, generator=torch.Generator().manual_seed(0))
    mixed = evaluate(fed.model, fed.trainer.flat, [params, other, params], es, fed.task)
    names = [n for n in shared if n != MEAN]
    assert mixed[names[0]] == shared[names[0]] and mixed[names[2]] == shared[names[2]]
    assert mixed[names[1]] != shared[names[1]]
