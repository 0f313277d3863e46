"""Client-level DP (DP-FedAvg with intermediaries) as release steps.

Client side, each sub-client clips its update (`client_message`); server side, `combine`
sums the messages with public weights and `finalize` adds Gaussian noise whose std is
fixed by public quantities only (z, C and the largest weight any sub-client can have),
never by who was sampled. The noise is released every round, also when the sampling drew
nobody (an empty round would otherwise be visible). Every round declares its releases
(privacy/events.py) and charges them to the ledger for all three units.

Under --strict_dp the intermediary rule's statistic (the sum of clipped norms) and the
adaptive clip bound's count are released with their own noise on the same sample; they
compose with the update into one Gaussian per unit and round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from privacy.accountants import Release, Sampling
from privacy.clipping import FixedClip
from privacy.events import UNITS, GaussianRelease, RoundShape, adjacency, combined_multiplier, relation, releases, \
    rule_for
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, update_norms


@dataclass
class RoundPlan:
    """The public facts of one round that the release depends on."""
    max_weight: float             # the largest aggregation weight any sub-client can have (sets the noise std)
    noise_gen: torch.Generator
    expected_participants: float  # q times the planned sub-clients: the fixed denominator of released fractions


@dataclass
class ReleaseResult:
    update: torch.Tensor                       # the released aggregate
    stats: dict[str, float] = field(default_factory=dict)


def round_releases(*, z: float, shape: RoundShape, sampling: Sampling, clipped: bool = True,
                   norm_sum_noise: float | None = None, count_noise: float | None = None) -> list[GaussianRelease]:
    """The Gaussians one round releases, in units of the clip bound (C = 1; only the ratio
    of std to sensitivity matters): the update, and with --strict_dp the norm sum and,
    with --adaclip, the clip count; each unit's sensitivity from privacy/events.py's RULES."""
    return releases(shape=shape, sampling=sampling, update_std=z, clipped=clipped, norm_sum_std=norm_sum_noise,
                    count_std=count_noise)


def round_charges(*, z: float, shape: RoundShape, sampling: Sampling, clipped: bool = True,
                  norm_sum_noise: float | None = None, count_noise: float | None = None) -> dict[str, Release]:
    """What one round costs each unit: the multiplier its releases compose into, and how
    (and how likely) the unit takes part."""
    composed = round_releases(z=z, shape=shape, sampling=sampling, clipped=clipped, norm_sum_noise=norm_sum_noise,
                              count_noise=count_noise)
    out = {}
    for unit in UNITS:
        rule = rule_for(unit, shape, sampling)
        out[unit] = Release(combined_multiplier(composed, unit), rule.probability(shape, sampling), rule.kind)
    return out


class ClientLevelDP:
    def __init__(self, *, noise_multiplier: float, clip_policy: FixedClip, noise_scale_when_unclipped: float,
                 ledger: PrivacyLedger, sampling: Sampling, delta: float, secure: bool, strict: bool,
                 norm_sum_noise: float, budget: float | None = None, budget_unit: str = "subclient",
                 accountant: str = "rdp", split: str = "hash", balanced: bool = False):
        self.z = noise_multiplier
        self.clip_policy = clip_policy
        self.unclipped_scale = noise_scale_when_unclipped  # --noclip: the paper scales noise by --S
        self.ledger, self.sampling = ledger, sampling
        self.secure, self.strict = secure, strict
        self.norm_sum_noise = norm_sum_noise
        self.budget, self.budget_unit, self.accountant = budget, budget_unit, accountant
        self.split, self.balanced = split, balanced  # how records form sub-clients (privacy/events.py)
        for unit in UNITS:
            ledger.open(f"client/{unit}", level="client", unit=unit,
                        adjacency=adjacency(unit, split=split, balanced=balanced),
                        relation=relation(unit, sampling), sampling=sampling, delta=delta)

    # --- declared releases -------------------------------------------------------------
    def shape(self, counts: list[int]) -> RoundShape:
        """The round's public shape: each hospital's sub-client count and how records are split."""
        return RoundShape(tuple(counts), self.split, self.balanced)

    def planned_releases(self, counts: list[int]) -> list[GaussianRelease]:
        return round_releases(z=self.z, shape=self.shape(counts), sampling=self.sampling, **self._extras())

    def round_charges(self, counts: list[int]) -> dict[str, Release]:
        return round_charges(z=self.z, shape=self.shape(counts), sampling=self.sampling, **self._extras())

    def _extras(self) -> dict:
        count_noise = getattr(self.clip_policy, "count_noise", None) if self.strict else None
        return {"clipped": not math.isinf(self.clip_policy.bound), "count_noise": count_noise,
                "norm_sum_noise": self.norm_sum_noise if self.strict else None}

    def charge_round(self, counts: list[int]) -> None:
        """Charge one round to every unit (`counts`: each hospital's sub-clients this round).
        Called for every round: the noise is released whoever was sampled."""
        for unit, release in self.round_charges(counts).items():
            self.ledger.charge(f"client/{unit}", release.multiplier, rate=release.rate, kind=release.kind)

    def within_budget(self, counts: list[int]) -> bool:
        """--dp_mode bounded: would the next round keep the budget unit within --epsilon?"""
        if self.budget is None:
            return True
        extra = [self.round_charges(counts)[self.budget_unit]]
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
            stats["clipped_fraction"] = float((norms > bound).float().mean()) if len(norms) else 0.0
            stats["clipped_norm_sum"] = float(clipped_norms.sum())
        self.clip_policy.after_round(norms, plan.noise_gen, secure=self.secure, expected=plan.expected_participants)
        return ReleaseResult(update, stats)

    def state_dict(self) -> dict:
        return {"clip": self.clip_policy.state_dict(), "z": self.z}

    def load_state_dict(self, state: dict) -> None:
        self.clip_policy.load_state_dict(state["clip"])
        self.z = state["z"]
