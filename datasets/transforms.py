"""Per-batch preparation of cached uint8 images: scale, normalise, augment (plain torch).

Augmentation draws from the generator the local update passes in (the run's "local"
stream), so it is reproducible and resumable like everything else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the paper's ICH normalisation (ImageNet statistics)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_affine_flip(x: torch.Tensor, gen: torch.Generator, *, degrees: float, translate: float) -> torch.Tensor:
    """The paper's RandomAffine(degrees, translate) then RandomHorizontalFlip on [0, 1]
    pixels: a rotation in [-degrees, degrees], a shift of whole pixels up to `translate` of
    the side, nearest-neighbour sampling, black (0) fill, and a flip with probability 1/2."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(degrees)
    pixels = ((torch.rand(n, 2, generator=gen) * 2 - 1) * translate * torch.tensor([w, h])).round()
    shift = 2 * pixels / torch.tensor([w, h])  # grid coordinates span 2
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class ImagePreparation:
    """uint8 [n, C, H, W] -> float: /255, optional per-channel normalisation, optional
    training-time affine + flip augmentation."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False
    degrees: float = 10.0
    translate: float = 0.02

    def __call__(self, images: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        x = images.float() / 255.0
        if train and self.augment and gen is not None:  # before normalising, so the fill is black
            x = random_affine_flip(x, gen, degrees=self.degrees, translate=self.translate)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device)[None, :, None, None]
            std = torch.tensor(self.std, device=x.device)[None, :, None, None]
            x = (x - mean) / std
        return x
