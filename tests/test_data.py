import pytest
import torch

from datasets import build_federated_data
from datasets.base import CLASSIFICATION, SEGMENTATION
from federated.config import parse_config
from utils.seeding import make_generator


def _data(argv, seed=0):
    cfg = parse_config(argv + ["--seed", str(seed)])
    return build_federated_data(cfg, make_generator(cfg.seed, "data"))


ICH = ["-N", "4", "--train_size", "24", "--val_size", "10", "--test_size", "10", "--img_size", "32"]
PROSTATE = ["--data", "synthetic-prostate"] + ICH[2:]


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = _data(ICH, 0), _data(ICH, 0), _data(ICH, 1)
    assert all(torch.equal(x.train.images, y.train.images) for x, y in zip(a.hospitals, b.hospitals))
    assert not torch.equal(a.hospitals[0].train.images, c.hospitals[0].train.images)


def test_ich_shapes_labels_and_sizes():
    d = _data(ICH)
    assert d.task == CLASSIFICATION and len(d.hospitals) == 4
    for h in d.hospitals:
        assert h.train.images.shape == (24, 1, 32, 32)
        assert len(h.val) == 10 and len(h.test) == 10
        assert set(h.val.targets.tolist()) == {0, 1}  # both classes, so AUC is defined


def test_positive_slices_are_brighter_inside_the_brain():
    d = _data(["-N", "1", "--train_size", "400", "--img_size", "32"])
    x, y = d.hospitals[0].train.images, d.hospitals[0].train.targets
    bright = (x > x.mean() + 0.15).flatten(1).float().sum(1)
    assert bright[y == 1].mean() > bright[y == 0].mean()


def test_hospitals_are_non_iid():
    d = _data(ICH)
    stats = torch.tensor([[h.train.images.mean(), h.train.images.std()] for h in d.hospitals])
    assert stats[:, 0].std() > 0.01  # scanner scale/offset differ between sites


def test_prostate_masks_and_site_gland_size():
    d = _data(PROSTATE)
    assert d.task == SEGMENTATION and d.hospitals[0].name == "I2CVB"
    fractions = []
    for h in d.hospitals:
        m = h.train.targets
        assert m.shape == (24, 1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
        assert (m.flatten(1).sum(1) > 0).all()
        fractions.append(float(m.mean()))
    assert max(fractions) > 1.2 * min(fractions)  # per-site gland size


def test_size_skew_makes_hospitals_unequal():
    d = _data(ICH + ["--size_skew", "0.8"])
    sizes = [len(h.train) for h in d.hospitals]
    assert len(set(sizes)) > 1


@pytest.mark.parametrize("skew", [0.3, 0.8, 1.5])
def test_size_skew_keeps_the_requested_mean(skew):
    """Unequal sizes, but N x --train_size records in all (the log-normal draw alone gave a
    mean off by up to half for a few hospitals)."""
    for seed in range(5):
        d = _data(ICH + ["--size_skew", str(skew)], seed=seed)
        sizes = [len(h.train) for h in d.hospitals]
        assert sum(sizes) == 4 * 24 and min(sizes) >= 2 and len(set(sizes)) > 1, sizes
