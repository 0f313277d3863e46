"""What one round releases, seen from each protected unit.

A round of client-level DP releases one or more Gaussians computed on the same sampled set
of hospitals: the noised sum of clipped updates, and under --strict_dp the noised sum of
clipped norms (the intermediary statistic) and the noised count of unclipped updates (the
adaptive clip bound). Each release has a noise std; each unit has a sensitivity for it: how
far the unit can move what the release computes, measured on the neighbouring pair the code
really produces. Gaussians released together on the same sample compose into one Gaussian
whose multiplier is

    z_eff = (sum_i (sensitivity_i / std_i)^2)^(-1/2),

which is charged once per round (the releases share the sample).

`RULES` is the table of sensitivities and participation, one row per unit and case; it is
the table in docs/privacy.md (a test renders one from the other). Its symbols: c, the
largest sub-client count of any hospital this round (whoever was sampled); N, the number of
hospitals; v, the sub-clients requested per hospital (--balance_split hands out N v).
Participation says how the unit takes part in a round (privacy/accountants.py, `Release`):
"sampled" when the unit is what the sampling draws, "revealed" when it takes part with
companions that are in both neighbouring datasets and show whether it did.

Why each case is what it is:

- hospital: present or absent with all its sub-clients. Randomness is keyed by the
  hospital's identity and the denominators by the planned federation, so no other
  hospital computes anything else (tests/test_neighbours.py). Under fixed-size sampling the
  number of hospitals is public: replaced, its contribution crosses its ball (2cC).
  --balance_split hands out the N v sub-clients by every hospital's size, so one hospital
  more or less can change every other hospital's count and split: the whole federation's
  sum, both ways.
- sub-client: its message present or absent (the mechanism's own guarantee). Hospitals are
  what the sampling draws; a hospital's other sub-clients enter the sum exactly when this
  one does, so with c >= 2 they show whether it took part.
- patient: one patient's record added or removed (Jiang et al. and Opacus' adjacency for
  records). The keyed hash moves no other record, so one sub-client's clipped update moves
  within its ball (2C). The paper's random split re-draws all of the hospital's sub-clients
  (its whole contribution moves: 2cC, with no companion left to reveal it).
  --balance_split can hand one sub-client from one hospital to another, re-splitting both:
  (2c_A + 1)C + (2c_B - 1)C <= 4cC, released when either is sampled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from privacy.accountants import Sampling

UNITS = ("hospital", "subclient", "patient")


@dataclass(frozen=True)
class RoundShape:
    """The public facts of one round that set what each unit can move."""
    counts: tuple[int, ...]  # sub-clients of each hospital this round
    split: str = "hash"      # how records are assigned to sub-clients: "hash" or "paper"
    balanced: bool = False   # --balance_split: the N v sub-clients handed out by hospital size

    @property
    def largest(self) -> int:
        return max(self.counts)

    @property
    def hospitals(self) -> int:
        return len(self.counts)

    @property
    def per_hospital(self) -> int:
        """v: the sub-clients requested per hospital (--balance_split keeps N v in all)."""
        return sum(self.counts) // len(self.counts)

    @property
    def rebalances(self) -> bool:
        """Whether one hospital's size can move another hospital's sub-client count."""
        return self.balanced and self.hospitals > 1 and sum(self.counts) > self.hospitals


def inclusion(sampling: Sampling, hospitals: int) -> float:
    """Probability that at least one of `hospitals` given hospitals is sampled in a round
    ("all" is the sample of n out of n, so the count below gives it 1)."""
    if hospitals == 1:
        return sampling.rate  # q, or m/n without replacement
    if sampling.kind == "poisson":
        return 1.0 - (1.0 - sampling.rate) ** hospitals
    n, m = sampling.population, sampling.sample_size  # m of n without replacement
    if hospitals > n - m:
        return 1.0
    return 1.0 - math.comb(n - hospitals, m) / math.comb(n, m)


Formula = Callable[[int, int, int], float]  # (c, N, v) -> value


@dataclass(frozen=True)
class Rule:
    """One row of the table: for `unit` when `applies`, the sensitivities of the three
    releases (in C; the count in units), how the unit takes part and with what probability."""
    unit: str
    case: str
    adjacency: str
    applies: Callable[[RoundShape, Sampling], bool]
    update: tuple[str, Formula]
    norm_sum: tuple[str, Formula]
    count: tuple[str, Formula]
    kind: str
    rate: tuple[str, Callable[[RoundShape, Sampling], float]]

    def sensitivity(self, release: str, shape: RoundShape) -> float:
        """How far the unit moves `release` ("update", "norm_sum" or "count") in this round."""
        _, formula = getattr(self, release)
        return float(formula(shape.largest, shape.hospitals, shape.per_hospital))

    def probability(self, shape: RoundShape, sampling: Sampling) -> float:
        """The probability that a round's release involves the unit."""
        return self.rate[1](shape, sampling)


