"""The fast engine: stacked Adam equals torch's, and the batched engine gives the loop
engine's deltas for the same keys.

Comparisons run in float64, where the two engines agree to ~1e-12: they differ only in
how the convolutions sum (vmap batches them). In float32 they agree to rounding in the
gradients, but Adam's first step divides the moment by its own square root, so a
gradient coordinate near zero becomes an update of size ~lr whatever its rounding: a
float32 comparison of deltas would need a tolerance of the order of the update itself
and would prove little. Threads are pinned to one (tests/conftest.py).
"""
import contextlib
import re

import pytest
import torch
import torch.nn as nn

from datasets.base import Shard, Split
from federated import loop
from federated.adam import (AdamMoments, SubclientMoments, adam_step, nadam_momentum_product, nadam_step,
                            sgd_step)
from federated.config import ConfigError, parse_config
from federated.engine import BatchedEngine, Job, LoopEngine
from federated.flat import FlatState
from federated.local import LocalTrainer
from federated.setup import build_federation
from nets import build_model
from tests.conftest import TINY, TINY_SEG


@contextlib.contextmanager
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _stacked_and_torch(step_fn, make_optimizer, *, seed: int, active: list[int], numel: int = 40, lr: float = 3e-3):
    """Stacked rows stepped by `step_fn` (row r steps while r < active[i]) beside one torch
    optimizer per row fed the same gradients, in float64: (params, state, torch rows)."""
    gen = torch.Generator().manual_seed(seed)
    rows = max(active)
    start = torch.randn(rows, numel, dtype=torch.float64, generator=gen)
    grads = [torch.randn(rows, numel, dtype=torch.float64, generator=gen) for _ in active]
    params, state = start.clone(), AdamMoments.zeros(rows, numel, dtype=torch.float64, device=torch.device("cpu"))
    for g, a in zip(grads, active):
        step_fn(params[:a], g[:a], state.rows(slice(0, a)), lr)
    reference = []
    with float64():  # torch keeps NAdam's momentum product in the default dtype
        for r in range(rows):
            p = nn.Parameter(start[r].clone())
            opt = make_optimizer([p], lr)
            for g, a in zip(grads, active):
                if r < a:
                    p.grad = g[r].clone()
                    opt.step()
            reference.append((p, opt))
    return params, state, reference


