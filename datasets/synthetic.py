"""Shared recipe for the synthetic multi-site federations.

Per hospital: a scanner profile and site traits are drawn once, then train/val/test slices
are drawn from the same site. Everything comes from the run's "data" stream, so a seed
fixes the whole federation (docs/usage.md, synthetic data).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from datasets.base import FederatedData, Hospital, Split
from datasets.scanner import ScannerProfile, apply_scanner


@dataclass(frozen=True)
class SyntheticSizes:
    hospitals: int
    train: int
    val: int
    test: int
    img_size: int
    size_skew: float = 0.0
    per_site: tuple[tuple[int, int, int], ...] | None = None  # (train, val, test) per hospital (--scale paper)


# --scale paper: the paper's hospitals (RSNA-ICH: 20 x 750/250/250 images; prostate: the six
# sites' training/validation/test slices) divided by PAPER_SIZE_DIVISOR and rounded.
PAPER_SIZE_DIVISOR = 10
PAPER_SITE_SIZES = {
    "synthetic-ich": [(750, 250, 250)] * 20,
    "synthetic-prostate": [(457, 152, 153), (285, 95, 95), (333, 111, 111), (290, 97, 96), (467, 156, 155),
                           (976, 325, 326)],  # I2CVB, MSD, NCI_ISBI_3T, NCI_ISBI_DX, Promise12, ProstateX
}


def paper_site_sizes(data: str, hospitals: int) -> list[tuple[int, int, int]]:
    """(train, val, test) of each hospital under --scale paper."""
    return [tuple(round(n / PAPER_SIZE_DIVISOR) for n in site) for site in PAPER_SITE_SIZES[data][:hospitals]]


# (n, img_size, site traits, gen) -> (clean images [n,1,H,W] in [0,1], targets)
DrawSlices = Callable[[int, int, dict, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
# gen -> site traits (e.g. prevalence, gland size), drawn once per hospital
DrawSite = Callable[[torch.Generator], dict]


def hospital_train_sizes(sizes: SyntheticSizes, gen: torch.Generator) -> list[int]:
    """Mean `sizes.train` per hospital; a log-normal spread of `size_skew` makes them unequal.
    The shares are normalised and rounded by largest remainder, so the hospitals hold exactly
    hospitals x train records (at least 2 each where train >= 2, taken from the largest)."""
    n, total = sizes.hospitals, sizes.hospitals * sizes.train
    if sizes.size_skew <= 0:
        return [sizes.train] * n
    weights = torch.exp(sizes.size_skew * torch.randn(n, generator=gen)).double()
    exact = weights / weights.sum() * total
    out = [int(x) for x in exact.floor()]
    for i in torch.argsort(exact - exact.floor(), descending=True)[:total - sum(out)].tolist():
        out[i] += 1
    least = min(2, sizes.train)  # reachable: total >= least x hospitals
    for i in range(n):
        while out[i] < least:
            out[i] += 1
            out[max(range(n), key=out.__getitem__)] -= 1
    return out


def build_synthetic(
    *,
    name: str,
    task: str,
    num_outputs: int,
    sizes: SyntheticSizes,
    gen: torch.Generator,
    draw_site: DrawSite,
    draw_slices: DrawSlices,
    noise_range: tuple[float, float],
    site_names: list[str] | None = None,
    scanner_shift: float = 1.0,
) -> FederatedData:
    train_sizes = hospital_train_sizes(sizes, gen)
    hospitals = []
    for h in range(sizes.hospitals):
        profile = ScannerProfile.sample(gen, noise=noise_range, shift=scanner_shift)
        site = draw_site(gen)

        def split(n: int) -> Split:
            images, targets = draw_slices(n, sizes.img_size, site, gen)
            return Split(apply_scanner(images, profile, gen).contiguous(), targets)

        label = site_names[h] if site_names and h < len(site_names) else f"hospital{h:02d}"
        train, val, test = sizes.per_site[h] if sizes.per_site else (train_sizes[h], sizes.val, sizes.test)
        hospitals.append(Hospital(label, split(train), split(val), split(test)))
    return FederatedData(name, task, hospitals, in_channels=1, num_outputs=num_outputs)


def exact_count_labels(n: int, prevalence: float, gen: torch.Generator) -> torch.Tensor:
    """Binary labels with round(n * prevalence) positives (at least one of each when n >= 2),
    in random order, so every val/test split has both classes and a defined AUC."""
    positives = int(round(n * prevalence))
    if n >= 2:
        positives = min(max(positives, 1), n - 1)
    labels = torch.zeros(n, dtype=torch.long)
    labels[:positives] = 1
    return labels[torch.randperm(n, generator=gen)]


TWO_PI = 2 * math.pi
