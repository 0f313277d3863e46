"""Per-hospital acquisition differences ("scanner shift"), the source of non-IID features.

Each hospital draws one profile from its own seed; every image it contributes is passed
through the same intensity scale/offset, contrast (gamma), blur, multiplicative bias field
and noise level, so a model must generalise across sites as in real multi-site imaging.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets.shapes import gaussian_blur, grid, uniform


@dataclass(frozen=True)
class ScannerProfile:
    scale: float
    offset: float
    gamma: float
    noise_std: float
    blur_sigma: float
    bias_amplitude: float
    bias_angle: float

    @staticmethod
    def sample(gen: torch.Generator, *, noise: tuple[float, float], shift: float = 1.0) -> "ScannerProfile":
        """`shift` scales each acquisition difference's distance from an ideal scanner
        (scale 1, offset 0, gamma 1, no blur, no bias field): 0 makes every site's scanner
        the same, 1 is the default range. The draws are the same whatever `shift` is."""
        draw = lambda lo, hi: float(uniform(1, lo, hi, gen))  # noqa: E731
        toward = lambda ideal, value: ideal + shift * (value - ideal)  # noqa: E731
        return ScannerProfile(
            scale=toward(1.0, draw(0.8, 1.2)),
            offset=toward(0.0, draw(-0.1, 0.1)),
            gamma=toward(1.0, draw(0.8, 1.25)),
            noise_std=draw(*noise),
            blur_sigma=toward(0.0, draw(0.0, 1.0)),
            bias_amplitude=toward(0.0, draw(0.0, 0.25)),
            bias_angle=draw(0.0, 6.2832),
        )


def apply_scanner(images: torch.Tensor, p: ScannerProfile, gen: torch.Generator) -> torch.Tensor:
    """Map clean slices [n, 1, H, W] in [0, 1] to what this hospital's scanner records."""
    n, _, size, _ = images.shape
    x = images.clamp_min(0) ** p.gamma
    x = gaussian_blur(x, torch.full((n,), p.blur_sigma))
    yy, xx = grid(size)
    direction = torch.cos(torch.tensor(p.bias_angle)) * xx + torch.sin(torch.tensor(p.bias_angle)) * yy
    x = x * (1 + p.bias_amplitude * direction[:, None])
    x = p.scale * x + p.offset
    return x + p.noise_std * torch.randn(x.shape, generator=gen)
