"""Vectorised drawing primitives for the synthetic slices (all shapes are batched [n, H, W])."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1], shaped [1, H, W] for broadcasting over a batch."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return yy[None], xx[None]


def _col(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None]


def ellipse_radius(yy, xx, cy, cx, ry, rx, theta, wobble=None, gen=None) -> torch.Tensor:
    """Normalised radius: < 1 inside an ellipse (per-sample centre, radii, rotation).

    `wobble` (per-sample amplitude) perturbs the boundary with two random harmonics, so
    lesions and glands are irregular rather than perfect ellipses.
    """
    dy, dx = yy - _col(cy), xx - _col(cx)
    c, s = torch.cos(_col(theta)), torch.sin(_col(theta))
    u, v = c * dx + s * dy, -s * dx + c * dy
    r = torch.sqrt((u / _col(rx)) ** 2 + (v / _col(ry)) ** 2 + 1e-12)
    if wobble is not None:
        n = cy.shape[0]
        phi = torch.atan2(v, u)
        for k in (2, 3):
            phase = _col(uniform(n, 0, 2 * math.pi, gen))
            r = r * (1 + _col(wobble) * torch.sin(k * phi + phase) / k)
    return r


def soft_inside(r: torch.Tensor, edge: float) -> torch.Tensor:
    """Soft indicator of r < 1 with an edge width of `edge` (in normalised radius)."""
    return torch.sigmoid((1 - r) / edge)


def smooth_field(n: int, size: int, coarse: int, gen: torch.Generator) -> torch.Tensor:
    """Low-frequency noise in about [-1, 1]: a coarse random grid, bicubically upsampled."""
    base = torch.randn(n, 1, coarse, coarse, generator=gen)
    return F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)[:, 0]


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image [n, 1, H, W] with its own sigma (pixels); sigma 0 leaves it unchanged."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [n, K]
    n = images.shape[0]
    x = images.reshape(1, n, *images.shape[2:])
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=n)
    x = F.conv2d(x, kernel[:, None, :, None], groups=n)
    return x.reshape(images.shape)
