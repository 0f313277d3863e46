"""What one round releases, seen from each protected unit.

A round of client-level DP releases one or more Gaussians computed on the same sampled set
of hospitals: the noised sum of clipped updates, and under --strict_dp the noised sum of
clipped norms (the intermediary statistic) and the noised count of unclipped updates (the
adaptive clip bound). Each release declares its noise std and how far one unit can move
what it releases (its sensitivity for that unit). Gaussians released together on the same
sample compose into one Gaussian whose multiplier is

    z_eff = (sum_i (sensitivity_i / std_i)^2)^(-1/2),

which is then subsampled once (not once per release: the releases share the sample).

Three units (the run's report states each one's adjacency):

- hospital: present or absent with all its v sub-clients (v clipped updates, so v times the
  sub-client's sensitivity; Jiang et al., MICCAI 2023, Sec. 2.2). The largest v over all
  hospitals is charged, whoever was sampled.
- sub-client: present or absent (its clipped update moves the sum by at most C).
- patient: changes inside a sub-client that stays present, so its clipped update can move
  from one point of the C-ball to another: distance 2C (norm sum and count move by C and 1).
  Under the paper's random split (--subclient_split paper) one patient added can change
  the records of every sub-client of its hospital, so all v of them move: 2vC (v C, v).

Under fixed-size sampling the number of hospitals is public, so every unit is analysed
under replacement (a replaced sub-client also moves the sum by 2C).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from privacy.accountants import Sampling

UNITS = ("hospital", "subclient", "patient")

ADJACENCY = {
    "hospital": "one hospital added or removed with all its sub-clients (replaced under fixed-size sampling); "
                "charged with the largest sub-client count v over hospitals",
    "subclient": "one sub-client added or removed (replaced under fixed-size sampling)",
    "patient": "one patient's records changed inside a sub-client that stays present (its clipped update moves "
               "by up to 2C); records are assigned to sub-clients by a keyed hash, so other records stay put",
}
# --subclient_split paper: int(n/v) records are drawn at random per sub-client, so one added
# record can change which records every sub-client of its hospital holds.
PAPER_SPLIT_PATIENT = ("one patient's records changed in a hospital that stays present; sub-clients are drawn at "
                       "random (--subclient_split paper), so all v of its sub-clients' clipped updates can move "
                       "(by up to 2C each): charged with the largest v")


def relation(unit: str, sampling: Sampling) -> str:
    """The neighbouring relation under which `unit` is accounted."""
    if unit == "patient" or sampling.kind == "fixed":
        return "replace"
    return "add_remove"


@dataclass(frozen=True)
class GaussianRelease:
    """One Gaussian release in units of the clip bound C: its noise std and each unit's
    sensitivity (L2 distance between what it computes on two neighbouring datasets)."""
    std: float
    sensitivity: dict[str, float]


def update_release(*, std: float, subclients: int, sampling: Sampling, clipped: bool,
                   patient_subclients: int = 1) -> GaussianRelease:
    """The noised sum of clipped updates; without clipping no sensitivity bound exists.
    `patient_subclients`: how many sub-clients one patient can change (1 under the keyed
    hash, v under the paper's random split)."""
    if not clipped:
        return GaussianRelease(std, dict.fromkeys(UNITS, math.inf))
    move = 2.0 if sampling.kind == "fixed" else 1.0  # replacing a participant moves it across the C-ball
    return GaussianRelease(std, {"hospital": move * subclients, "subclient": move, "patient": 2.0 * patient_subclients})


def norm_sum_release(*, std: float, subclients: int, patient_subclients: int = 1) -> GaussianRelease:
    """The noised sum of clipped update norms (each in [0, C])."""
    return GaussianRelease(std, {"hospital": float(subclients), "subclient": 1.0, "patient": float(patient_subclients)})


def count_release(*, std: float, subclients: int, patient_subclients: int = 1) -> GaussianRelease:
    """The noised count of unclipped updates (each sub-client adds 0 or 1; here C plays no part)."""
    return GaussianRelease(std, {"hospital": float(subclients), "subclient": 1.0, "patient": float(patient_subclients)})


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


def round_multipliers(releases: list[GaussianRelease]) -> dict[str, float]:
    return {unit: combined_multiplier(releases, unit) for unit in UNITS}
