"""Local training of one sub-client: (global params, data, optimizer state, rng) -> delta.

One working model and one Adam optimizer serve every sub-client; each sub-client's Adam
moments are swapped in before its update and kept for its next round, so no per-client
model copies exist (docs/design.md, one round). Adam with amsgrad, as the paper's code.
With `sample_dp` (--dp_level sample) the same model is wrapped once in Opacus's
GradSampleModule and Adam in a DPOptimizer: local steps become DP-SGD steps
(privacy/sample_dp.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import warnings

import torch
import torch.nn as nn

from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.batch_memory_manager import BatchMemoryManager
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

from datasets.base import Shard
from federated.flat import FlatState
from privacy.sample_dp import PerSampleLoss, SampleDPSettings

OptimizerState = list[dict]  # one Adam state dict per trainable parameter, in model order


@dataclass
class LocalResult:
    delta: torch.Tensor
    num_samples: int
    num_steps: int
    loss: float
    sample_rate: float = 1.0  # DP-SGD's Poisson rate (--dp_level sample)


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
                 sample_dp: SampleDPSettings | None = None):
        self.model = model
        self.prepare = prepare  # uint8 -> float (and augmentation) for real datasets
        self.flat = FlatState(model)
        self.loss_fn = loss_fn
        self.batch = batch
        self.epochs = epochs
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3, amsgrad=True)
        self.sample_dp = sample_dp
        if sample_dp is not None:
            # Opacus's hooks fire on the first layer, whose input needs no gradient; harmless.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            privacy = dict(noise_multiplier=sample_dp.noise_multiplier, max_grad_norm=sample_dp.max_grad_norm,
                           expected_batch_size=batch)
            if sample_dp.grad_sample_mode == "ghost":
                # Per-sample gradient norms from a first backward pass, clipped sum from a second.
                self.train_model = GradSampleModuleFastGradientClipping(
                    model, max_grad_norm=sample_dp.max_grad_norm, use_ghost_clipping=True)
                self.optimizer = DPOptimizerFastGradientClipping(self.optimizer, **privacy)
                self.dp_loss = DPLossFastGradientClipping(self.train_model, self.optimizer, PerSampleLoss(loss_fn))
            else:
                self.train_model = GradSampleModule(model)  # per-sample gradient hooks on the same parameters
                self.optimizer = DPOptimizer(self.optimizer, **privacy)
                self.dp_loss = loss_fn

    def update(self, global_params: torch.Tensor, data: Shard, state: OptimizerState | None,
               *, lr: float, gen: torch.Generator) -> tuple[LocalResult, OptimizerState]:
        """Train from `global_params` on `data` for the configured epochs.

        Mini-batches are reshuffled every epoch from `gen`; the last incomplete batch is
        dropped as in the paper's loader, except that a sub-client smaller than one batch
        trains on all of its samples as a single batch.
        """
        if len(data) == 0:  # a sub-client the hash left empty this round: it sends a zero update
            return LocalResult(torch.zeros_like(global_params), 0, 0, 0.0), state
        self.flat.set(global_params)
        self._load_state(state)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.sample_dp is not None:
            return self._dp_sgd_update(global_params, data, gen)
        self.model.train()
        n = len(data)
        batch = min(self.batch, n)
        steps_per_epoch = n // batch
        total_loss, steps = 0.0, 0
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).to(data.index.device)
            for s in range(steps_per_epoch):
                idx = order[s * batch:(s + 1) * batch]
                self.optimizer.zero_grad(set_to_none=True)
                images, targets = data.batch(idx)
                if self.prepare is not None:
                    images = self.prepare(images, train=True, gen=gen)
                loss = self.loss_fn(self.model(images), targets)
                loss.backward()
                self.optimizer.step()
                total_loss += loss.detach()
                steps += 1
        delta = self.flat.get() - global_params
        result = LocalResult(delta, n, steps, float(total_loss) / max(steps, 1))
        return result, [self.optimizer.state[p] for p in self.params]

    def _dp_sgd_update(self, global_params: torch.Tensor, data: Shard,
                       gen: torch.Generator) -> tuple[LocalResult, OptimizerState]:
        """Local epochs of DP-SGD: Poisson batches of expected size `batch`, per-sample
        clipping and noise (Opacus). Counts the optimizer steps actually taken."""
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
        delta = self.flat.get() - global_params
        result = LocalResult(delta, n, steps, float(total_loss) / max(steps, 1), sample_rate=rate)
        return result, [self.optimizer.state[p] for p in self.params]

    def _load_state(self, state: OptimizerState | None) -> None:
        self.optimizer.state.clear()
        if state is not None:
            for p, s in zip(self.params, state):
                self.optimizer.state[p] = s


def _noise_generator(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """DP-SGD noise from the run's stream; on a GPU a CUDA generator seeded from it."""
    if device.type == "cpu":
        return gen
    cuda_gen = torch.Generator(device=device)
    cuda_gen.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    return cuda_gen


def average_states(states: list[OptimizerState]) -> OptimizerState | None:
    """Element-wise mean of several sub-clients' Adam states (used when a hospital is
    re-split: its new sub-clients all start from the average, as the paper's code)."""
    states = [s for s in states if s is not None and all(s)]
    if not states:
        return None
    averaged = []
    for per_param in zip(*states):
        averaged.append({key: torch.stack([s[key].float() for s in per_param]).mean(0).to(per_param[0][key].dtype)
                         for key in per_param[0]})
    return averaged


def clone_state(state: OptimizerState | None) -> OptimizerState | None:
    if state is None:
        return None
    return [{k: v.clone() for k, v in s.items()} for s in state]
