"""`synthetic-blood`: colour blood-smear crops in BloodMNIST's eight classes.

Each image is a stained leukocyte (or platelet clump) on a pink background with a few red
blood cells. The classes differ as on a real smear: nucleus shape (round, bilobed,
kidney-shaped, 3-4 lobes), nucleus-to-cell ratio, cytoplasm colour and granules:
0 basophil, 1 eosinophil, 2 erythroblast, 3 immature granulocyte, 4 lymphocyte,
5 monocyte, 6 neutrophil, 7 platelet (BloodMNIST's label order). Hospitals differ by
stain colour, scanner profile (per channel) and label mix (a Dirichlet draw mixed with
the uniform one, so every class occurs at every site). 28 or 64 px, like BloodMNIST.
"""
from __future__ import annotations

import torch

from datasets.base import MULTICLASS, FederatedData, Hospital, Split
from datasets.scanner import ScannerProfile, apply_scanner
from datasets.shapes import ellipse_radius, grid, smooth_field, soft_inside, uniform
from datasets.synthetic import TWO_PI, SyntheticSizes, hospital_train_sizes

NUM_CLASSES = 8
# Per class: cell radius, nucleus lobes, lobe radius (x cell), lobe spread (x cell),
# nucleus RGB, cytoplasm RGB, granule density, granule RGB.
CLASSES = [
    (0.30, 1, 0.50, 0.00, (0.30, 0.15, 0.45), (0.55, 0.40, 0.65), 0.55, (0.20, 0.05, 0.35)),  # basophil
    (0.33, 2, 0.30, 0.30, (0.40, 0.20, 0.55), (0.95, 0.55, 0.45), 0.40, (0.90, 0.35, 0.25)),  # eosinophil
    (0.20, 1, 0.55, 0.00, (0.20, 0.08, 0.30), (0.60, 0.55, 0.75), 0.00, (0.0, 0.0, 0.0)),    # erythroblast
    (0.38, 1, 0.55, 0.10, (0.50, 0.35, 0.65), (0.65, 0.65, 0.80), 0.10, (0.45, 0.30, 0.55)),  # immature gran.
    (0.22, 1, 0.75, 0.00, (0.28, 0.12, 0.45), (0.60, 0.70, 0.90), 0.00, (0.0, 0.0, 0.0)),    # lymphocyte
    (0.40, 2, 0.38, 0.18, (0.45, 0.30, 0.60), (0.70, 0.70, 0.80), 0.05, (0.50, 0.40, 0.60)),  # monocyte
    (0.33, 4, 0.22, 0.38, (0.38, 0.18, 0.52), (0.92, 0.80, 0.82), 0.15, (0.75, 0.55, 0.65)),  # neutrophil
    (0.10, 3, 0.55, 0.90, (0.45, 0.25, 0.60), (0.70, 0.55, 0.75), 0.00, (0.0, 0.0, 0.0)),    # platelet
]
BACKGROUND = (0.92, 0.82, 0.80)
RED_CELL = (0.88, 0.55, 0.55)
NOISE_STD = (0.02, 0.05)


