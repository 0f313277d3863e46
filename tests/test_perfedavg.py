"""Per-FedAvg's local steps (Fallah, Mokhtari, Ozdaglar, NeurIPS 2020) against updates
computed by hand on a tiny model: first-order (FO), and Hessian-free (HF), whose Hessian
term is a finite-difference Hessian-vector product that must match autograd's."""
from __future__ import annotations

import copy

import pytest
import torch

from federated.perfedavg import PerFedAvgSettings, finite_difference_hvp, perfedavg_step


def _quadratic(a: torch.Tensor, b: torch.Tensor):
    """f(w; batch) = 0.5 w' A_batch w - b_batch' w: gradient A w - b, Hessian A."""
    def grad(w: torch.Tensor, batch: int) -> torch.Tensor:
        return a[batch] @ w - b[batch]
    return grad


def _problem(seed: int):
    """Three batches' quadratics (A positive definite), a starting point and their gradients."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.stack([m @ m.T + torch.eye(3) for m in torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)])
    b = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(3, generator=gen, dtype=torch.float64)
    return a, b, w, _quadratic(a, b)


def test_first_order_step_by_hand():
    a, b, w, grad = _problem(0)
    alpha, beta = 0.05, 0.1
    temp = w - alpha * (a[0] @ w - b[0])
    expected = w - beta * (a[1] @ temp - b[1])
    got = perfedavg_step(w, grad, (0, 1, 2), PerFedAvgSettings("perfedavg_fo", alpha, beta))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_hessian_free_step_by_hand_and_its_hessian_term_is_non_zero():
    a, b, w, grad = _problem(1)
    alpha, beta = 0.05, 0.1
    temp = w - alpha * (a[0] @ w - b[0])
    g = a[1] @ temp - b[1]
    expected = w - beta * (g - alpha * a[2] @ g)  # (I - alpha H(w; D3)) g
    settings = PerFedAvgSettings("perfedavg_hf", alpha, beta, hf_delta=1e-3)
    got = perfedavg_step(w, grad, (0, 1, 2), settings)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)  # exact for a quadratic
    fo = perfedavg_step(w, grad, (0, 1, 2), PerFedAvgSettings("perfedavg_fo", alpha, beta))
    assert float(torch.linalg.vector_norm(got - fo)) > 1e-4  # the Hessian term is there


def test_the_finite_difference_hvp_matches_autograd_on_a_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 2, (16,))
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def unflat(v):
        out, i = [], 0
        for s in shapes:
            out.append(v[i:i + s.numel()].view(s))
            i += s.numel()
        return out

    def loss(v):
        names = [n for n, _ in net.named_parameters()]
        params = dict(zip(names, unflat(v)))
        return torch.nn.functional.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    def grad(v, batch=None):
        v = v.detach().requires_grad_(True)
        return torch.autograd.grad(loss(v), v)[0]

    direction = torch.randn(flat.numel(), dtype=torch.float64)
    exact = torch.autograd.functional.hvp(loss, flat, direction)[1]
    approx = finite_difference_hvp(grad, flat, direction, batch=None, delta=1e-3)
    assert float(torch.linalg.vector_norm(approx - exact) / torch.linalg.vector_norm(exact)) < 1e-2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--alpha"):
        PerFedAvgSettings("perfedavg_fo", 0.0, 0.1)
    with pytest.raises(ValueError, match="--hf_delta"):
        PerFedAvgSettings("perfedavg_hf", 0.01, 0.1, hf_delta=0.0)
    with pytest.raises(ValueError, match="three batches"):
        perfedavg_step(torch.zeros(2), lambda w, b: w, (0, 1), PerFedAvgSettings("perfedavg_hf", 0.01, 0.1))


def _trainer_and_shard(algo: str, n: int, batch: int):
    from datasets.base import Shard, Split
    from federated.local import LocalTrainer

    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, 1, 4, 4, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    settings = PerFedAvgSettings(algo, 0.05, 0.1, hf_delta=1e-3)
    trainer = LocalTrainer(model, torch.nn.CrossEntropyLoss(), batch=batch, epochs=1, perfedavg=settings)
    return trainer, Shard(split, torch.arange(n)), settings, model


@pytest.mark.parametrize("algo, batches", [("perfedavg_fo", 2), ("perfedavg_hf", 3)])
def test_the_local_trainer_takes_per_fedavg_steps(algo, batches):
    """The client update (loop engine) on a shard of 2 steps' batches, in record order:
    the same parameters as perfedavg_step with an autograd oracle on those batches."""
    from federated.adam import AdamMoments

    batch = 4
    trainer, shard, settings, model = _trainer_and_shard(algo, 2 * batches * batch, batch)
    start = trainer.flat.get().clone()
    state = AdamMoments.zeros(1, start.numel(), dtype=start.dtype, device=start.device)
    result = trainer.update(start, shard, state, lr=1.0, gen=torch.Generator().manual_seed(0), in_order=True)
    assert result.num_steps == 2 and state.step.item() == 2

    names = trainer.flat.names
    x, y = shard.parent.images, shard.parent.targets

    def oracle(w, k):
        w = w.detach().requires_grad_(True)
        rows = slice(k * batch, (k + 1) * batch)
        params = dict(zip(names, trainer.flat.split(w)))
        out = torch.func.functional_call(model, params, (x[rows],))
        return torch.autograd.grad(torch.nn.functional.cross_entropy(out, y[rows]), w)[0]

    w = start.clone()
    for step in range(2):
        w = perfedavg_step(w, lambda v, k, s=step: oracle(v, s * batches + k), tuple(range(batches)), settings)
    torch.testing.assert_close(result.delta, w - start, rtol=1e-4, atol=1e-6)


def test_per_fedavg_composes_with_client_level_dp(tmp_path):
    """The same release, ledger and epsilon as the plain client update: only the delta differs."""
    from tests.conftest import TINY
    from tests.test_loop import _run

    private = ["--mode", "dpsgd", "--noise_multiplier", "1.0", "-VN", "2"]
    plain = _run(TINY + ["--save_path", str(tmp_path)] + private)
    meta = _run(TINY + ["--save_path", str(tmp_path), "--client_algo", "perfedavg_hf"] + private)
    assert meta["summary"]["privacy"]["epsilon"] == plain["summary"]["privacy"]["epsilon"]
    assert meta["dir"] != plain["dir"] and "perfedavg_hf" in meta["dir"].name


@pytest.mark.parametrize("flags, fragment", [
    (["--client_algo", "perfedavg_fo", "--alpha", "0"], "--alpha must be > 0"),
    (["--client_algo", "perfedavg_hf", "--hf_delta", "-1"], "--hf_delta must be > 0"),
    (["--client_algo", "perfedavg_fo", "--dp_level", "sample", "--sample_noise", "1.0"], "is not built"),
    (["--client_algo", "perfedavg_fo", "--engine", "batched"], "--engine loop"),
])
def test_bad_per_fedavg_flags_are_refused(flags, fragment, capsys):
    from federated.config import parse_config
    from tests.conftest import TINY
    with pytest.raises(SystemExit):
        parse_config(TINY + flags)
    assert fragment in capsys.readouterr().err


def test_pppml_reproduces_the_published_alternating_steps():
    """The published code, replayed with torch's optimizers on a copy of the model: each
    batch snapshots the parameters; even batches step the client's Adam (amsgrad, the
    repository's); odd batches take the gradient, "restore" the snapshot (the same point)
    and step a fresh Adam at beta. The client update must end where it ends."""
    from federated.adam import AdamMoments

    batch = 4
    trainer, shard, _, model = _trainer_and_shard("perfedavg_fo", 4 * batch, batch)
    trainer.perfedavg = PerFedAvgSettings("pppml", 0.05, 0.02)
    reference = copy.deepcopy(model)
    start = trainer.flat.get().clone()
    state = AdamMoments.zeros(1, start.numel(), dtype=start.dtype, device=start.device)
    result = trainer.update(start, shard, state, lr=0.01, gen=torch.Generator().manual_seed(0), in_order=True)
    assert result.num_steps == 4

    x, y = shard.parent.images, shard.parent.targets
    client_opt = torch.optim.Adam(reference.parameters(), lr=0.01, amsgrad=True)
    for i in range(4):
        snapshot = [p.detach().clone() for p in reference.parameters()]
        loss = torch.nn.functional.cross_entropy(reference(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch])
        if i % 2 == 0:
            client_opt.zero_grad()
            loss.backward()
            client_opt.step()
        else:
            fresh = torch.optim.Adam(reference.parameters(), lr=0.02)
            fresh.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p, s in zip(reference.parameters(), snapshot):
                    p.copy_(s)
            fresh.step()
    moved = torch.cat([p.detach().reshape(-1) for p in reference.parameters()])
    original = torch.cat([p.detach().reshape(-1) for p in copy.deepcopy(_trainer_and_shard("perfedavg_fo", 4, 4)[3]).parameters()])
    torch.testing.assert_close(result.delta, moved - original, rtol=1e-4, atol=1e-6)
