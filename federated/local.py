"""Local training of one sub-client: (global params, data, optimizer state, rng) -> delta.

One working model and one Adam optimizer serve every sub-client; each sub-client's Adam
moments are swapped in before its update and kept for its next round, so no per-client
model copies exist (DESIGN.md, data flow). Adam with amsgrad, as the paper's code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from datasets.base import Shard
from federated.flat import FlatState

OptimizerState = list[dict]  # one Adam state dict per trainable parameter, in model order


@dataclass
class LocalResult:
    delta: torch.Tensor
    num_samples: int
    num_steps: int
    loss: float


class LocalTrainer:
    def __init__(self, model: nn.Module, loss_fn: nn.Module, *, batch: int, epochs: int, prepare=None):
        self.model = model
        self.prepare = prepare  # uint8 -> float (and augmentation) for real datasets
        self.flat = FlatState(model)
        self.loss_fn = loss_fn
        self.batch = batch
        self.epochs = epochs
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3, amsgrad=True)

    def update(self, global_params: torch.Tensor, data: Shard, state: OptimizerState | None,
               *, lr: float, gen: torch.Generator) -> tuple[LocalResult, OptimizerState]:
        """Train from `global_params` on `data` for the configured epochs.

        Mini-batches are reshuffled every epoch from `gen`; the last incomplete batch is
        dropped as in the paper's loader, except that a sub-client smaller than one batch
        trains on all of its samples as a single batch.
        """
        self.flat.set(global_params)
        self._load_state(state)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
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

    def _load_state(self, state: OptimizerState | None) -> None:
        self.optimizer.state.clear()
        if state is not None:
            for p, s in zip(self.params, state):
                self.optimizer.state[p] = s


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
