"""`synthetic-cxr`: frontal chest-radiograph-like images with four findings and two
demographic attributes, for the fairness study.

A radiograph has a bright body outline, two dark lung fields crossed by ribs, and the
heart and mediastinum between them. Findings (multi-label, one logit each):
cardiomegaly (a wider heart), effusion (fluid filling a lung base), opacity (patchy
consolidation) and nodule (a small round density). Attributes shift both appearance and
prevalence, as in real cohorts: female patients have breast shadows over the lower lung
fields (which partly mimic effusion and opacity) and a smaller thorax; older patients
have fainter ribs and more cardiomegaly and effusion. Attributes are stored with each
image for fairness evaluation and never given to the model.
"""
from __future__ import annotations

import torch

from datasets.base import MULTILABEL, FederatedData, Hospital, Split
from datasets.radiograph_groups import AGE_GROUPS, ATTRIBUTE_GROUPS
from datasets.scanner import ScannerProfile, apply_scanner
from datasets.shapes import ellipse_radius, grid, smooth_field, soft_inside, uniform
from datasets.synthetic import SyntheticSizes, hospital_train_sizes

FINDINGS = ("cardiomegaly", "effusion", "opacity", "nodule")
BASE_PREVALENCE = torch.tensor([0.25, 0.20, 0.25, 0.15])
# Relative prevalence by age group (rows: the study's groups) and sex (male, female) per finding.
AGE_FACTOR = torch.tensor([[0.4, 0.5, 0.9, 0.6], [0.8, 0.8, 1.0, 0.9], [1.2, 1.2, 1.0, 1.1],
                           [1.6, 1.5, 1.05, 1.3], [1.9, 1.8, 1.1, 1.5]])
AGE_RANGE = torch.tensor([[18, 30], [30, 60], [60, 70], [70, 80], [80, 95]], dtype=torch.float32)  # years
AGE_MIX = torch.tensor([0.15, 0.35, 0.2, 0.18, 0.12])  # a site's share of each age group, before jitter
SEX_FACTOR = torch.tensor([[1.1, 1.0, 1.0, 1.0], [0.8, 1.0, 1.0, 1.0]])
NOISE_STD = (0.02, 0.05)


