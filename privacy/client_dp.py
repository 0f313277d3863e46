"""Client-level DP (DP-FedAvg with intermediaries) as release steps.

Client side, each sub-client clips its own update (`client_message`, one row, nothing
else) and, under --strict_dp, attaches its shares of the side statistics (its clipped
norm; the indicator norm <= C for the quantile clip). Server side, the sum of the
messages (federated/pipeline.py's `ServerHalf.combine`) gets Gaussian noise whose std is
fixed by public quantities only (z, C and the largest weight any sub-client can have),
never by who was sampled (`server_release`). The noise is released every round, also when
the sampling drew nobody (an empty round would otherwise be visible). The run's
`ReleasePlan` declares every round (its Gaussians and each unit's event, by privacy/events.py's
rules), and the declaration is what the ledger is charged for all three units.

Under --strict_dp the intermediary rule's statistic (the sum of clipped norms) and the
adaptive clip bound's count are released with their own noise on the same sample; they
compose with the update into one Gaussian per unit and round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

import dp_accounting

from privacy.accountants import Release, Sampling
from privacy.clipping import FixedClip
from privacy.declared import event_of
from privacy.events import UNITS, GaussianRelease, RoundShape, adjacency, combined_multiplier, relation, releases, \
    rule_for
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, update_norms, weighted_sum


@dataclass
class RoundPlan:
    """The public facts of one round that the release depends on."""
    max_weight: float             # the largest aggregation weight any sub-client can have (sets the noise std)
    noise_gen: torch.Generator
    expected_participants: float  # q times the planned sub-clients: the fixed denominator of released fractions


@dataclass
class ClientShare:
    """What one sub-client sends under client-level DP: its clipped update and, for the
    --strict_dp side releases, its clipped norm (in [0, C]) and whether its norm was within C."""
    update: torch.Tensor        # [P]
    clipped_norm: torch.Tensor  # 0-d
    within_bound: torch.Tensor  # 0-d, 1.0 or 0.0


def client_message(row: torch.Tensor, bound: float) -> ClientShare:
    """One sub-client's update [P], clipped to L2 norm `bound`: it reads no other row."""
    norm = update_norms(row[None])
    return ClientShare(clip(row[None], norm, bound)[0], torch.clamp(norm, max=bound)[0], (norm <= bound).float()[0])


@dataclass
class ReleaseResult:
    update: torch.Tensor                       # the released aggregate
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DeclaredRound:
    """One round's releases as declared: its Gaussians (in units of the clip bound), what
    they cost each unit (the one Gaussian they compose into, and how the unit takes part)
    and that cost as the event the unit's account is charged."""
    gaussians: tuple[GaussianRelease, ...]
    charges: dict[str, Release]
    events: dict[str, dp_accounting.DpEvent]


@dataclass(frozen=True)
class ReleasePlan:
    """What every round of client-level DP releases, for any noise multiplier z: built once
    per run, and the one source of a round's releases for --epsilon calibration, the
    --dp_mode bounded check, the ledger's charge and the report."""
    sampling: Sampling
    split: str = "hash"                  # how records form sub-clients (privacy/events.py)
    balanced: bool = False               # --balance_split
    clipped: bool = True                 # without clipping no sensitivity bound exists
    norm_sum_noise: float | None = None  # --strict_dp: the norm sum's multiplier
    count_noise: float | None = None     # --strict_dp --adaclip: the clip count's multiplier

    @classmethod
    def for_policy(cls, sampling: Sampling, clip_policy: FixedClip, *, strict: bool, norm_sum_noise: float,
                   split: str, balanced: bool) -> "ReleasePlan":
        """The plan of a release clipped by `clip_policy`: with --strict_dp the norm sum at
        `norm_sum_noise` and, for a policy that counts (the quantile clip), the count."""
        return cls(sampling, split, balanced, clipped=not math.isinf(clip_policy.bound),
                   norm_sum_noise=norm_sum_noise if strict else None,
                   count_noise=getattr(clip_policy, "count_noise", None) if strict else None)

    def shape(self, counts: list[int]) -> RoundShape:
        """A round's public shape: each hospital's sub-client count and how records are split."""
        return RoundShape(tuple(counts), self.split, self.balanced)

    def declare(self, z: float, shape: RoundShape) -> DeclaredRound:
        """The round's Gaussians (the update at std z C; the side releases at theirs), each
        unit's sensitivity from privacy/events.py's RULES, and each unit's charge."""
        gaussians = tuple(releases(shape=shape, sampling=self.sampling, update_std=z, clipped=self.clipped,
                                   norm_sum_std=self.norm_sum_noise, count_std=self.count_noise))
        charges = {}
        for unit in UNITS:
            rule = rule_for(unit, shape, self.sampling)
            charges[unit] = Release(combined_multiplier(list(gaussians), unit), rule.probability(shape, self.sampling),
                                    rule.kind)
        return DeclaredRound(gaussians, charges, {u: event_of(c, self.sampling) for u, c in charges.items()})