def _fixed(sampling: Sampling) -> bool:
    return sampling.kind == "fixed"


ONE_HOSPITAL = ("q", lambda shape, s: inclusion(s, 1))
SAMPLED = ("q", lambda shape, s: s.rate)
C, TWO_C = ("c", lambda c, n, v: c), ("2c", lambda c, n, v: 2 * c)
UNIT, TWO = ("1", lambda c, n, v: 1), ("2", lambda c, n, v: 2)

RULES: tuple[Rule, ...] = (
    Rule("hospital", "--balance_split, fixed-size sampling", "replaced",
         lambda sh, s: sh.rebalances and _fixed(s),
         ("2Nv", lambda c, n, v: 2 * n * v), ("Nv", lambda c, n, v: n * v), ("Nv", lambda c, n, v: n * v),
         "revealed", ("1", lambda shape, s: 1.0)),
    Rule("hospital", "--balance_split", "added or removed",
         lambda sh, s: sh.rebalances,
         ("(2N+1)v", lambda c, n, v: (2 * n + 1) * v), ("(N+1)v", lambda c, n, v: (n + 1) * v),
         ("(N+1)v", lambda c, n, v: (n + 1) * v),
         "revealed", ("1-(1-q)^(N+1)", lambda shape, s: inclusion(s, shape.hospitals + 1))),
    Rule("hospital", "fixed-size sampling", "replaced", lambda sh, s: _fixed(s), TWO_C, C, C, "sampled", SAMPLED),
    Rule("hospital", "otherwise", "added or removed", lambda sh, s: True, C, C, C, "sampled", SAMPLED),
    Rule("subclient", "c = 1, fixed-size sampling", "replaced", lambda sh, s: sh.largest == 1 and _fixed(s),
         TWO, UNIT, UNIT, "sampled", SAMPLED),
    Rule("subclient", "c = 1", "added or removed", lambda sh, s: sh.largest == 1, UNIT, UNIT, UNIT, "sampled", SAMPLED),
    Rule("subclient", "c >= 2, fixed-size sampling", "replaced", lambda sh, s: _fixed(s),
         TWO, UNIT, UNIT, "revealed", ONE_HOSPITAL),
    Rule("subclient", "c >= 2", "added or removed", lambda sh, s: True, UNIT, UNIT, UNIT, "revealed", ONE_HOSPITAL),
    Rule("patient", "--balance_split", "a record added or removed", lambda sh, s: sh.rebalances,
         ("4c", lambda c, n, v: 4 * c), ("2c+1", lambda c, n, v: 2 * c + 1), ("2c+1", lambda c, n, v: 2 * c + 1),
         "revealed", ("1-(1-q)^2", lambda shape, s: inclusion(s, 2))),
    Rule("patient", "--subclient_split paper", "a record added or removed", lambda sh, s: sh.split == "paper",
         TWO_C, C, C, "sampled", SAMPLED),
    Rule("patient", "hash split, c = 1", "a record added or removed", lambda sh, s: sh.largest == 1,
         TWO, UNIT, UNIT, "sampled", SAMPLED),
    Rule("patient", "hash split, c >= 2", "a record added or removed", lambda sh, s: True,
         TWO, UNIT, UNIT, "revealed", ONE_HOSPITAL),
)


def rule_for(unit: str, shape: RoundShape, sampling: Sampling) -> Rule:
    return next(r for r in RULES if r.unit == unit and r.applies(shape, sampling))


