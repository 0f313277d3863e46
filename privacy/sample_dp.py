"""Sample-level DP-SGD inside each hospital (`--dp_level sample`), with Opacus.

Each local step: Poisson-sample a logical batch (rate q = batch / n of the sub-client's
data; Opacus's DPDataLoader), split it into physical batches (BatchMemoryManager),
compute per-sample gradients (GradSampleModule hooks) or only their norms (ghost
clipping, `--grad_sample_mode ghost`), clip each to `--max_grad_norm`,
sum, add N(0, (z C)^2) and divide by the expected batch size (DPOptimizer; Abadi et al.,
CCS 2016, Alg. 1). Local Adam then steps on the noised gradient.

Accounting: every hospital has its own history of (z, q) per step actually taken. A
patient belongs to one sub-client, so a round charges each hospital with the largest q
and the most steps among its sub-clients that took part (exact with one sub-client,
conservative with several). Epsilon comes from the shared accountants (Opacus RDP/PRV,
dp-accounting PLD). With -N 1 this is plain centralised DP-SGD.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from opacus.accountants.utils import get_noise_multiplier

from privacy.accountants import ACCOUNTANTS, Sampling, epsilon

POISSON = Sampling("poisson", 1.0, 1, 1)  # per-step rates live in the history itself


@dataclass(frozen=True)
class SampleDPSettings:
    noise_multiplier: float
    max_grad_norm: float
    physical_batch: int  # 0: the logical batch is processed in one pass
    grad_sample_mode: str = "hooks"  # or "ghost": Opacus's ghost clipping (no per-sample gradients stored)


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


def sample_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                            accountant: str) -> float:
    """z that keeps `steps` DP-SGD steps at rate `sample_rate` within `target_epsilon` (Opacus)."""
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant="prv" if accountant == "prv" else "rdp"))


class SampleLevelLedger:
    """Per-hospital history of DP-SGD steps: [(z, q), ...] one entry per step taken."""

    def __init__(self, *, hospitals: list[str], noise_multiplier: float, delta: float):
        self.hospitals = hospitals
        self.z = noise_multiplier
        self.delta = delta
        self.history: dict[str, list[tuple[float, float]]] = {h: [] for h in hospitals}

    def charge(self, hospital: str, *, sample_rate: float, steps: int) -> None:
        self.history[hospital].extend([(self.z, sample_rate)] * steps)

    def epsilon(self, hospital: str, accountant: str = "rdp") -> float:
        return epsilon(self.history[hospital], delta=self.delta, accountant=accountant, sampling=POISSON)

    def max_epsilon(self, accountant: str = "rdp") -> float:
        return max(self.epsilon(h, accountant) for h in self.hospitals)

    def report(self, accountants=ACCOUNTANTS) -> dict:
        return {"noise_multiplier": self.z, "delta": self.delta,
                "steps": {h: len(v) for h, v in self.history.items()},
                "epsilon_per_hospital": {h: {a: self.epsilon(h, a) for a in accountants} for h in self.hospitals},
                "epsilon_max": {a: self.max_epsilon(a) for a in accountants}}

    def state_dict(self) -> dict:
        return {"z": self.z, "delta": self.delta, "history": {h: list(v) for h, v in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.z, self.delta = state["z"], state["delta"]
        self.history = {h: [tuple(e) for e in v] for h, v in state["history"].items()}


def charge_round(ledger: SampleLevelLedger, steps_taken: dict[str, list[tuple[float, int]]]) -> None:
    """steps_taken: hospital -> [(q, steps) per sub-client that trained this round]."""
    for hospital, runs in steps_taken.items():
        ledger.charge(hospital, sample_rate=max(q for q, _ in runs), steps=max(s for _, s in runs))