class ClientLevelDP:
    def __init__(self, *, noise_multiplier: float, plan: ReleasePlan, clip_policy: FixedClip,
                 noise_scale_when_unclipped: float, ledger: PrivacyLedger, delta: float, secure: bool,
                 budget: float | None = None, budget_unit: str = "subclient", accountant: str = "rdp"):
        self.z, self.plan = noise_multiplier, plan
        self.clip_policy = clip_policy
        self.unclipped_scale = noise_scale_when_unclipped  # --noclip: the paper scales noise by --S
        self.ledger, self.sampling = ledger, plan.sampling
        # --strict_dp releases the norm sum with noise (the plan declares it)
        self.secure, self.strict, self.norm_sum_noise = secure, plan.norm_sum_noise is not None, plan.norm_sum_noise
        self.budget, self.budget_unit, self.accountant = budget, budget_unit, accountant
        for unit in UNITS:
            ledger.open(f"client/{unit}", level="client", unit=unit,
                        adjacency=adjacency(unit, split=plan.split, balanced=plan.balanced),
                        relation=relation(unit, plan.sampling), sampling=plan.sampling, delta=delta)

    # --- declared releases -------------------------------------------------------------
    def declare(self, counts: list[int]) -> DeclaredRound:
        """This round's releases (`counts`: each hospital's sub-clients this round)."""
        return self.plan.declare(self.z, self.plan.shape(counts))

    def charge(self, declared: DeclaredRound) -> None:
        """Charge a declared round to every unit. Called for every round: the noise is
        released whoever was sampled."""
        for unit, event in declared.events.items():
            self.ledger.declare(f"client/{unit}", event)

    def within_budget(self, declared: DeclaredRound) -> bool:
        """--dp_mode bounded: would charging `declared` keep the budget unit within --epsilon?"""
        if self.budget is None:
            return True
        extra = [declared.events[self.budget_unit]]
        return self.ledger.epsilon(f"client/{self.budget_unit}", self.accountant, extra=extra) <= self.budget

    def unit_inputs(self, counts: list[int]) -> dict[str, int]:
        """How many of a round's inputs each unit owns: a hospital its sub-clients (the
        largest count), a sub-client one, a patient the one sub-client holding it (every
        sub-client of its hospital under the paper's random split)."""
        largest = max(counts)
        return {"hospital": largest, "subclient": 1, "patient": largest if self.plan.split == "paper" else 1}

    def distributed_release(self, total: torch.Tensor, *, bound: float, noise_std: float,
                            norm_sum: float) -> ReleaseResult:
        """--noise_at clients: the decoded sum already holds the sub-clients' noise (std
        `noise_std` per coordinate, from the shares that survived); `norm_sum`, the decoded
        and noised sum of clipped norms. The server adds nothing."""
        stats = {"clip_bound": bound, "noise_std": noise_std, "expected_noise_norm": noise_std * math.sqrt(total.numel()),
                 "aggregate_norm": float(torch.linalg.vector_norm(total)), "norm_sum": norm_sum}
        return ReleaseResult(total, stats)

    # --- the release steps ---------------------------------------------------------------
    def clip_bound(self, norms: torch.Tensor) -> float:
        """This round's C (the paper's median clip reads every update norm: not covered)."""
        return self.clip_policy.bound_for(norms)

    def noise_std(self, bound: float, max_weight: float) -> float:
        scale = self.unclipped_scale if math.isinf(bound) else bound
        return self.z * scale * max_weight

    def finalize(self, total: torch.Tensor, bound: float, plan: RoundPlan) -> torch.Tensor:
        """Central Gaussian noise with std z * C * max_weight, fixed before sampling."""
        std = self.noise_std(bound, plan.max_weight)
        return total + gaussian_noise(total.numel(), std, plan.noise_gen, secure=self.secure, device=total.device)

    def draw_noise(self, numel: int, bound: float, plan: RoundPlan,
                   device: torch.device | None = None) -> tuple[torch.Tensor, float]:
        """The round's central noise, in the order the release draws it: the update's, then
        (--strict_dp) the norm sum's."""
        update = gaussian_noise(numel, self.noise_std(bound, plan.max_weight), plan.noise_gen, secure=self.secure,
                                device=device)
        norm_sum = float(gaussian_noise(1, self.norm_sum_noise * bound, plan.noise_gen, secure=self.secure)) \
            if self.strict else 0.0
        return update, norm_sum

    def server_release(self, total: torch.Tensor, *, bound: float, plan: RoundPlan, clipped_norms: torch.Tensor,
                       within_bound: torch.Tensor, norms: torch.Tensor | None,
                       noise_in_sum: bool = False) -> ReleaseResult:
        """The server's half of one round, from the combined messages: the noised update and
        the round's statistics. `clipped_norms` and `within_bound` are the messages' shares
        (one per message, summed here); `norms`, the unprotected update norms the paper's
        code reads outside --strict_dp (None under it). `noise_in_sum`: `total` and the
        clipped norms already hold `draw_noise`'s draws (encrypted aggregation: the server
        added them to the encrypted sum). The ledger is charged separately by `charge`."""
        update_noise, norm_noise = (None, 0.0) if noise_in_sum else \
            self.draw_noise(total.numel(), bound, plan, total.device)
        update = total if noise_in_sum else total + update_noise
        std = self.noise_std(bound, plan.max_weight)
        stats = {"clip_bound": bound, "noise_std": std,
                 # public: what the noise norm is expected to be (the realised one is never used)
                 "expected_noise_norm": std * math.sqrt(update.numel()),
                 "aggregate_norm": float(torch.linalg.vector_norm(update))}
        if self.strict:
            # sum of clipped norms (each in [0, C]) + N(0, (sigma_s C)^2)
            stats["norm_sum"] = float(clipped_norms.sum()) + norm_noise
        else:  # the paper's rule reads unprotected norms: declared as not covered
            stats["norm_sum"] = float(norms.sum())
            stats["clipped_fraction"] = float((norms > bound).float().mean()) if len(norms) else 0.0
            stats["clipped_norm_sum"] = float(clipped_norms.sum())
        self.clip_policy.after_round(float(within_bound.sum()), plan.noise_gen, secure=self.secure,
                                     expected=plan.expected_participants)
        return ReleaseResult(update, stats)

    def release(self, deltas: torch.Tensor, weights: torch.Tensor, plan: RoundPlan) -> ReleaseResult:
        """One round on stacked deltas [K, P], for tests and tools: the same client and
        server steps as the pipeline (clip bound, each row's message, weighted sum, noise)."""
        norms = update_norms(deltas)
        bound = self.clip_bound(norms)
        shares = [client_message(row, bound) for row in deltas]
        total = weighted_sum([s.update for s in shares], weights, deltas.shape[1], deltas.device)
        return self.server_release(total, bound=bound, plan=plan, clipped_norms=_stack([s.clipped_norm for s in shares]),
                                   within_bound=_stack([s.within_bound for s in shares]),
                                   norms=None if self.strict else norms)

    def state_dict(self) -> dict:
        return {"clip": self.clip_policy.state_dict(), "z": self.z}

    def load_state_dict(self, state: dict) -> None:
        self.clip_policy.load_state_dict(state["clip"])
        self.z = state["z"]


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values) if values else torch.zeros(0)
