"""Local training of one sub-client (the loop engine): (global params, data, Adam state,
generator) -> delta.

One working model serves every sub-client: its tensors are views into one flat vector
(federated/flat.py), so loading the global parameters, stepping Adam over the
sub-client's stacked state (federated/adam.py) and reading the delta are single vector
operations; no per-client model copies exist (docs/design.md, one round).
With `sample_dp` (--dp_level sample) the same model is wrapped once in Opacus's
GradSampleModule and torch's Adam (or NAdam, --local_opt nadam) in a DPOptimizer: local
steps become DP-SGD steps (privacy/sample_dp.py), and the sub-client's state rows are
handed to that optimizer as views.
"""
from __future__ import annotations

from dataclasses import dataclass

import warnings

import torch
import torch.nn as nn

from datasets.base import Shard
from federated.adam import EPS as ADAM_EPS
from federated.adam import LOCAL_STEPS, AdamMoments, nadam_momentum_product
from federated.flat import FlatState
from federated.perfedavg import PerFedAvgSettings, perfedavg_step
from privacy.sample_dp import PerSampleLoss, SampleDPSettings
from utils.seeding import secure_generator


@dataclass
class LocalResult:
    delta: torch.Tensor
    num_samples: int
    num_steps: int
    loss: float
    sample_rate: float = 1.0  # DP-SGD's Poisson rate (--dp_level sample)


