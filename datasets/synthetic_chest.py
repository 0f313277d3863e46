"""`synthetic-chestct` and `synthetic-covidseg`: axial chest-CT-like slices with and without
lung infection, the two tasks of the PPPML-HMI system (chest-CT classification, healthy
against patient; lung-infection segmentation).

A slice has a body ellipse with a brighter fat ring, two dark lungs with small bright
vessels, a bright mediastinum and heart between them and a vertebra behind. Infection is
one to four ground-glass opacities: soft, moderately bright blobs inside the lungs, mostly
toward the periphery, some with a denser (consolidated) core. `synthetic-chestct` labels a
slice 1 (patient) when it has lesions; `synthetic-covidseg` gives the lesion mask (every
slice is a patient's, some with nothing visible in it).

`--site_shift s` dials how much the five hospitals differ: s scales both the scanner
shift (datasets/scanner.py) and the population shift, each site's prevalence, lesion
extent and lesion contrast drawn around the common centre; 0 gives five sites of one
population on one scanner (IID), 1 the default, 2 strong heterogeneity.
"""
from __future__ import annotations

import torch

from datasets.base import CLASSIFICATION, SEGMENTATION, FederatedData
from datasets.shapes import ellipse_radius, grid, smooth_field, soft_inside, uniform
from datasets.synthetic import TWO_PI, SyntheticSizes, build_synthetic, exact_count_labels

NOISE_STD = (0.03, 0.07)
LESION_CONTRAST = 0.3   # the population's centre; each site's is drawn around it
LESION_SIZE = 0.16
PREVALENCE = 0.5


def site_traits(gen: torch.Generator, shift: float) -> dict:
    """A site's population: prevalence, lesion size and contrast, `shift` times a spread."""
    spread = lambda centre, width: centre * (1 + shift * width * float(uniform(1, -1, 1, gen)))  # noqa: E731
    return {"prevalence": min(max(PREVALENCE + shift * 0.25 * float(uniform(1, -1, 1, gen)), 0.1), 0.9),
            "lesion_size": spread(LESION_SIZE, 0.4), "lesion_contrast": spread(LESION_CONTRAST, 0.4)}


def draw_chest(n: int, size: int, infected: torch.Tensor, site: dict,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean slices [n, 1, H, W] and their lesion masks [n, 1, H, W]."""
    yy, xx = grid(size)
    zeros = torch.zeros(n)
    body_r = ellipse_radius(yy, xx, uniform(n, -0.03, 0.03, gen), zeros, uniform(n, 0.62, 0.72, gen),
                            uniform(n, 0.86, 0.95, gen), uniform(n, -0.05, 0.05, gen), wobble=zeros + 0.03, gen=gen)
    body = soft_inside(body_r, 0.02)
    img = body * (0.5 + 0.03 * smooth_field(n, size, 5, gen)) + 0.25 * (body - soft_inside(body_r / 0.9, 0.03))
    lungs = torch.zeros(n, size, size)
    lung_geometry = []
    for sign in (-1, 1):
        cx, cy = sign * uniform(n, 0.3, 0.38, gen), uniform(n, -0.08, 0.0, gen)
        rx, ry = uniform(n, 0.22, 0.28, gen), uniform(n, 0.38, 0.46, gen)
        lung_r = ellipse_radius(yy, xx, cy, cx, ry, rx, sign * uniform(n, 0.0, 0.2, gen), wobble=zeros + 0.08,
                                gen=gen)
        lungs = torch.maximum(lungs, soft_inside(lung_r, 0.04))
        lung_geometry.append((cy, cx, ry, rx))
    img = img - 0.42 * lungs * body
    heart = ellipse_radius(yy, xx, uniform(n, 0.0, 0.1, gen), uniform(n, 0.0, 0.08, gen), zeros + 0.2, zeros + 0.17,
                           zeros)
    img = img + 0.15 * soft_inside(heart, 0.05) * (1 - lungs)
    spine = ellipse_radius(yy, xx, zeros + 0.52, zeros, zeros + 0.09, zeros + 0.08, zeros)
    img = img + 0.5 * soft_inside(spine, 0.05)
    vessels = (smooth_field(n, size, max(size // 3, 4), gen) > 1.4).float() * lungs
    img = img + 0.12 * vessels

    mask = torch.zeros(n, size, size)
    lesions = torch.randint(1, 5, (n,), generator=gen) * infected.long()
    for k in range(4):
        has = (lesions > k).float()[:, None, None]
        side = torch.rand(n, generator=gen) < 0.5
        cy = torch.where(side, lung_geometry[0][0], lung_geometry[1][0])
        cx = torch.where(side, lung_geometry[0][1], lung_geometry[1][1])
        ry = torch.where(side, lung_geometry[0][2], lung_geometry[1][2])
        rx = torch.where(side, lung_geometry[0][3], lung_geometry[1][3])
        angle, rho = uniform(n, 0, TWO_PI, gen), uniform(n, 0.45, 0.85, gen)  # toward the periphery
        l_size = site["lesion_size"] * uniform(n, 0.6, 1.4, gen)
        lesion_r = ellipse_radius(yy, xx, cy + rho * ry * torch.sin(angle), cx + rho * rx * torch.cos(angle),
                                  l_size, l_size * uniform(n, 1.0, 1.6, gen), uniform(n, 0, TWO_PI, gen),
                                  wobble=zeros + 0.2, gen=gen)
        opacity = soft_inside(lesion_r, 0.25) * lungs * has
        core = soft_inside(lesion_r / 0.5, 0.1) * lungs * has * (torch.rand(n, generator=gen) < 0.3).float()[:, None, None]
        contrast = site["lesion_contrast"] * uniform(n, 0.6, 1.3, gen)[:, None, None]
        img = img + contrast * opacity + 0.2 * core
        mask = torch.maximum(mask, ((lesion_r < 1).float() * (lungs > 0.5).float() * has))
    return img[:, None].clamp(0, 1.2), mask[:, None]


def build_chestct(sizes: SyntheticSizes, gen: torch.Generator, *, site_shift: float = 1.0) -> FederatedData:
    def draw_slices(n: int, size: int, site: dict, g: torch.Generator):
        labels = exact_count_labels(n, site["prevalence"], g)
        images, _ = draw_chest(n, size, labels.bool(), site, g)
        return images, labels
    return build_synthetic(name="synthetic-chestct", task=CLASSIFICATION, num_outputs=2, sizes=sizes, gen=gen,
                           draw_site=lambda g: site_traits(g, site_shift), draw_slices=draw_slices,
                           noise_range=NOISE_STD, scanner_shift=site_shift)


def build_covidseg(sizes: SyntheticSizes, gen: torch.Generator, *, site_shift: float = 1.0) -> FederatedData:
    def draw_slices(n: int, size: int, site: dict, g: torch.Generator):
        infected = torch.rand(n, generator=g) < max(site["prevalence"], 0.6)  # a patient's slices: most show it
        return draw_chest(n, size, infected, site, g)
    return build_synthetic(name="synthetic-covidseg", task=SEGMENTATION, num_outputs=1, sizes=sizes, gen=gen,
                           draw_site=lambda g: site_traits(g, site_shift), draw_slices=draw_slices,
                           noise_range=NOISE_STD, scanner_shift=site_shift)