def test_stacked_adam_equals_torch_adam_with_amsgrad():
    """Rows with different step counts, several steps: the same parameters as
    torch.optim.Adam(amsgrad=True) run on each row separately."""
    params, state, reference = _stacked_and_torch(
        adam_step, lambda ps, lr: torch.optim.Adam(ps, lr=lr, amsgrad=True), seed=0, active=[3, 3, 2, 2, 1, 1])
    assert state.step.tolist() == [6, 4, 2]
    for r, (p, opt) in enumerate(reference):
        torch.testing.assert_close(params[r], p.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(state.max_exp_avg_sq[r], opt.state[p]["max_exp_avg_sq"], rtol=1e-12, atol=0)


def test_stacked_nadam_equals_torch_nadam():
    """The same for NAdam: parameters and moments as torch.optim.NAdam on each row."""
    params, state, reference = _stacked_and_torch(
        nadam_step, lambda ps, lr: torch.optim.NAdam(ps, lr=lr), seed=1, active=[3, 3, 3, 2, 2, 1, 1])
    assert state.step.tolist() == [7, 5, 3]
    for r, (p, opt) in enumerate(reference):
        torch.testing.assert_close(params[r], p.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(state.exp_avg_sq[r], opt.state[p]["exp_avg_sq"], rtol=1e-12, atol=0)


def test_stacked_sgd_equals_torch_sgd():
    """Plain SGD rows: torch.optim.SGD's parameters, the moments untouched, the steps counted."""
    params, state, reference = _stacked_and_torch(
        sgd_step, lambda ps, lr: torch.optim.SGD(ps, lr=lr), seed=2, active=[3, 3, 2, 1])
    assert state.step.tolist() == [4, 3, 2]
    assert not state.exp_avg.any() and not state.exp_avg_sq.any()
    for r, (p, _) in enumerate(reference):
        torch.testing.assert_close(params[r], p.detach(), rtol=1e-12, atol=1e-14)


def test_nadam_momentum_product_is_torchs_running_product():
    p = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    with float64():
        opt = torch.optim.NAdam([p])
        products = []
        for _ in range(30):
            p.grad = torch.ones_like(p)
            opt.step()
            products.append(float(opt.state[p]["mu_product"]))
    got = nadam_momentum_product(torch.tensor([30.0, 1.0, 0.0, 12.4], dtype=torch.float64))
    assert got.tolist() == pytest.approx([products[29], products[0], 1.0, products[11]], rel=1e-14)


def test_resplit_gives_each_new_subclient_its_hospitals_mean_state():
    store = SubclientMoments.fresh([2, 1], 4, dtype=torch.float64, device=torch.device("cpu"))
    store.state.step[:] = torch.tensor([2.0, 0.0, 3.0])  # hospital 0's second sub-client never trained
    store.state.exp_avg[:] = torch.arange(12.0).view(3, 4)
    new = store.resplit([3, 2])
    assert new.state.step.tolist() == [2.0, 2.0, 2.0, 3.0, 3.0]  # only rows that took a step are averaged
    assert torch.equal(new.state.exp_avg[0], torch.arange(4.0))
    assert torch.equal(new.state.exp_avg[4], torch.arange(8.0, 12.0))


def _shards(sizes: list[int], *, channels: int = 1, px: int = 16, segmentation: bool = False) -> list[Shard]:
    gen = torch.Generator().manual_seed(1)
    n = sum(sizes)
    images = torch.randn(n, channels, px, px, generator=gen)
    targets = (torch.rand(n, 1, px, px, generator=gen) > 0.5).double() if segmentation else \
        torch.randint(0, 2, (n,), generator=gen)
    split = Split(images, targets)
    bounds = torch.tensor([0] + sizes).cumsum(0)
    return [Shard(split, torch.arange(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]


class BatchNormNet(nn.Module):
    """The paper's kind of normalisation: BatchNorm with batch statistics only."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(4, track_running_stats=False),
                                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))

    def forward(self, x):
        return self.body(x)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "batchnorm":
        return BatchNormNet()
    return build_model(name, 1, 1 if name == "unet_small" else 2)


def _loss(name: str) -> nn.Module:
    if name == "unet_small":
        from monai.losses import DiceCELoss
        return DiceCELoss(sigmoid=True)
    return nn.CrossEntropyLoss()


def _run_engine(engine_cls, model_name: str, sizes: list[int], *, epochs: int, keep_state: bool, rounds: int = 2,
                in_order: bool = False):
    """`rounds` rounds of local training from the same global parameters and keys; returns
    every round's deltas and the final Adam state."""
    with float64():
        model = _model(model_name)
        shards = _shards(sizes, segmentation=model_name == "unet_small")
        trainer = LocalTrainer(model, _loss(model_name), batch=4, epochs=epochs)
        engine = engine_cls(trainer) if engine_cls is LoopEngine else engine_cls(trainer, chunk=3)
        params = trainer.flat.get()
        store = SubclientMoments.fresh([len(sizes)], params.numel(), dtype=params.dtype,
                                       device=params.device) if keep_state else None
        all_deltas = []
        for r in range(rounds):
            jobs = [Job(0, k, s, torch.Generator().manual_seed(100 * r + k), in_order=in_order)
                    for k, s in enumerate(shards)]
            deltas, results = engine.train(params, jobs, store, lr=1e-2)
            all_deltas.append(deltas)
            params = params + deltas.mean(0)
        return all_deltas, [r.num_steps for r in results], store


@pytest.mark.parametrize("model_name", ["cnn", "batchnorm", "unet_small"])
@pytest.mark.parametrize("sizes, epochs, keep_state, in_order", [
    ([8, 8, 8, 8], 1, True, False),           # equal shards
    ([13, 8, 3, 0, 6, 9], 2, True, False),    # unequal, one smaller than a batch, one empty; 2 epochs
    ([13, 8, 3, 6], 3, False, False),         # --reset_optimizer
    ([13, 8, 3, 0, 6, 9], 2, True, True),     # the paper's re-split loaders: record order, last batch kept
])
def test_batched_engine_gives_the_loop_engines_deltas(model_name, sizes, epochs, keep_state, in_order):
    loop_deltas, loop_steps, loop_store = _run_engine(LoopEngine, model_name, sizes, epochs=epochs,
                                                      keep_state=keep_state, in_order=in_order)
    batched_deltas, batched_steps, batched_store = _run_engine(BatchedEngine, model_name, sizes, epochs=epochs,
                                                               keep_state=keep_state, in_order=in_order)
    assert loop_steps == batched_steps
    for a, b in zip(loop_deltas, batched_deltas):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)  # deltas ~1e-2: agreement to ~1e-12 relative
    if keep_state:
        assert torch.equal(loop_store.state.step, batched_store.state.step)
        torch.testing.assert_close(batched_store.state.max_exp_avg_sq, loop_store.state.max_exp_avg_sq,
                                   rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("engine_cls", [LoopEngine, BatchedEngine])
def test_in_order_jobs_take_the_records_in_order_and_keep_the_last_partial_batch(engine_cls):
    """A job with in_order (the paper's loaders after a re-split): batches are consecutive
    slices of the sub-client's records, the same every epoch, the last one partial."""
    seen = []

    def spy(images, *, train, gen):
        seen.append(images[:, 0, 0, 0].clone())
        return images

    shard = _shards([10])[0]
    trainer = LocalTrainer(_model("cnn"), nn.CrossEntropyLoss(), batch=4, epochs=2, prepare=spy)
    engine = engine_cls(trainer) if engine_cls is LoopEngine else engine_cls(trainer, chunk=1)
    _, results = engine.train(trainer.flat.get(), [Job(0, 0, shard, torch.Generator(), in_order=True)], None, lr=1e-3)
    pixels = shard.parent.images[shard.index, 0, 0, 0]
    assert results[0].num_steps == 6
    expected = [pixels[0:4], pixels[4:8], pixels[8:10]] * 2
    assert len(seen) == 6 and all(torch.equal(a, b) for a, b in zip(seen, expected))


def _federation(argv: list[str]):
    with float64():
        fed = build_federation(parse_config(argv))
        fed.data = type(fed.data)(fed.data.name, fed.data.task, [
            type(h)(h.name, *(Split(s.images.double(), s.targets, s.attributes) for s in (h.train, h.val, h.test)))
            for h in fed.data.hospitals], fed.data.in_channels, fed.data.num_outputs, fed.data.prepare,
            fed.data.attribute_groups)
        return fed


@pytest.mark.parametrize("mode_args", [
    ["--mode", "fedavg"],
    ["--mode", "dpsgd", "--noise_multiplier", "1.0", "-VN", "2"],
    ["--mode", "dpadam", "--noise_multiplier", "1.0", "-VN", "2"],
    ["--mode", "dpnova", "--noise_multiplier", "1.0", "-VN", "2"],
    ["--mode", "dp2rmsprop", "--noise_multiplier", "1.0", "-VN", "2", "--dp2_interval", "1"],
    ["--mode", "dpsgd", "--adaclip", "--ada_vn", "--noise_multiplier", "1.0", "--local_epochs", "2"],
    ["--mode", "fedavg", "--local_opt", "nadam", "-VN", "2"],
    ["--mode", "dpsgd", "--noise_multiplier", "1.0", "--local_opt", "sgd", "--lr", "0.05", "-VN", "2"],
])
def test_engines_agree_through_every_server_optimizer(mode_args):
    """Whole rounds (local training, release pipeline, server step, intermediary rule) with
    each engine from the same flags: the same global parameters after three rounds."""
    finals = []
    for engine in ("loop", "batched"):
        with float64():
            fed = _federation(TINY + mode_args + ["--engine", engine])
            state = loop.initial_state(fed)
            shards = loop.subclient_data(fed, state)
            for r in range(3):
                _, stats = loop.run_round(fed, state, shards, r)
                before = state.subclient_counts
                loop.adapt_subclients(fed, state, stats, r)
                if state.subclient_counts is not before:
                    shards = loop.subclient_data(fed, state)
            finals.append(state.params)
    assert finals[0].dtype == torch.float64
    torch.testing.assert_close(finals[1], finals[0], rtol=1e-9, atol=1e-12)


def test_batched_engine_refuses_sample_level_dp_sgd(tiny_args, capsys):
    with pytest.raises(SystemExit):
        parse_config(tiny_args + ["--mode", "dpsgd", "--noise_multiplier", "1.0", "--dp_level", "sample",
                                  "--sample_noise", "1.0", "--engine", "batched"])
    err = capsys.readouterr().err
    assert "--engine batched does not run --dp_level sample" in err and "use --engine loop" in err


def test_batched_engine_refuses_running_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 14 * 14, 2))
    with pytest.raises(ConfigError, match="running statistics"):
        BatchedEngine(LocalTrainer(model, nn.CrossEntropyLoss(), batch=4, epochs=1))


def test_segmentation_runs_batched(tiny_args):
    """The small U-Net with DiceCE loss end to end under the batched engine."""
    from federated.run import run_training
    summary = run_training(parse_config(TINY_SEG + ["--save_path", tiny_args[-1], "--engine", "batched"]))
    assert summary["rounds_run"] == 2


def test_engine_benchmark_prints_every_engine_and_the_ratios(capsys):
    from benchmarks import engine as bench
    bench.main(["--k", "2", "--rounds", "1", "--per_subclient", "4", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| small", "| narrow"))]
    assert len(rows) == 3 and all(len(re.findall(r"\d\.\d\dx \|", line)) == 2 for line in rows)
    bench.main(["--k", "2", "--rounds", "1", "--per_subclient", "4", "--threads", "1", "--models", "cnn_narrow"])
    assert [line[:10] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:] == ["| narrow C"]


def test_checkpoint_size_formula_matches_a_written_state(capsys):
    from benchmarks import checkpoint_size
    checkpoint_size.main(["--v", "8", "--measure", "1"])
    out = capsys.readouterr().out
    assert "| DenseNet-121 (RSNA-ICH) | 6,872,258 | 8 | 160 | 13.2 GB |" in out
    assert "measured: 82.47 MB per sub-client written (formula 82.47 MB)" in out


def test_channels_last_float32_gradients_are_as_accurate_as_the_plain_layout():
    """The loop engine's channels-last kernels sum in another order: against a float64
    reference their float32 gradients are within 1e-5 relative, as the plain layout's
    (measured: 2.4e-6 and 2.3e-6 for the small CNN)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 32, 32, generator=gen), torch.randint(0, 2, (16,), generator=gen)
    grads = {}
    for channels_last, dtype in ((True, torch.float32), (False, torch.float32), (False, torch.float64)):
        torch.manual_seed(0)
        model = build_model("cnn", 1, 2).to(dtype)
        flat = FlatState(model, channels_last=channels_last)
        nn.CrossEntropyLoss()(model(x.to(dtype)), y).backward()
        grads[channels_last, dtype] = [t.grad.double().clone() for t in flat.tensors]
    reference = grads[False, torch.float64]
    for layout in (True, False):
        errors = [float((g - r).norm() / r.norm()) for g, r in zip(grads[layout, torch.float32], reference)]
        assert max(errors) < 1e-5