def draw_attributes(n: int, site: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Sex, age in years and the age group (the group drawn from the site's mix first)."""
    sex = (torch.rand(n, generator=gen) < site["female"]).long()
    group = torch.multinomial(site["age_mix"], n, replacement=True, generator=gen)
    low, high = AGE_RANGE[group, 0], AGE_RANGE[group, 1]
    years = (low + (high - low) * torch.rand(n, generator=gen)).floor()
    return {"sex": sex, "age": group, "age_years": years}


def draw_findings(attrs: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
    p = BASE_PREVALENCE[None] * AGE_FACTOR[attrs["age"]] * SEX_FACTOR[attrs["sex"]]
    return (torch.rand(p.shape, generator=gen) < p.clamp(max=0.8)).float()


def draw_radiographs(findings: torch.Tensor, attrs: dict[str, torch.Tensor], size: int,
                     gen: torch.Generator) -> torch.Tensor:
    n = findings.shape[0]
    yy, xx = grid(size)
    zeros = torch.zeros(n)
    female = attrs["sex"].float()
    age = (attrs["age_years"] - 18) / 77  # 0 at 18 years, 1 at 95
    thorax = uniform(n, 0.85, 0.95, gen) * (1 - 0.06 * female)
    body = soft_inside(ellipse_radius(yy, xx, zeros + 0.05, zeros, zeros + 1.1, thorax, zeros), 0.05)
    img = 0.55 * body + 0.04 * smooth_field(n, size, 5, gen)
    lungs = torch.zeros(n, size, size)
    for side in (-1, 1):
        r = ellipse_radius(yy, xx, zeros - 0.05, side * thorax * 0.45, thorax * 0.75, thorax * 0.3,
                           zeros + side * 0.12, wobble=zeros + 0.04, gen=gen)
        lungs = torch.maximum(lungs, soft_inside(r, 0.06))
    ribs = 0.5 + 0.5 * torch.cos(yy * torch.pi * 7 + 2.0 * xx.abs() ** 2 + uniform(n, 0, 6.28, gen)[:, None, None])
    rib_contrast = 0.12 - 0.07 * age[:, None, None]  # fainter ribs with age
    img = img - 0.38 * lungs + rib_contrast * ribs * lungs
    # Heart: wider with cardiomegaly; sits left of the midline (image right).
    heart_w = uniform(n, 0.22, 0.28, gen) * (1 + 0.45 * findings[:, 0])
    heart = soft_inside(ellipse_radius(yy, xx, zeros + 0.3, zeros + 0.08, zeros + 0.28, heart_w, zeros + 0.3), 0.06)
    img = img + 0.35 * heart
    # Breast shadows: soft densities over the lower lateral lung fields.
    for side in (-1, 1):
        r = ellipse_radius(yy, xx, zeros + 0.55, side * thorax * 0.5, zeros + 0.3, zeros + 0.35, zeros)
        img = img + 0.12 * female[:, None, None] * soft_inside(r, 0.2)
    # Effusion: fluid level across one lung base.
    side = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    level = uniform(n, 0.25, 0.5, gen)
    fluid = torch.sigmoid((yy - level[:, None, None]) / 0.05) * soft_inside(
        ellipse_radius(yy, xx, zeros + 0.1, side * thorax * 0.45, thorax * 0.8, thorax * 0.35, zeros), 0.05)
    img = img + 0.3 * findings[:, 1, None, None] * fluid
    # Opacity: patchy consolidation in a random lung region.
    cy, cx = uniform(n, -0.4, 0.3, gen), torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) * 0.4
    patch = soft_inside(ellipse_radius(yy, xx, cy, cx, zeros + 0.25, zeros + 0.2, zeros), 0.15)
    cloud = (smooth_field(n, size, 8, gen) > -0.2).float() * patch * lungs
    img = img + 0.22 * findings[:, 2, None, None] * cloud
    # Nodule: a small round density inside a lung.
    ny, nx = uniform(n, -0.5, 0.3, gen), torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) * \
        uniform(n, 0.25, 0.55, gen)
    nodule = soft_inside(ellipse_radius(yy, xx, ny, nx, zeros + 0.07, zeros + 0.07, zeros), 0.1)
    img = img + 0.3 * findings[:, 3, None, None] * nodule
    return img[:, None].clamp(0, 1.2)


def draw_site(gen: torch.Generator) -> dict:
    age_mix = AGE_MIX + 0.5 * AGE_MIX * (torch.rand(len(AGE_GROUPS), generator=gen) - 0.5)
    return {"female": float(uniform(1, 0.4, 0.6, gen)), "age_mix": age_mix / age_mix.sum()}


def build(sizes: SyntheticSizes, gen: torch.Generator) -> FederatedData:
    train_sizes = hospital_train_sizes(sizes, gen)
    hospitals = []
    for h in range(sizes.hospitals):
        profile = ScannerProfile.sample(gen, noise=NOISE_STD)
        site = draw_site(gen)

        def split(n: int) -> Split:
            attrs = draw_attributes(n, site, gen)
            findings = draw_findings(attrs, gen)
            images = apply_scanner(draw_radiographs(findings, attrs, sizes.img_size, gen), profile, gen)
            return Split(images.contiguous(), findings, {"sex": attrs["sex"], "age": attrs["age"]})

        hospitals.append(Hospital(f"hospital{h:02d}", split(train_sizes[h]), split(sizes.val), split(sizes.test)))
    return FederatedData("synthetic-cxr", MULTILABEL, hospitals, in_channels=1, num_outputs=len(FINDINGS),
                         attribute_groups=ATTRIBUTE_GROUPS, label_names=list(FINDINGS))
