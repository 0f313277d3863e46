"""Client-level DP (DP-FedAvg with intermediaries) as release steps.

Client side, each sub-client clips its update (`client_message`); server side, `combine`
sums the messages with public weights and `finalize` adds Gaussian noise whose std is
fixed by public quantities only (z, C and the largest weight any sub-client can have),
never by who was sampled. Every round declares its releases (privacy/events.py) and charges
them to the ledger for all three units, sampled-out rounds included.

Under --strict_dp the intermediary rule's statistic (the sum of clipped norms) and the
adaptive clip bound's count are released with their own noise on the same sample; they
compose with the update into one Gaussian per unit and round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from privacy.accountants import Sampling
from privacy.clipping import FixedClip
from privacy.events import (ADJACENCY, PAPER_SPLIT_PATIENT, UNITS, GaussianRelease, count_release,
                            norm_sum_release, relation, round_multipliers, update_release)
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, update_norms


@dataclass
class RoundPlan:
    """The public facts of one round that the release depends on."""
    max_weight: float         # the largest aggregation weight any sub-client can have (sets the noise std)
    noise_gen: torch.Generator


@dataclass
class ReleaseResult:
    update: torch.Tensor                       # the released aggregate
    stats: dict[str, float] = field(default_factory=dict)


def round_releases(*, z: float, sampling: Sampling, subclients: int, clipped: bool = True,
                   norm_sum_noise: float | None = None, count_noise: float | None = None,
                   patient_subclients: int = 1) -> list[GaussianRelease]:
    """The Gaussians one round releases, in units of the clip bound (C = 1; only the ratio
    of std to sensitivity matters): the update, and with --strict_dp the norm sum and,
    with --adaclip, the clip count. `patient_subclients`: sub-clients one patient can
    change (v under --subclient_split paper)."""
    releases = [update_release(std=z, subclients=subclients, sampling=sampling, clipped=clipped,
                               patient_subclients=patient_subclients)]
    if norm_sum_noise is not None:
        releases.append(norm_sum_release(std=norm_sum_noise, subclients=subclients,
                                         patient_subclients=patient_subclients))
    if count_noise is not None:
        releases.append(count_release(std=count_noise, subclients=subclients, patient_subclients=patient_subclients))
    return releases


class ClientLevelDP:
    def __init__(self, *, noise_multiplier: float, clip_policy: FixedClip, noise_scale_when_unclipped: float,
                 ledger: PrivacyLedger, sampling: Sampling, delta: float, secure: bool, strict: bool,
                 norm_sum_noise: float, budget: float | None = None, budget_unit: str = "subclient",
                 accountant: str = "rdp", random_split: bool = False):
        self.z = noise_multiplier
        self.clip_policy = clip_policy
        self.unclipped_scale = noise_scale_when_unclipped  # --noclip: the paper scales noise by --S
        self.ledger, self.sampling = ledger, sampling
        self.secure, self.strict = secure, strict
        self.norm_sum_noise = norm_sum_noise
        self.budget, self.budget_unit, self.accountant = budget, budget_unit, accountant
        self.random_split = random_split  # --subclient_split paper: a patient can move all v sub-clients
        adjacency = {**ADJACENCY, "patient": PAPER_SPLIT_PATIENT} if random_split else ADJACENCY
        for unit in UNITS:
            ledger.open(f"client/{unit}", level="client", unit=unit, adjacency=adjacency[unit],
                        relation=relation(unit, sampling), sampling=sampling, delta=delta)

    # --- declared releases -------------------------------------------------------------
    def planned_releases(self, subclients: int) -> list[GaussianRelease]:
        count_noise = getattr(self.clip_policy, "count_noise", None) if self.strict else None
        return round_releases(z=self.z, sampling=self.sampling, subclients=subclients,
                              clipped=not math.isinf(self.clip_policy.bound),
                              norm_sum_noise=self.norm_sum_noise if self.strict else None, count_noise=count_noise,
                              patient_subclients=subclients if self.random_split else 1)

    def round_multipliers(self, subclients: int) -> dict[str, float]:
        return round_multipliers(self.planned_releases(subclients))

    def charge_round(self, subclients: int) -> None:
        """Charge one round to every unit. Called for every round, sampled-out ones too:
        the accountant's analysis counts every round whether or not anyone was sampled."""
        for unit, multiplier in self.round_multipliers(subclients).items():
            self.ledger.charge(f"client/{unit}", multiplier)

    def within_budget(self, subclients: int) -> bool:
        """--dp_mode bounded: would the next round keep the budget unit within --epsilon?"""
        if self.budget is None:
            return True
        extra = [self.round_multipliers(subclients)[self.budget_unit]]
        return self.ledger.epsilon(f"client/{self.budget_unit}", self.accountant, extra=extra) <= self.budget

    # --- the release steps ---------------------------------------------------------------
    def clip_bound(self, norms: torch.Tensor) -> float:
        """This round's C (the paper's median clip reads every update norm: not covered)."""
        return self.clip_policy.bound_for(norms)

    @staticmethod
    def client_message(deltas: torch.Tensor, bound: float) -> torch.Tensor:
        """Each row (a sub-client's update) clipped to L2 norm `bound`; rows are independent."""
        return clip(deltas, update_norms(deltas), bound)

    @staticmethod
    def combine(messages: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The server's only view of the messages: their weighted sum."""
        return weights.to(messages) @ messages

    def noise_std(self, bound: float, max_weight: float) -> float:
        scale = self.unclipped_scale if math.isinf(bound) else bound
        return self.z * scale * max_weight

    def finalize(self, total: torch.Tensor, bound: float, plan: RoundPlan) -> torch.Tensor:
        """Central Gaussian noise with std z * C * max_weight, fixed before sampling."""
        std = self.noise_std(bound, plan.max_weight)
        return total + gaussian_noise(total.numel(), std, plan.noise_gen, secure=self.secure, device=total.device)

    def release(self, deltas: torch.Tensor, weights: torch.Tensor, plan: RoundPlan) -> ReleaseResult:
        """One round: clip bound -> clip (client) -> combine -> finalize, and the strict-mode
        side releases. The ledger is charged separately by `charge_round`."""
        norms = update_norms(deltas)
        bound = self.clip_bound(norms)
        update = self.finalize(self.combine(self.client_message(deltas, bound), weights), bound, plan)
        std = self.noise_std(bound, plan.max_weight)
        clipped_norms = torch.clamp(norms, max=bound)
        stats = {"clip_bound": bound, "noise_std": std,
                 # public: what the noise norm is expected to be (the realised one is never used)
                 "expected_noise_norm": std * math.sqrt(update.numel()),
                 "aggregate_norm": float(torch.linalg.vector_norm(update))}
        if self.strict:
            # sum of clipped norms (each in [0, C]) + N(0, (sigma_s C)^2)
            noise = gaussian_noise(1, self.norm_sum_noise * bound, plan.noise_gen, secure=self.secure)
            stats["norm_sum"] = float(clipped_norms.sum()) + float(noise)
        else:  # the paper's rule reads unprotected norms: declared as not covered
            stats["norm_sum"] = float(norms.sum())
            stats["clipped_fraction"] = float((norms > bound).float().mean())
            stats["clipped_norm_sum"] = float(clipped_norms.sum())
        self.clip_policy.after_round(norms, plan.noise_gen, secure=self.secure)
        return ReleaseResult(update, stats)

    def state_dict(self) -> dict:
        return {"clip": self.clip_policy.state_dict(), "z": self.z}

    def load_state_dict(self, state: dict) -> None:
        self.clip_policy.load_state_dict(state["clip"])
        self.z = state["z"]
