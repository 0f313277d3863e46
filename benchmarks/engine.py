"""Per-round local-training time of the engines, side by side in one process.

    python -m benchmarks.engine                      # small and narrow CNN, small U-Net, K = 20..160, CPU
    python -m benchmarks.engine --paper --gpu 0      # adds DenseNet-121 at 224 px and the paper's U-Net

Three ways to train the same K sub-clients for one round from the same keys:

- "before": the loop as it was before the fast engine, kept here only for comparison:
  one torch.optim.Adam (amsgrad) whose per-parameter state dicts are swapped in for each
  sub-client, contiguous (NCHW) parameters, the delta assembled by concatenation;
- "loop": the loop engine (flat channels-last parameters, stacked Adam state);
- "batched": the batched engine (vmap over the stacked sub-clients).

Rounds alternate between the three (round r of each, then round r + 1 of each), after one
warm-up round each, so that machine noise falls on all of them alike. With --paper, one
centralised epoch over the same images (one model, the same batch size) is timed too.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from datasets.base import Shard, Split
from federated.adam import SubclientMoments
from federated.engine import BatchedEngine, Job, LoopEngine
from federated.local import LocalTrainer, steps_per_epoch
from nets import build_model


@dataclass(frozen=True)
class Setting:
    name: str
    model: str
    px: int
    channels: int
    outputs: int
    batch: int
    per_subclient: int  # images per sub-client
    segmentation: bool = False


SMALL = [Setting("small CNN, 32 px", "cnn", 32, 1, 2, 16, 48),
         Setting("narrow CNN, 16 px", "cnn_narrow", 16, 1, 2, 16, 75),  # --scale paper: 75 images a hospital
         Setting("small U-Net, 32 px", "unet_small", 32, 1, 1, 8, 24, segmentation=True)]
# The paper's models and batch sizes; sub-client sizes of its RSNA-ICH (750 images per
# hospital at v = 8: ~94) and prostate hospitals.
PAPER = [Setting("DenseNet-121, 224 px", "densenet121", 224, 3, 2, 16, 94),
         Setting("paper U-Net, 256 px", "unet", 256, 1, 1, 8, 48, segmentation=True)]


class BeforeLoop:
    """The pre-engine loop (for comparison only): torch's Adam with swapped state dicts."""
    name = "before"

    def __init__(self, model: nn.Module, loss_fn: nn.Module, *, batch: int):
        self.model, self.loss_fn, self.batch = model, loss_fn, batch
        self.params = list(model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3, amsgrad=True)
        self.states: dict[int, list[dict]] = {}

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def load(self, vector: torch.Tensor) -> None:
        offset = 0
        for p in self.params:
            p.copy_(vector[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def train(self, global_params: torch.Tensor, jobs: list[Job], lr: float) -> torch.Tensor:
        deltas = torch.empty(len(jobs), global_params.numel(), device=global_params.device)
        for row, job in enumerate(jobs):
            self.load(global_params)
            self.optimizer.state.clear()
            for p, s in zip(self.params, self.states.get(row, [])):
                self.optimizer.state[p] = s
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            n = len(job.shard)
            order = torch.randperm(n, generator=job.gen).to(job.shard.index.device)
            for s in range(steps_per_epoch(n, self.batch)):
                self.optimizer.zero_grad(set_to_none=True)
                images, targets = job.shard.batch(order[s * self.batch:(s + 1) * self.batch])
                self.loss_fn(self.model(images), targets).backward()
                self.optimizer.step()
            self.states[row] = [self.optimizer.state[p] for p in self.params]
            deltas[row] = self.flat() - global_params
        return deltas


def _loss(setting: Setting) -> nn.Module:
    if setting.segmentation:
        from monai.losses import DiceCELoss
        return DiceCELoss(sigmoid=True)
    return nn.CrossEntropyLoss()


def _jobs(setting: Setting, k: int, device: torch.device, round_idx: int) -> list[Job]:
    gen = torch.Generator().manual_seed(0)
    n = setting.per_subclient
    images = torch.randn(k * n, setting.channels, setting.px, setting.px, generator=gen).to(device)
    targets = ((torch.rand(k * n, 1, setting.px, setting.px, generator=gen) > 0.5).float() if setting.segmentation
               else torch.randint(0, setting.outputs, (k * n,), generator=gen)).to(device)
    split = Split(images, targets)
    return [Job(0, i, Shard(split, torch.arange(i * n, (i + 1) * n, device=device)),
                torch.Generator().manual_seed(1000 * round_idx + i)) for i in range(k)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(setting: Setting, k: int, *, rounds: int, device: torch.device, chunk: int,
          centralised: bool) -> dict:
    """Seconds per round of each engine (mean over `rounds` timed rounds)."""
    torch.manual_seed(0)
    before = BeforeLoop(build_model(setting.model, setting.channels, setting.outputs).to(device), _loss(setting),
                        batch=setting.batch)
    torch.manual_seed(0)
    trainer = LocalTrainer(build_model(setting.model, setting.channels, setting.outputs).to(device), _loss(setting),
                           batch=setting.batch, epochs=1)
    engines = {"loop": LoopEngine(trainer), "batched": BatchedEngine(trainer, chunk=chunk)}
    params = trainer.flat.get()
    moments = {name: SubclientMoments.fresh([k], params.numel(), dtype=params.dtype, device=device)
               for name in engines}
    times: dict[str, list[float]] = {"before": [], "loop": [], "batched": []}
    for r in range(rounds + 1):  # round 0 warms up
        jobs = _jobs(setting, k, device, r)
        _sync(device)
        start = time.perf_counter()
        before.train(before.flat(), jobs, lr=1e-3)
        _sync(device)
        if r:
            times["before"].append(time.perf_counter() - start)
        for name, engine in engines.items():
            jobs = _jobs(setting, k, device, r)
            _sync(device)
            start = time.perf_counter()
            engine.train(params, jobs, moments[name], lr=1e-3)
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - start)
    row = {"setting": setting.name, "K": k, **{f"{n}_s": sum(t) / len(t) for n, t in times.items()}}
    if centralised:
        row["centralised_epoch_s"] = _centralised_epoch(trainer, setting, k, device)
    return row


def _centralised_epoch(trainer: LocalTrainer, setting: Setting, k: int, device: torch.device) -> float:
    """One epoch of one model over all K sub-clients' images, at the same batch size."""
    whole = _jobs(setting, k, device, 0)[0].shard.parent
    job = Job(0, 0, Shard(whole, torch.arange(len(whole), device=device)), torch.Generator().manual_seed(0))
    engine, params = LoopEngine(trainer), trainer.flat.get()
    engine.train(params, [job], None, lr=1e-3)  # warm-up
    _sync(device)
    start = time.perf_counter()
    engine.train(params, [job], None, lr=1e-3)
    _sync(device)
    return time.perf_counter() - start


def format_table(rows: list[dict]) -> str:
    central = any("centralised_epoch_s" in r for r in rows)
    head = "| setting | K | before s/round | loop s/round | batched s/round | before / loop | before / batched |"
    rule = "|---|---|---|---|---|---|---|"
    if central:
        head += " centralised epoch s | batched / centralised |"
        rule += "---|---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['setting']} | {r['K']} | {r['before_s']:.3f} | {r['loop_s']:.3f} | {r['batched_s']:.3f} | "
                f"{r['before_s'] / r['loop_s']:.2f}x | {r['before_s'] / r['batched_s']:.2f}x |")
        if central:
            c = r.get("centralised_epoch_s")
            line += f" {c:.3f} | {r['batched_s'] / c:.2f}x |" if c else " | |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[20, 40, 80, 160], help="sub-clients per round")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per engine (after one warm-up round)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--gpu", default="cpu", help="CUDA device index, or 'cpu'")
    p.add_argument("--paper", action="store_true", help="also the paper's models and sizes (meant for a GPU)")
    p.add_argument("--only_paper", action="store_true", help="only the paper's models")
    p.add_argument("--chunk", type=int, default=0, help="--engine_chunk of the batched engine (0 = automatic)")
    p.add_argument("--per_subclient", type=int, default=0, help="images per sub-client (0 = each setting's own)")
    p.add_argument("--models", nargs="+", default=None, help="only the settings of these --model names")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu" if args.gpu == "cpu" or not torch.cuda.is_available() else f"cuda:{args.gpu}")
    settings = ([] if args.only_paper else SMALL) + (PAPER if args.paper or args.only_paper else [])
    if args.models:
        settings = [s for s in settings if s.model in args.models]
    if args.per_subclient:
        settings = [Setting(**{**s.__dict__, "per_subclient": args.per_subclient}) for s in settings]
    rows = []
    todo = [(s, k) for s in settings for k in args.k]
    for setting, k in tqdm(todo, desc="benchmark", unit="setting"):
        rows.append(bench(setting, k, rounds=args.rounds, device=device, chunk=args.chunk,
                          centralised=setting in PAPER))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"device: {where}; torch {torch.__version__}; seconds per round of local training (mean of "
          f"{args.rounds}); one local epoch")
    print(format_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"device": where, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
