"""Which hospitals take part in a round (the paper's -sr/--sample_rate).

`fixed`: exactly max(1, int(N * q)) hospitals, uniformly without replacement, as the
paper's code. `poisson`: each hospital independently with probability q (the sampling
that the RDP subsampled-Gaussian analysis assumes). All sub-clients of a chosen hospital
take part.
"""
from __future__ import annotations

import torch

from federated.choices import SAMPLING_MODES


def sample_hospitals(num: int, rate: float, mode: str, gen: torch.Generator) -> list[int]:
    if rate >= 1.0:
        return list(range(num))
    if mode == "fixed":
        k = max(1, int(num * rate))
        return sorted(torch.randperm(num, generator=gen)[:k].tolist())
    if mode == "poisson":
        return torch.nonzero(torch.rand(num, generator=gen) < rate).flatten().tolist()
    raise ValueError(f"unknown client sampling {mode!r}; choose one of {SAMPLING_MODES}")
