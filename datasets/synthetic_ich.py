"""`synthetic-ich`: head-CT-like slices with and without an intracranial haemorrhage.

A slice has a bright skull ring, brain parenchyma with low-frequency texture and a
brighter cortical rim, dark ventricles and, in some slices, small bright calcifications
(distractors). Positive slices add a hyperdense bleed: either a parenchymal blob or a
crescent along the skull (subdural-like), of varying size, location and contrast, some
faint enough to be hard. Label 1 = haemorrhage. Hospitals differ by scanner profile and
prevalence; 20 hospitals by default, as the paper's RSNA-ICH split.
"""
from __future__ import annotations

import torch

from datasets.base import CLASSIFICATION, FederatedData
from datasets.shapes import ellipse_radius, grid, smooth_field, soft_inside, uniform
from datasets.synthetic import TWO_PI, SyntheticSizes, build_synthetic, exact_count_labels

# Difficulty knobs (calibrated so non-private FedAvg reaches AUC ~0.9; README "Calibration").
BLEED_CONTRAST = (0.18, 0.45)
BLEED_SIZE = (0.1, 0.24)
NOISE_STD = (0.03, 0.07)


def draw_site(gen: torch.Generator) -> dict:
    return {"prevalence": float(uniform(1, 0.35, 0.65, gen))}


def draw_head_slices(n: int, size: int, positive: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    yy, xx = grid(size)
    zeros = torch.zeros(n)
    rx = uniform(n, 0.74, 0.88, gen)
    ry = rx * uniform(n, 0.8, 0.95, gen) * 1.1
    cy, cx, theta = uniform(n, -0.05, 0.05, gen), uniform(n, -0.05, 0.05, gen), uniform(n, -0.3, 0.3, gen)
    head_r = ellipse_radius(yy, xx, cy, cx, ry, rx, theta, wobble=zeros + 0.03, gen=gen)
    thickness = uniform(n, 0.07, 0.13, gen)[:, None, None]

    brain = soft_inside(head_r, 0.02)
    skull = soft_inside(head_r / (1 + thickness), 0.02) - brain
    texture = smooth_field(n, size, 6, gen)
    cortex = ((head_r > 0.82) & (head_r < 1)).float()
    img = brain * (0.45 + 0.03 * texture + 0.05 * cortex) + 1.0 * skull

    # Two ventricles (cerebrospinal fluid, dark) placed symmetrically around the midline.
    v_size = uniform(n, 0.07, 0.14, gen)
    v_off = uniform(n, 0.07, 0.13, gen)
    for sign in (-1, 1):
        vent = ellipse_radius(yy, xx, cy - 0.05, cx + sign * v_off, v_size * 1.8, v_size, theta + sign * 0.3)
        img = img - 0.3 * soft_inside(vent, 0.08) * brain

    # Calcifications: small bright dots in any slice, so "bright spot" alone is not a bleed.
    has_calc = torch.rand(n, generator=gen) < 0.4
    angle, rho = uniform(n, 0, TWO_PI, gen), uniform(n, 0.0, 0.6, gen)
    calc = ellipse_radius(yy, xx, cy + rho * ry * torch.sin(angle), cx + rho * rx * torch.cos(angle),
                          zeros + 0.035, zeros + 0.035, zeros)
    img = img + 0.35 * soft_inside(calc, 0.1) * has_calc[:, None, None] * brain

    # The bleed: a parenchymal blob (60%) or a crescent hugging the skull (40%).
    crescent = torch.rand(n, generator=gen) < 0.4
    angle = uniform(n, 0, TWO_PI, gen)
    rho = torch.where(crescent, uniform(n, 0.86, 0.92, gen), uniform(n, 0.0, 0.7, gen))
    b_cy, b_cx = cy + rho * ry * torch.sin(angle), cx + rho * rx * torch.cos(angle)
    b_size = uniform(n, *BLEED_SIZE, gen)
    b_long = torch.where(crescent, b_size * 2.2, b_size * uniform(n, 1.0, 1.5, gen))
    b_short = torch.where(crescent, b_size * 0.45, b_size)
    b_theta = torch.where(crescent, angle + torch.pi / 2, uniform(n, 0, TWO_PI, gen))
    bleed_r = ellipse_radius(yy, xx, b_cy, b_cx, b_short, b_long, b_theta, wobble=zeros + 0.15, gen=gen)
    contrast = uniform(n, *BLEED_CONTRAST, gen) * positive.float()
    img = img + contrast[:, None, None] * soft_inside(bleed_r, 0.12) * brain
    return img[:, None].clamp(0, 1.2)


def draw_slices(n: int, size: int, site: dict, gen: torch.Generator):
    labels = exact_count_labels(n, site["prevalence"], gen)
    return draw_head_slices(n, size, labels.bool(), gen), labels


def build(sizes: SyntheticSizes, gen: torch.Generator) -> FederatedData:
    return build_synthetic(name="synthetic-ich", task=CLASSIFICATION, num_outputs=2, sizes=sizes,
                           gen=gen, draw_site=draw_site, draw_slices=draw_slices,
                           noise_range=NOISE_STD)
