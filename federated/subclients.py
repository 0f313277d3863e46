"""Hospitals and their sub-clients ("intermediaries", Jiang et al., MICCAI 2023, Sec. 2.2).

Each hospital's training set is cut into sub-clients that train and are clipped as
separate units. The split is a random permutation cut into equal parts (sizes differ by
at most one), so it covers the hospital's data exactly once. The paper's code drops the
remainder when the size is not divisible; we keep every sample.
"""
from __future__ import annotations

import torch


def allocate_subclients(train_sizes: list[int], per_hospital: int, *, balance: bool) -> list[int]:
    """Number of sub-clients per hospital.

    Default: `per_hospital` everywhere. With `balance` (the paper's --balance_split) the
    same total N * v is handed out greedily to whichever hospital currently has the
    largest sub-clients, so sub-client sizes even out across hospitals of unequal size.
    """
    counts = [per_hospital] * len(train_sizes)
    if not balance:
        return counts
    counts = [1] * len(train_sizes)
    for _ in range(per_hospital * len(train_sizes) - len(train_sizes)):
        largest = max(range(len(counts)), key=lambda h: train_sizes[h] / counts[h])
        counts[largest] += 1
    return counts


def split_indices(n: int, parts: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A random partition of range(n) into `parts` near-equal index sets."""
    if not 1 <= parts <= n:
        raise ValueError(f"cannot split {n} samples into {parts} sub-clients")
    return list(torch.tensor_split(torch.randperm(n, generator=gen), parts))


def split_hospitals(train_sizes: list[int], counts: list[int], gen: torch.Generator) -> list[list[torch.Tensor]]:
    """Sub-client index sets for every hospital: result[h][k] indexes hospital h's train set."""
    return [split_indices(n, k, gen) for n, k in zip(train_sizes, counts)]
