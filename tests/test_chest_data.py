"""synthetic-chestct and synthetic-covidseg (the PPPML-HMI tasks): deterministic, labels
that match the lesions, and --site_shift that dials how much the sites differ."""
from __future__ import annotations

import pytest
import torch

from datasets.scanner import ScannerProfile
from datasets.synthetic import SyntheticSizes
from datasets.synthetic_chest import build_chestct, build_covidseg, draw_chest, site_traits

SIZES = SyntheticSizes(hospitals=5, train=40, val=10, test=10, img_size=32)


def test_the_federations_are_deterministic_and_shaped():
    a = build_chestct(SIZES, torch.Generator().manual_seed(3))
    b = build_chestct(SIZES, torch.Generator().manual_seed(3))
    assert torch.equal(a.hospitals[2].test.images, b.hospitals[2].test.images)
    assert a.task == "classification" and a.num_outputs == 2 and len(a.hospitals) == 5
    assert a.hospitals[0].train.images.shape == (40, 1, 32, 32)
    seg = build_covidseg(SIZES, torch.Generator().manual_seed(3))
    masks = seg.hospitals[0].train.targets
    assert seg.task == "segmentation" and masks.shape == (40, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert 0 < float((masks.flatten(1).sum(1) > 0).float().mean()) < 1  # some slices show nothing


def test_lesions_make_the_label_and_lie_in_the_lungs():
    gen = torch.Generator().manual_seed(0)
    site = site_traits(torch.Generator().manual_seed(1), 1.0)
    infected = torch.tensor([True, False] * 8)
    images, masks = draw_chest(16, 32, infected, site, gen)
    has = masks.flatten(1).sum(1) > 0
    assert torch.equal(has, infected)  # a patient's slice shows a lesion; a healthy one none
    # the same slices without infection (the same draws): lesions are what makes them brighter
    healthy, none = draw_chest(16, 32, torch.zeros(16, dtype=torch.bool), site, torch.Generator().manual_seed(0))
    assert not none.any()
    lesion = masks.bool()
    assert float((images - healthy)[lesion].mean()) > 0.1
    assert torch.equal(images[~infected], healthy[~infected])


def test_site_shift_zero_is_one_population_on_one_scanner():
    gen = torch.Generator().manual_seed(0)
    traits = [site_traits(gen, 0.0) for _ in range(5)]
    assert all(t == traits[0] for t in traits)
    profile = ScannerProfile.sample(torch.Generator().manual_seed(0), noise=(0.05, 0.05), shift=0.0)
    assert (profile.scale, profile.offset, profile.gamma, profile.blur_sigma, profile.bias_amplitude) == (1, 0, 1, 0, 0)
    default = ScannerProfile.sample(torch.Generator().manual_seed(0), noise=(0.05, 0.05))
    assert default == ScannerProfile.sample(torch.Generator().manual_seed(0), noise=(0.05, 0.05), shift=1.0)


@pytest.mark.parametrize("build", [build_chestct, build_covidseg])
def test_a_larger_shift_spreads_the_sites_apart(build):
    def spread(shift: float) -> float:
        data = build(SyntheticSizes(5, 60, 2, 2, 32), torch.Generator().manual_seed(0), site_shift=shift)
        means = torch.stack([h.train.images.mean() for h in data.hospitals])
        return float(means.std())
    assert spread(0.0) < spread(1.0) < spread(2.0)
