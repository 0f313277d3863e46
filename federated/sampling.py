"""Which hospitals take part in a round (the paper's -sr/--sample_rate).

`fixed`: exactly max(1, int(N * q)) hospitals, uniformly without replacement, as the
paper's code. `poisson`: each hospital independently with probability q (the sampling
that the RDP subsampled-Gaussian analysis assumes), from a uniform draw per hospital key,
so a hospital's draw does not depend on which other hospitals exist. All sub-clients of a
chosen hospital take part.
"""
from __future__ import annotations

import torch

from federated.choices import SAMPLING_MODES


def sample_hospitals(keys: list[int], rate: float, mode: str, gen: torch.Generator, *, population: int) -> list[int]:
    """Positions of the hospitals that take part. `keys`: each hospital's identity;
    `population`: the planned number of hospitals (-N)."""
    num = len(keys)
    if rate >= 1.0:
        return list(range(num))
    if mode == "fixed":
        k = max(1, int(num * rate))
        return sorted(torch.randperm(num, generator=gen)[:k].tolist())
    if mode == "poisson":
        draws = torch.rand(max(population, max(keys) + 1), generator=gen)
        return [i for i, key in enumerate(keys) if float(draws[key]) < rate]
    raise ValueError(f"unknown client sampling {mode!r}; choose one of {SAMPLING_MODES}")
