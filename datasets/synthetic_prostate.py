"""`synthetic-prostate`: axial pelvic T2-MRI-like slices with a prostate gland mask.

The body has a bright subcutaneous fat ring around darker muscle, lateral pelvic bones, a
bright bladder above the gland in most slices, and a dark rectum with a brighter wall
behind it. The gland is an irregular ellipse whose bright peripheral zone surrounds a
darker central zone, with low contrast against the surrounding tissue, so its boundary is
the hard part. Six sites, named after the paper's, differ by scanner profile and by gland
size (field of view / patient population).
"""
from __future__ import annotations

import torch

from datasets.base import SEGMENTATION, FederatedData
from datasets.shapes import ellipse_radius, grid, smooth_field, soft_inside, uniform
from datasets.synthetic import SyntheticSizes, build_synthetic

SITES = ["I2CVB", "MSD", "NCI_ISBI_3T", "NCI_ISBI_DX", "Promise12", "ProstateX"]

# Difficulty knobs (calibrated so non-private FedAvg reaches Dice ~0.8; README "Calibration").
GLAND_CONTRAST = (0.06, 0.16)
NOISE_STD = (0.04, 0.09)


def draw_site(gen: torch.Generator) -> dict:
    return {"gland_scale": float(uniform(1, 0.8, 1.25, gen))}


def draw_slices(n: int, size: int, site: dict, gen: torch.Generator):
    yy, xx = grid(size)
    zeros = torch.zeros(n)
    body_r = ellipse_radius(yy, xx, uniform(n, -0.03, 0.03, gen), zeros, uniform(n, 0.6, 0.72, gen),
                            uniform(n, 0.85, 0.95, gen), uniform(n, -0.05, 0.05, gen),
                            wobble=zeros + 0.04, gen=gen)
    body = soft_inside(body_r, 0.02)
    fat = body - soft_inside(body_r / 0.88, 0.03)
    img = body * (0.3 + 0.04 * smooth_field(n, size, 5, gen)) + 0.45 * fat

    for sign in (-1, 1):  # pelvic bones: dark marrow-poor ellipses either side
        bone = ellipse_radius(yy, xx, uniform(n, 0.0, 0.1, gen), sign * uniform(n, 0.5, 0.6, gen),
                              zeros + 0.16, zeros + 0.1, zeros + sign * 0.4)
        img = img - 0.18 * soft_inside(bone, 0.05)

    scale = site["gland_scale"]
    g_rx = scale * uniform(n, 0.22, 0.32, gen)
    g_ry = g_rx * uniform(n, 0.7, 0.9, gen)
    g_cy, g_cx = uniform(n, -0.02, 0.12, gen), uniform(n, -0.06, 0.06, gen)
    gland_r = ellipse_radius(yy, xx, g_cy, g_cx, g_ry, g_rx, uniform(n, -0.25, 0.25, gen),
                             wobble=zeros + 0.12, gen=gen)
    mask = (gland_r < 1).float()

    # Bladder above (70% of slices) and rectum below the gland.
    has_bladder = (torch.rand(n, generator=gen) < 0.7).float()[:, None, None]
    b_ry = uniform(n, 0.12, 0.22, gen)
    bladder = ellipse_radius(yy, xx, g_cy - g_ry - b_ry - 0.04, g_cx, b_ry, b_ry * 1.6, zeros,
                             wobble=zeros + 0.05, gen=gen)
    img = img + has_bladder * 0.45 * soft_inside(bladder, 0.05) * (1 - mask)
    r_size = uniform(n, 0.07, 0.11, gen)
    rectum = ellipse_radius(yy, xx, g_cy + g_ry + r_size + 0.03, g_cx, r_size, r_size * 1.3, zeros)
    img = img + 0.12 * (soft_inside(rectum / 1.3, 0.05) - soft_inside(rectum, 0.05)) \
        - 0.15 * soft_inside(rectum, 0.05)

    contrast = uniform(n, *GLAND_CONTRAST, gen)[:, None, None]
    peripheral = soft_inside(gland_r, 0.06)
    central = soft_inside(gland_r / 0.6, 0.1)
    img = img + contrast * peripheral - 1.3 * contrast * central
    return img[:, None].clamp(0, 1.2), mask[:, None]


def build(sizes: SyntheticSizes, gen: torch.Generator) -> FederatedData:
    return build_synthetic(name="synthetic-prostate", task=SEGMENTATION, num_outputs=1, sizes=sizes,
                           gen=gen, draw_site=draw_site, draw_slices=draw_slices,
                           noise_range=NOISE_STD, site_names=SITES)
