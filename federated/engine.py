"""Engines: how a round's participating sub-clients are trained.

Both take the same jobs (each sub-client's shard and keyed generator) and the same stacked
Adam state, and return the same stacked deltas [K, P] (tests check this in float64):

- "loop": one sub-client after the other on one working model (federated/local.py). The
  faster on a CPU, where convolution kernels, not Python, dominate a small model's step.
- "batched": the sub-clients together: stacked [K, P] parameters, `torch.func.vmap` over the
  forward of each sub-client's own batch, one backward against the stack, and Adam over the
  stacked state with per-row step counts (federated/adam.py). Rows are sorted by their
  number of local steps, so the rows still training form a prefix and finished rows cost
  nothing; rows whose batch size differs (a sub-client smaller than one batch) are run in
  their own group rather than padded, which keeps BatchNorm's batch statistics exact. On
  a GPU this turns K small host-bound steps into one compute-bound step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from datasets.base import Shard
from federated.config import ConfigError
from federated.adam import AdamMoments, SubclientMoments
from federated.local import LocalResult, LocalTrainer, epoch_order, steps_per_epoch

CHUNK_MEMORY_FRACTION = 0.5  # of free accelerator memory
# On a CPU a larger stack runs slower per row once it leaves the caches and the allocator
# pages it in: the small U-Net at K = 160 (~2.8 GB by _row_bytes) took 4.4x the time of
# K = 80 (~1.4 GB), against the expected 2x (benchmarks/engine.py).
CPU_CHUNK_BYTES = 1e9
# --engine auto on a CPU: the batched engine wins where many small kernels leave a step
# bound by per-operation overhead (the small U-Net at 32 px: 1.8-2.0x the loop; the narrow
# CNN at 16 px: 2.6-3.8x), the loop where convolutions dominate (the small CNN at 32 px:
# the loop 1.1-3.8x faster).
CPU_BATCHED_MODELS = ("unet_small", "cnn_narrow")


@dataclass
class Job:
    """One participating sub-client: hospital h, sub-client k, its data and generator."""
    hospital: int
    subclient: int
    shard: Shard
    gen: torch.Generator
    in_order: bool = False  # record order, last partial batch kept (--subclient_split paper after a re-split)


def _state_of(moments: SubclientMoments | None, jobs: list[Job], numel: int, dtype: torch.dtype,
              device: torch.device) -> AdamMoments:
    """The jobs' Adam rows (copies), or fresh rows with --reset_optimizer."""
    if moments is None:
        return AdamMoments.zeros(len(jobs), numel, dtype=dtype, device=device)
    index = torch.tensor([moments.row(j.hospital, j.subclient) for j in jobs], device=device)
    return moments.state.rows(index)


class LoopEngine:
    name = "loop"

    def __init__(self, trainer: LocalTrainer):
        self.trainer = trainer

    def train(self, global_params: torch.Tensor, jobs: list[Job], moments: SubclientMoments | None,
              lr: float) -> tuple[torch.Tensor, list[LocalResult]]:
        deltas = torch.empty(len(jobs), global_params.numel(), dtype=global_params.dtype,
                             device=global_params.device)
        results = []
        for row, job in enumerate(jobs):
            if moments is None:
                state = AdamMoments.zeros(1, global_params.numel(), dtype=global_params.dtype,
                                          device=global_params.device)
            else:
                state = moments.of(job.hospital, job.subclient)  # views: updated in place
            result = self.trainer.update(global_params, job.shard, state, lr=lr, gen=job.gen, in_order=job.in_order)
            deltas[row] = result.delta
            results.append(result)
        return deltas, results


