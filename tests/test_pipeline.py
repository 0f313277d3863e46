import pytest
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


def _participants(members, sizes):
    from federated.pipeline import Participants
    return Participants(members, [sizes[h][k] for h, k in members], [1] * len(members), sizes,
                        [torch.Generator().manual_seed(i) for i in range(len(members))],
                        planned_subclients=sum(len(s) for s in sizes))


def test_private_weights_have_fixed_denominators():
    from federated.config import parse_config
    from federated.pipeline import private_weights
    from tests.conftest import TINY
    sizes = [[5, 6], [7, 8], [9, 10]]
    cfg = parse_config(TINY + ["--mode", "dpsgd", "--noise_multiplier", "1", "-sr", "0.5", "--client_sampling",
                               "poisson"])
    w, largest = private_weights(cfg, _participants([(1, 0), (1, 1)], sizes))
    assert torch.allclose(w, torch.full((2,), 1 / 3)) and largest == pytest.approx(1 / 3)  # 1 / (0.5 * 6)
    cfg = parse_config(TINY + ["--mode", "dpsgd", "--noise_multiplier", "1", "--weighted_avg"])
    w, largest = private_weights(cfg, _participants([(0, 0), (2, 1)], sizes))
    assert torch.allclose(w, torch.tensor([5 / 45, 10 / 45])) and largest == pytest.approx(10 / 45)
    assert w.dtype == torch.float32


def test_private_release_is_the_clipped_mean_plus_noise_of_the_planned_std():
    from federated import loop
    from federated.config import parse_config
    from federated.setup import build_federation
    from tests.conftest import TINY
    fed = build_federation(parse_config(TINY + ["--mode", "dpsgd", "--noise_multiplier", "1e-6", "--S", "1.0"]))
    state = loop.initial_state(fed)
    sizes = [[len(i) for i in per_h] for per_h in state.subclient_indices]
    deltas = torch.randn(3, state.params.numel(), generator=torch.Generator().manual_seed(0))
    part = _participants([(0, 0), (1, 0), (2, 0)], sizes)
    zero = torch.zeros(state.params.numel())
    update, stats = fed.pipeline.round(zero, deltas, part, 0, torch.Generator().manual_seed(1))
    clipped = deltas / torch.linalg.vector_norm(deltas, dim=1, keepdim=True)
    assert torch.allclose(update, clipped.mean(0), atol=1e-5)
    assert stats["noise_std"] == pytest.approx(1e-6 / 3)


def test_non_private_round_is_the_weighted_mean_and_reports_the_norm_sum():
    from federated.config import parse_config
    from federated.setup import build_federation
    from tests.conftest import TINY
    fed = build_federation(parse_config(TINY + ["--weighted_avg"]))
    sizes = [[4], [12], [8]]
    deltas = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    part = _participants([(0, 0), (1, 0)], sizes)
    update, stats = fed.pipeline.round(torch.zeros(5), deltas, part, 0, torch.Generator())
    assert torch.allclose(update, 0.25 * deltas[0] + 0.75 * deltas[1])
    assert stats["norm_sum"] == pytest.approx(float(torch.linalg.vector_norm(deltas, dim=1).sum()))


def test_batchnorm_models_are_scored_per_hospital_in_training_sized_batches():
    """BatchNorm without running statistics normalises with the batch it sees, so the
    paper's evaluation (each hospital alone, batches of the training batch size, in order)
    is reproduced for such models; GroupNorm models, whose outputs do not depend on the
    batch, are scored in pooled chunks (the same outputs, faster)."""
    import torch.nn as nn
    from federated.evaluate import EvalSet, model_outputs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, affine=False, track_running_stats=False),
                          nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    images = torch.randn(7, 1, 4, 4)
    es = EvalSet(["a", "b"], [5, 2], images, torch.zeros(7), batch=2)
    outputs = model_outputs(model, es)
    expected = torch.cat([model(images[0:2]), model(images[2:4]), model(images[4:5]), model(images[5:7])])
    assert torch.allclose(torch.cat(outputs), expected, atol=1e-6)
    pooled = model(images)
    assert not torch.allclose(torch.cat(outputs), pooled, atol=1e-3)
    group_norm = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GroupNorm(1, 2), nn.Flatten(), nn.Linear(32, 2))
    assert torch.allclose(torch.cat(model_outputs(group_norm, es)), group_norm(images), atol=1e-6)
