"""Sample-level DP-SGD inside each hospital (`--dp_level sample`), with Opacus.

Each local step: Poisson-sample a logical batch (rate q = batch / n of the sub-client's
data; Opacus's DPDataLoader), split it into physical batches (BatchMemoryManager),
compute per-sample gradients (GradSampleModule hooks) or only their norms (ghost
clipping, `--grad_sample_mode ghost`), clip each to `--max_grad_norm`,
sum, add N(0, (z C)^2) and divide by the expected batch size (DPOptimizer; Abadi et al.,
CCS 2016, Alg. 1). Local Adam then steps on the noised gradient. The batches, any
augmentation and the noise come from the sub-client's keyed generator (the seed), or under
--secure_rng from one seeded by the OS: amplification by sampling needs the batches secret.

Accounting: every hospital has its own account in the shared ledger ("sample/<hospital>")
with one (z, q) entry per step actually taken. With -N 1 this is plain centralised DP-SGD.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from privacy.accountants import Sampling, calibrate, epsilon
from privacy.ledger import PrivacyLedger

POISSON = Sampling("poisson", 1.0, 1, 1)  # per-step rates live in the history itself
RECORD_ADJACENCY = "one record (a patient's image) added to or removed from a hospital's training data"


@dataclass(frozen=True)
class SampleDPSettings:
    noise_multiplier: float
    max_grad_norm: float
    physical_batch: int  # 0: the logical batch is processed in one pass
    grad_sample_mode: str = "hooks"  # or "ghost": Opacus's ghost clipping (no per-sample gradients stored)
    # --secure_rng: Poisson batches, augmentation and noise from a generator seeded by the OS for
    # each sub-client and round, and Opacus's secure_mode noise (hardened against float attacks)
    secure: bool = False


class PerSampleLoss(nn.Module):
    """A classification loss per sample ([B], the mean over labels for multi-label) or its
    batch mean, switched by `reduction` as Opacus's ghost clipping loss wrapper expects."""

    SUPPORTED = (nn.CrossEntropyLoss, nn.BCEWithLogitsLoss)

    def __init__(self, loss: nn.Module):
        super().__init__()
        if not isinstance(loss, self.SUPPORTED):
            raise ValueError(f"ghost clipping needs a per-sample loss; {type(loss).__name__} has none here")
        self.loss = copy.deepcopy(loss)
        self.loss.reduction = "none"
        self.reduction = "mean"

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_sample = self.loss(outputs, targets).reshape(outputs.shape[0], -1).mean(1)
        return per_sample if self.reduction == "none" else per_sample.mean()


def opacus_steps_per_epoch(sample_rate: float) -> int:
    """Logical batches Opacus's DPDataLoader draws per epoch: int(1 / q)."""
    return int(1 / sample_rate)


def sample_noise_multiplier(*, target_epsilon: float, delta: float, subclient_sizes: list[list[int]], batch: int,
                            steps_per_round: int, rounds: int, accountant: str) -> float:
    """The smallest z that keeps every hospital within `target_epsilon` over all planned
    rounds, charged as `charge_round` charges it: each round with the largest rate
    q = batch / n and the most steps among the hospital's sub-clients, where a sub-client
    of n records takes the int(1 / q) steps per epoch that Opacus really draws
    (`steps_per_round` = local epochs). subclient_sizes[h] lists hospital h's sub-clients."""
    plans = set()
    for sizes in subclient_sizes:
        rates = [min(1.0, batch / n) for n in sizes if n > 0]
        if rates:
            plans.add((max(rates), max(opacus_steps_per_epoch(q) for q in rates) * steps_per_round * rounds))

    def spent(z: float) -> float:
        return max(epsilon([(z, q)] * steps, delta=delta, accountant=accountant, sampling=POISSON)
                   for q, steps in plans)
    return calibrate(target_epsilon, spent, what="--sample_epsilon")


def open_sample_accounts(ledger: PrivacyLedger, hospitals: list[str], *, delta: float) -> None:
    for h in hospitals:
        ledger.open(f"sample/{h}", level="sample", unit="record", adjacency=RECORD_ADJACENCY, relation="add_remove",
                    sampling=POISSON, delta=delta)


def charge_round(ledger: PrivacyLedger, noise_multiplier: float, steps_taken: dict[str, list[tuple[float, int]]]) -> None:
    """steps_taken: hospital -> [(q, steps) per sub-client that trained this round]. A record
    is in one sub-client; charging each hospital with its largest q and most steps is exact
    with one sub-client and conservative with several."""
    for hospital, runs in steps_taken.items():
        runs = [(q, s) for q, s in runs if s > 0]
        if not runs:
            continue
        ledger.charge(f"sample/{hospital}", noise_multiplier, rate=max(q for q, _ in runs),
                      count=max(s for _, s in runs))