class BatchedEngine:
    name = "batched"

    def __init__(self, trainer: LocalTrainer, *, chunk: int = 0):
        if trainer.sample_dp is not None:
            raise ConfigError("--engine batched does not run sample-level DP-SGD (--dp_level sample), whose "
                              "per-sample clipping comes from Opacus; use --engine loop")
        buffers = [n for n, b in trainer.model.named_buffers() if b.is_floating_point()]
        if buffers:
            raise ConfigError(f"--engine batched needs a model without floating buffers (this one has {buffers[0]}, "
                              "e.g. BatchNorm's running statistics, which the stacked forward cannot update); "
                              "use --engine loop or BatchNorm with track_running_stats=False")
        self.trainer, self.chunk = trainer, chunk
        self.flat = trainer.flat
        self._row_bytes: int | None = None

    def train(self, global_params: torch.Tensor, jobs: list[Job], moments: SubclientMoments | None,
              lr: float) -> tuple[torch.Tensor, list[LocalResult]]:
        t = self.trainer
        numel = global_params.numel()
        steps = [t.epochs * steps_per_epoch(len(j.shard), t.batch, keep_last=j.in_order) for j in jobs]
        order = sorted(range(len(jobs)), key=lambda i: -steps[i])  # active rows form a prefix
        deltas = torch.zeros(len(jobs), numel, dtype=global_params.dtype, device=global_params.device)
        results: list[LocalResult | None] = [None] * len(jobs)
        sample = next((j.shard for j in jobs if len(j.shard)), None)  # None: nobody has data to train on
        size = self.chunk or (self.auto_chunk(global_params, sample) if sample is not None else max(len(jobs), 1))
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            chunk_jobs = [jobs[i] for i in rows]
            state = _state_of(moments, chunk_jobs, numel, global_params.dtype, global_params.device)
            chunk_deltas, losses = self._train_rows(global_params, chunk_jobs, [steps[i] for i in rows], state, lr)
            index = torch.tensor(rows, device=global_params.device)
            deltas.index_copy_(0, index, chunk_deltas)
            if moments is not None:
                moments.state.put(torch.tensor([moments.row(j.hospital, j.subclient) for j in chunk_jobs],
                                               device=global_params.device), state)
            for i, job, loss in zip(rows, chunk_jobs, losses):
                results[i] = LocalResult(deltas[i], len(job.shard), steps[i], loss / max(steps[i], 1))
        return deltas, results

    def _train_rows(self, global_params: torch.Tensor, jobs: list[Job], steps: list[int], state: AdamMoments,
                    lr: float) -> tuple[torch.Tensor, list[float]]:
        """Train rows sorted by descending step count; returns their deltas and loss sums."""
        from torch.func import functional_call, vmap

        t = self.trainer
        model, names = t.model, self.flat.names
        model.train()
        params = global_params.expand(len(jobs), -1).clone()
        grads = torch.zeros_like(params)
        loss_sums = torch.zeros(len(jobs), dtype=torch.float64, device=params.device)
        orders: list[torch.Tensor | None] = [None] * len(jobs)

        def row_loss(row_params: dict, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return t.loss_fn(functional_call(model, row_params, (images,)), targets)

        batched_loss = vmap(row_loss)
        for s in range(steps[0] if steps else 0):
            active = sum(1 for n in steps if n > s)
            groups: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
            for r in range(active):
                shard, gen, in_order = jobs[r].shard, jobs[r].gen, jobs[r].in_order
                n = len(shard)
                batch, per_epoch = min(t.batch, n), steps_per_epoch(n, t.batch, keep_last=in_order)
                j = s % per_epoch
                if j == 0:  # a new epoch: the same draws, in the same order, as the loop engine
                    orders[r] = epoch_order(n, in_order=in_order, gen=gen, device=shard.index.device)
                images, targets = shard.batch(orders[r][j * batch:(j + 1) * batch])
                if t.prepare is not None:
                    images = t.prepare(images, train=True, gen=gen)
                groups.setdefault(len(targets), []).append((r, images, targets))
            for members in groups.values():
                rows = [m[0] for m in members]
                contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
                where = slice(rows[0], rows[0] + len(rows)) if contiguous else torch.tensor(rows, device=params.device)
                leaf = params[where].detach().requires_grad_()
                # Contiguous copies: vmap's batching rules (GroupNorm's) do not take channels-last.
                row_params = {name: view.contiguous() for name, view in zip(names, self.flat.split(leaf))}
                losses = batched_loss(row_params,
                                      torch.stack([m[1] for m in members]), torch.stack([m[2] for m in members]))
                (grad,) = torch.autograd.grad(losses.sum(), leaf)
                grads[where] = grad
                loss_sums[where] += losses.detach().to(torch.float64)
            self.trainer.local_step(params[:active], grads[:active], state.rows(slice(0, active)), lr)
        return params - global_params, loss_sums.tolist()

    def auto_chunk(self, global_params: torch.Tensor, sample_from: Shard) -> int:
        """Rows trained together: as many as fit in CHUNK_MEMORY_FRACTION of free memory, by
        an estimate of one row's parameters, gradients, Adam state and activations."""
        if self._row_bytes is None:
            self._row_bytes = _row_bytes(self.trainer, global_params, sample_from)
        device = global_params.device
        if device.type == "cuda":
            budget = torch.cuda.mem_get_info(device)[0] * CHUNK_MEMORY_FRACTION
        else:
            budget = min(CPU_CHUNK_BYTES, _available_ram() * CHUNK_MEMORY_FRACTION)
        return max(1, int(budget // self._row_bytes))


def _row_bytes(trainer: LocalTrainer, global_params: torch.Tensor, sample_from: Shard) -> int:
    """Bytes one stacked row needs: 6 copies of the parameters (params, grads, 3 Adam
    moments, the delta) and 3 of the activations of one batch (forward, saved, backward)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()) if torch.is_tensor(out) else None)
             for m in trainer.model.modules() if not list(m.children())]
    images, _ = sample_from.batch(torch.zeros(1, dtype=torch.long, device=sample_from.index.device))
    if trainer.prepare is not None:
        images = trainer.prepare(images, train=False)
    try:
        with torch.no_grad():
            trainer.model(images)
    finally:
        for h in hooks:
            h.remove()
    per_value = global_params.element_size()
    return per_value * (6 * global_params.numel() + 3 * trainer.batch * sum(sizes))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def build_engine(name: str, trainer: LocalTrainer, *, chunk: int = 0) -> LoopEngine | BatchedEngine:
    return BatchedEngine(trainer, chunk=chunk) if name == "batched" else LoopEngine(trainer)


def default_engine(device: torch.device, trainer: LocalTrainer, model_name: str) -> tuple[str, str]:
    """(engine, why) for --engine auto: the faster one measured for the device and model,
    where batched can run."""
    if trainer.sample_dp is not None:
        return "loop", "auto: batched does not run --dp_level sample"
    if trainer.perfedavg is not None:
        return "loop", "auto: batched does not run Per-FedAvg (--client_algo)"
    if any(b.is_floating_point() for b in trainer.model.buffers()):
        return "loop", "auto: the model has running statistics"
    if device.type == "cuda":
        return "batched", "auto: the faster on a GPU"
    if model_name in CPU_BATCHED_MODELS:
        return "batched", f"auto: the faster for --model {model_name} on a CPU"
    return "loop", f"auto: the faster for --model {model_name} on a CPU"