def steps_per_epoch(n: int, batch: int, *, keep_last: bool = False) -> int:
    """The last incomplete batch is dropped as in the paper's shuffling loader, except that
    a sub-client smaller than one batch trains on all of its samples as a single batch;
    `keep_last` (the paper's loaders after a re-split) keeps it."""
    if not n:
        return 0
    return -(-n // batch) if keep_last else n // min(batch, n)


def epoch_order(n: int, *, in_order: bool, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """The order of one epoch's records: a fresh permutation, or record order (the paper's
    loaders after a re-split, which do not shuffle; no random draw is made then)."""
    return torch.arange(n, device=device) if in_order else torch.randperm(n, generator=gen).to(device)


class ShardDataset(torch.utils.data.Dataset):
    """A sub-client's shard as a map-style dataset, for Opacus's Poisson DPDataLoader."""

    def __init__(self, shard: Shard):
        self.shard = shard

    def __len__(self) -> int:
        return len(self.shard)

    def __getitem__(self, i: int):
        images, targets = self.shard.batch(torch.tensor([i], device=self.shard.index.device))
        return images[0], targets[0]


class LocalTrainer:
    def __init__(self, model: nn.Module, loss_fn: nn.Module, *, batch: int, epochs: int, prepare=None,
                 sample_dp: SampleDPSettings | None = None, optimizer: str = "adam",
                 perfedavg: PerFedAvgSettings | None = None):
        self.model = model
        self.prepare = prepare  # uint8 -> float (and augmentation) for real datasets
        self.flat = FlatState(model, channels_last=sample_dp is None)
        self.loss_fn = loss_fn
        self.batch = batch
        self.epochs = epochs
        self.sample_dp = sample_dp
        self.optimizer_name = optimizer
        self.local_step = LOCAL_STEPS[optimizer]  # one step of stacked rows (federated/adam.py)
        self.perfedavg = perfedavg  # --client_algo perfedavg_*: Per-FedAvg's steps instead of the optimizer's
        if sample_dp is not None:
            self._wrap_for_dp_sgd(sample_dp)

    def _wrap_for_dp_sgd(self, sample_dp: SampleDPSettings) -> None:
        # Opacus and torch.optim (which imports torch._dynamo, ~1.5 s) load only for DP-SGD.
        from opacus import GradSampleModule
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = {"nadam": lambda: torch.optim.NAdam(self.params, lr=1e-3),
                          "sgd": lambda: torch.optim.SGD(self.params, lr=1e-3),
                          "adam": lambda: torch.optim.Adam(self.params, lr=1e-3, amsgrad=True)}[self.optimizer_name]()
        # Opacus's hooks fire on the first layer, whose input needs no gradient; harmless.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        privacy = dict(noise_multiplier=sample_dp.noise_multiplier, max_grad_norm=sample_dp.max_grad_norm,
                       expected_batch_size=self.batch, secure_mode=sample_dp.secure)
        if sample_dp.grad_sample_mode == "ghost":
            # Per-sample gradient norms from a first backward pass, clipped sum from a second.
            self.train_model = GradSampleModuleFastGradientClipping(
                self.model, max_grad_norm=sample_dp.max_grad_norm, use_ghost_clipping=True)
            self.optimizer = DPOptimizerFastGradientClipping(self.optimizer, **privacy)
            self.dp_loss = DPLossFastGradientClipping(self.train_model, self.optimizer, PerSampleLoss(self.loss_fn))
        else:
            self.train_model = GradSampleModule(self.model)  # per-sample gradient hooks on the same parameters
            self.optimizer = DPOptimizer(self.optimizer, **privacy)
            self.dp_loss = self.loss_fn

    def update(self, global_params: torch.Tensor, data: Shard, state: AdamMoments, *, lr: float,
               gen: torch.Generator, in_order: bool = False) -> LocalResult:
        """Train from `global_params` on `data` for the configured epochs; `state` (one
        row) is updated in place. Mini-batches are reshuffled every epoch from `gen`, or
        with `in_order` taken in record order with the last partial batch kept."""
        if len(data) == 0:  # a sub-client the hash left empty this round: it sends a zero update
            return LocalResult(torch.zeros_like(global_params), 0, 0, 0.0)
        self.flat.set(global_params)
        if self.sample_dp is not None:
            return self._dp_sgd_update(global_params, data, state, lr, gen)
        if self.perfedavg is not None and self.perfedavg.algo == "pppml":
            return self._pppml_update(global_params, data, state, lr, gen, in_order)
        if self.perfedavg is not None:
            return self._perfedavg_update(global_params, data, state, gen, in_order)
        self.model.train()
        n = len(data)
        batch = min(self.batch, n)
        params, grads = self.flat.vector[None], self.flat.grad[None]
        total_loss, steps = 0.0, 0
        for _ in range(self.epochs):
            order = epoch_order(n, in_order=in_order, gen=gen, device=data.index.device)
            for s in range(steps_per_epoch(n, self.batch, keep_last=in_order)):
                idx = order[s * batch:(s + 1) * batch]
                self.flat.zero_grad()
                images, targets = data.batch(idx)
                if self.prepare is not None:
                    images = self.prepare(images, train=True, gen=gen)
                loss = self.loss_fn(self.model(images), targets)
                loss.backward()
                self.local_step(params, grads, state, lr)
                total_loss += loss.detach()
                steps += 1
        delta = self.flat.get() - global_params
        return LocalResult(delta, n, steps, float(total_loss) / max(steps, 1))

    def batch_gradient(self, w: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                        gen: torch.Generator) -> tuple[torch.Tensor, float]:
        """The loss gradient at flat parameters `w` on one batch (and the loss)."""
        self.flat.set(w)
        self.flat.zero_grad()
        if self.prepare is not None:
            images = self.prepare(images, train=True, gen=gen)
        loss = self.loss_fn(self.model(images), targets)
        loss.backward()
        return self.flat.grad.clone(), float(loss.detach())

    def _perfedavg_update(self, global_params: torch.Tensor, data: Shard, state: AdamMoments,
                          gen: torch.Generator, in_order: bool) -> LocalResult:
        """Per-FedAvg's local steps (federated/perfedavg.py): each step takes the next two
        (FO) or three (HF) batches of the epoch's order, wrapping around a small shard;
        an epoch has max(1, batches // that) steps. The optimizer state is not used."""
        self.model.train()
        n, batch = len(data), min(self.batch, len(data))
        per_step = 3 if self.perfedavg.algo == "perfedavg_hf" else 2
        w, losses, steps = global_params.clone(), [], 0
        for _ in range(self.epochs):
            order = epoch_order(n, in_order=in_order, gen=gen, device=data.index.device)
            chunks = [order[i * batch:(i + 1) * batch] for i in range(max(1, n // batch))]
            for s in range(max(1, len(chunks) // per_step)):
                batches = {k: data.batch(chunks[(s * per_step + k) % len(chunks)]) for k in range(per_step)}

                def grad(params: torch.Tensor, k: int) -> torch.Tensor:
                    g, loss = self.batch_gradient(params, *batches[k], gen)
                    if k == 0 and params is w:  # the training loss: at the step's start, on its first batch
                        losses.append(loss)
                    return g
                w = perfedavg_step(w, grad, tuple(range(per_step)), self.perfedavg)
                steps += 1
        state.step += steps
        return LocalResult(w - global_params, n, steps, sum(losses) / max(len(losses), 1))

    def _pppml_update(self, global_params: torch.Tensor, data: Shard, state: AdamMoments, lr: float,
                      gen: torch.Generator, in_order: bool) -> LocalResult:
        """The published PPPML-HMI code's "Per-FedAvg", reproduced (--client_algo pppml): it
        snapshots the parameters at every batch, so its "restore before the meta step"
        restores the point it is at, and what runs is alternating steps. Even batches: a
        step of the client's optimizer (--local_opt at --lr, its state kept); odd batches:
        a fresh Adam's first step at --beta from the gradient there, beta g / (|g| + eps)
        per coordinate. Not Per-FedAvg: no gradient is taken at a personalised point."""
        self.model.train()
        n, batch = len(data), min(self.batch, len(data))
        params, grads = self.flat.vector[None], self.flat.grad[None]
        self.flat.set(global_params)
        total_loss, steps = 0.0, 0
        for _ in range(self.epochs):
            order = epoch_order(n, in_order=in_order, gen=gen, device=data.index.device)
            for i in range(steps_per_epoch(n, self.batch, keep_last=in_order)):
                self.flat.zero_grad()
                images, targets = data.batch(order[i * batch:(i + 1) * batch])
                if self.prepare is not None:
                    images = self.prepare(images, train=True, gen=gen)
                loss = self.loss_fn(self.model(images), targets)
                loss.backward()
                if i % 2 == 0:
                    self.local_step(params, grads, state, lr)
                else:
                    with torch.no_grad():
                        params.sub_(self.perfedavg.beta * grads / (grads.abs() + ADAM_EPS))
                total_loss += loss.detach()
                steps += 1
        return LocalResult(self.flat.get() - global_params, n, steps, float(total_loss) / max(steps, 1))

    def _dp_sgd_update(self, global_params: torch.Tensor, data: Shard, state: AdamMoments, lr: float,
                       gen: torch.Generator) -> LocalResult:
        """Local epochs of DP-SGD: Poisson batches of expected size `batch`, per-sample
        clipping and noise (Opacus). Counts the optimizer steps actually taken."""
        from opacus.data_loader import DPDataLoader
        from opacus.utils.batch_memory_manager import BatchMemoryManager

        if self.sample_dp.secure:  # batches, augmentation and noise unpredictable from --seed
            gen = secure_generator()
        self._lend_state(state)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n = len(data)
        rate = min(1.0, self.batch / n)
        loader = DPDataLoader(ShardDataset(data), sample_rate=rate, generator=gen)
        self.optimizer.expected_batch_size = max(1, round(rate * n))
        self.optimizer.generator = _noise_generator(gen, data.index.device)
        physical = self.sample_dp.physical_batch or n
        self.train_model.train()
        total_loss, steps = 0.0, 0
        for _ in range(self.epochs):
            with BatchMemoryManager(data_loader=loader, max_physical_batch_size=physical,
                                    optimizer=self.optimizer) as batches:
                for images, targets in batches:
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.prepare is not None:
                        images = self.prepare(images, train=True, gen=gen)
                    if len(images):
                        loss = self.dp_loss(self.train_model(images), targets)
                        loss.backward()
                        total_loss += loss.detach()
                    else:  # an empty Poisson batch still takes its noisy step
                        for p in self.params:
                            p.grad_sample = torch.zeros((0, *p.shape), device=p.device)
                            p.grad = torch.zeros_like(p)
                    self.optimizer.step()
                    steps += 0 if self.optimizer._is_last_step_skipped else 1
        self.optimizer.zero_grad(set_to_none=True)
        # torch's SGD keeps no step count: the row's count advances by the steps taken
        state.step[0] = state.step[0] + steps if self.optimizer_name == "sgd" else \
            float(self.optimizer.state[self.params[0]]["step"])
        delta = self.flat.get() - global_params
        return LocalResult(delta, n, steps, float(total_loss) / max(steps, 1), sample_rate=rate)

    def _lend_state(self, state: AdamMoments) -> None:
        """Give torch's optimizer the sub-client's state rows as views: it updates them in
        place. NAdam's momentum product is a function of the step count (federated/adam.py)."""
        self.optimizer.state.clear()
        keys = {"nadam": ("exp_avg", "exp_avg_sq"), "sgd": ()}.get(self.optimizer_name,
                                                                   ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
        views = {key: self.flat.split(getattr(state, key)[0]) for key in keys}
        extra = {"mu_product": nadam_momentum_product(state.step[:1])[0].to(torch.get_default_dtype())} \
            if self.optimizer_name == "nadam" else {}
        for i, t in enumerate(self.flat.tensors):
            if t.requires_grad:
                self.optimizer.state[t] = {"step": torch.tensor(float(state.step[0]), dtype=torch.float32),
                                           **{key: v[i] for key, v in views.items()},
                                           **{key: v.clone() for key, v in extra.items()}}


def _noise_generator(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """DP-SGD noise from the run's stream; on a GPU a CUDA generator seeded from it."""
    if device.type == "cpu":
        return gen
    cuda_gen = torch.Generator(device=device)
    cuda_gen.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    return cuda_gen
