"""The adaptive intermediary rule (Jiang et al., MICCAI 2023, Sec. 2.3, and their code).

After a round with v sub-clients per hospital, with
    xi  = E||noise|| / ||aggregate||         (noise-to-signal ratio of the release; the
                                             expected noise norm std * sqrt(P), which is
                                             public, in place of the paper's realised norm)
    phi = sum_k ||delta_k|| / ||aggregate||  (how much the updates cancel when averaged)
the next count is v' = floor(v * sqrt(N * xi / phi)) (N hospitals). Variants from the
paper's code: `stable` v' = floor(sqrt(.)) * v, `prog` moves half-way,
v' = floor((sqrt(.) * v - v) / 2) + v. A factor below 1 always gives floor(v * factor).
Guarded to 1 <= v' <= v_max (every sub-client keeps at least one full batch).
"""
from __future__ import annotations

import math

VARIANTS = ("default", "stable", "prog")


def split_factor(*, noise_norm: float, aggregate_norm: float, norm_sum: float, num_hospitals: int) -> float:
    """sqrt(N * xi / phi); the aggregate norm cancels, leaving sqrt(N ||noise|| / sum ||delta_k||)."""
    xi = noise_norm / aggregate_norm
    phi = norm_sum / aggregate_norm
    return math.sqrt(num_hospitals * xi / phi)


def next_subclients(v: int, factor: float, *, variant: str, v_max: int) -> int:
    if not math.isfinite(factor):
        return max(1, min(v, v_max))
    if factor < 1 or variant == "default":
        new = math.floor(v * factor)
    elif variant == "stable":
        new = math.floor(factor) * v
    elif variant == "prog":
        new = math.floor((factor * v - v) / 2.0) + v
    else:
        raise ValueError(f"unknown intermediary variant {variant!r}; choose one of {VARIANTS}")
    return max(1, min(new, v_max))


def max_subclients(train_sizes: list[int], batch: int) -> int:
    """Largest v that leaves every sub-client of every hospital at least one full batch."""
    return max(1, min(train_sizes) // batch)