ADJACENCY = {
    "hospital": "one hospital added or removed with all its sub-clients (replaced under fixed-size sampling); "
                "every other hospital's records, sub-clients and randomness stay as they are",
    "subclient": "one sub-client's message present or absent (replaced under fixed-size sampling); it is sampled "
                 "with its hospital, whose other sub-clients show whether it took part",
    "patient": "one patient's record added or removed; the keyed hash split moves no other record, so only its "
               "sub-client's clipped update moves (by up to 2C)",
}
PAPER_SPLIT_PATIENT = ("one patient's record added or removed; sub-clients are drawn at random "
                       "(--subclient_split paper), so every sub-client of its hospital can change: its whole "
                       "contribution moves (by up to 2cC, c the largest sub-client count)")
BALANCED = {
    "hospital": "; --balance_split hands out sub-clients by every hospital's size, so one hospital can re-allocate "
                "all others: charged with every sub-client of both federations",
    "patient": "; --balance_split can hand one sub-client from one hospital to another, re-splitting both: charged "
               "with both hospitals' sub-clients (4cC)",
}


def adjacency(unit: str, *, split: str, balanced: bool) -> str:
    """The neighbouring datasets of `unit`, in words, for the report."""
    text = PAPER_SPLIT_PATIENT if unit == "patient" and split == "paper" else ADJACENCY[unit]
    return text + (BALANCED.get(unit, "") if balanced else "")


def relation(unit: str, sampling: Sampling) -> str:
    """The neighbouring pair under which `unit` is accounted: "replace" when its
    contribution stays and moves within its ball (a patient's sub-client or hospital; any
    unit under fixed-size sampling, whose population is public), else "add_remove"."""
    if unit == "patient" or sampling.kind == "fixed":
        return "replace"
    return "add_remove"


@dataclass(frozen=True)
class GaussianRelease:
    """One Gaussian release in units of the clip bound C: what it releases ("update",
    "norm_sum" or "count"), its noise std and each unit's sensitivity (L2 distance between
    what it computes on two neighbouring datasets)."""
    name: str
    std: float
    sensitivity: dict[str, float]


def releases(*, shape: RoundShape, sampling: Sampling, update_std: float, clipped: bool,
             norm_sum_std: float | None = None, count_std: float | None = None) -> list[GaussianRelease]:
    """The round's Gaussians with each unit's sensitivity from `RULES`: the update, and with
    --strict_dp the norm sum and, with --adaclip, the clip count. Without clipping no
    sensitivity bound exists."""
    rules = {unit: rule_for(unit, shape, sampling) for unit in UNITS}
    out = [GaussianRelease("update", update_std,
                           {u: r.sensitivity("update", shape) if clipped else math.inf for u, r in rules.items()})]
    if norm_sum_std is not None:
        out.append(GaussianRelease("norm_sum", norm_sum_std,
                                   {u: r.sensitivity("norm_sum", shape) for u, r in rules.items()}))
    if count_std is not None:
        out.append(GaussianRelease("count", count_std,
                                   {u: r.sensitivity("count", shape) for u, r in rules.items()}))
    return out


def combined_multiplier(releases: list[GaussianRelease], unit: str) -> float:
    """The multiplier of the one Gaussian that releases on the same sample compose into;
    0 when a release has no noise or no finite sensitivity (no guarantee)."""
    mu_squared = 0.0
    for r in releases:
        s = r.sensitivity[unit]
        if r.std <= 0 or math.isinf(s):
            return 0.0
        mu_squared += (s / r.std) ** 2
    return 1.0 / math.sqrt(mu_squared)


def rules_markdown() -> str:
    """`RULES` as the markdown table of docs/privacy.md."""
    lines = ["| unit | case | neighbouring datasets | update (C) | norm sum (C) | count | takes part | with probability |",
             "|---|---|---|---|---|---|---|---|"]
    for r in RULES:
        lines.append(f"| {r.unit} | {r.case} | {r.adjacency} | {r.update[0]} | {r.norm_sum[0]} | {r.count[0]} | "
                     f"{r.kind} | {r.rate[0]} |")
    return "\n".join(lines)