def _paint(img: torch.Tensor, mask: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Blend colour `rgb` ([n, 3] or [3]) into `img` [n, 3, H, W] where `mask` [n, H, W] is 1."""
    rgb = rgb if rgb.dim() == 2 else rgb[None].expand(img.shape[0], 3)
    return img * (1 - mask[:, None]) + rgb[:, :, None, None] * mask[:, None]


def draw_cells(labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n = labels.shape[0]
    table = [torch.tensor([c[i] for c in CLASSES], dtype=torch.float32)[labels] for i in (0, 1, 2, 3, 6)]
    cell_r, lobes, lobe_r, spread, granules = table
    nucleus_rgb = torch.tensor([c[4] for c in CLASSES])[labels]
    cyto_rgb = torch.tensor([c[5] for c in CLASSES])[labels]
    granule_rgb = torch.tensor([c[7] for c in CLASSES])[labels]
    yy, xx = grid(size)
    zeros = torch.zeros(n)
    img = torch.tensor(BACKGROUND)[None, :, None, None].expand(n, 3, size, size).clone()
    for _ in range(3):  # red blood cells, partly outside the crop
        angle, rho = uniform(n, 0, TWO_PI, gen), uniform(n, 0.55, 1.0, gen)
        r = ellipse_radius(yy, xx, rho * torch.sin(angle), rho * torch.cos(angle), zeros + 0.28, zeros + 0.28,
                           zeros, wobble=zeros + 0.05, gen=gen)
        img = _paint(img, 0.8 * soft_inside(r, 0.08), torch.tensor(RED_CELL))
    scale = cell_r * uniform(n, 0.85, 1.15, gen)
    cy, cx = uniform(n, -0.08, 0.08, gen), uniform(n, -0.08, 0.08, gen)
    platelet = labels == NUM_CLASSES - 1
    cell = soft_inside(ellipse_radius(yy, xx, cy, cx, scale, scale * uniform(n, 0.9, 1.1, gen), zeros,
                                      wobble=zeros + 0.06, gen=gen), 0.06)
    cell = cell * (~platelet).float()[:, None, None]
    img = _paint(img, cell, cyto_rgb)
    texture = (smooth_field(n, size, max(4, size // 3), gen) > 0.6).float()
    img = _paint(img, cell * texture * granules[:, None, None] * 1.5, granule_rgb)
    nucleus = torch.zeros(n, size, size)
    base = uniform(n, 0, TWO_PI, gen)
    for j in range(4):
        active = (j < lobes).float()
        angle = base + TWO_PI * j / lobes.clamp_min(1) + uniform(n, -0.3, 0.3, gen)
        dist = spread * scale * torch.where(platelet, uniform(n, 0.5, 2.5, gen), zeros + 1)
        r = ellipse_radius(yy, xx, cy + dist * torch.sin(angle), cx + dist * torch.cos(angle),
                           lobe_r * scale, lobe_r * scale * uniform(n, 0.8, 1.3, gen), uniform(n, 0, TWO_PI, gen),
                           wobble=zeros + 0.1, gen=gen)
        nucleus = torch.maximum(nucleus, soft_inside(r, 0.08) * active[:, None, None])
    return _paint(img, nucleus, nucleus_rgb)


def class_mix(gen: torch.Generator) -> torch.Tensor:
    """Half uniform, half Dirichlet(1) (normalised Exp(1) draws from the run's generator):
    label skew across sites with every class present."""
    e = -torch.log(torch.rand(NUM_CLASSES, generator=gen).clamp_min(1e-12))
    return 0.5 / NUM_CLASSES + 0.5 * e / e.sum()


def draw_labels(n: int, mix: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    counts = torch.floor(mix * n).long()
    remainder = n - int(counts.sum())
    if remainder:
        extra = torch.multinomial(mix, remainder, replacement=True, generator=gen)
        counts += torch.bincount(extra, minlength=NUM_CLASSES)
    labels = torch.repeat_interleave(torch.arange(NUM_CLASSES), counts)
    return labels[torch.randperm(n, generator=gen)]


def build(sizes: SyntheticSizes, gen: torch.Generator) -> FederatedData:
    train_sizes = hospital_train_sizes(sizes, gen)
    hospitals = []
    for h in range(sizes.hospitals):
        profile = ScannerProfile.sample(gen, noise=NOISE_STD)
        stain = uniform(3, 0.85, 1.15, gen)  # per-site stain colour
        mix = class_mix(gen)

        def split(n: int) -> Split:
            labels = draw_labels(n, mix, gen)
            images = draw_cells(labels, sizes.img_size, gen) * stain[None, :, None, None]
            flat = apply_scanner(images.reshape(n * 3, 1, sizes.img_size, sizes.img_size), profile, gen)
            return Split(flat.reshape(n, 3, sizes.img_size, sizes.img_size).contiguous(), labels)

        hospitals.append(Hospital(f"hospital{h:02d}", split(train_sizes[h]), split(sizes.val), split(sizes.test)))
    return FederatedData("synthetic-blood", MULTICLASS, hospitals, in_channels=3, num_outputs=NUM_CLASSES)
