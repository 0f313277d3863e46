"""The two fairness-study synthetic datasets, the GroupNorm ResNets and a run's fairness results."""
import pytest
import torch
from opacus.validators import ModuleValidator

from datasets.synthetic import SyntheticSizes
from datasets import synthetic_blood, synthetic_cxr
from nets import build_model
from tests.test_loop import _run


@pytest.mark.parametrize("name, channels, size", [("dpresnet", 3, 28), ("dpresnet_small", 3, 64),
                                                  ("resnet9", 1, 64), ("resnet9_small", 1, 32)])
def test_resnets_pass_opacus_validation(name, channels, size):
    model = build_model(name, channels, 8)
    assert ModuleValidator.validate(model, strict=False) == []
    assert model(torch.randn(2, channels, size, size)).shape == (2, 8)


def test_dpresnet_layout():
    model = build_model("dpresnet", 3, 8)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512]
    assert [c.stride[0] for c in convs] == [1, 1, 1, 1, 2, 2]
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.BatchNorm2d)) for m in model.modules())


def test_synthetic_blood_has_eight_classes_at_every_site():
    data = synthetic_blood.build(SyntheticSizes(3, 80, 8, 8, 28), torch.Generator().manual_seed(0))
    assert data.in_channels == 3 and data.num_outputs == 8
    for h in data.hospitals:
        assert h.train.images.shape == (80, 3, 28, 28)
        assert set(h.train.targets.tolist()) == set(range(8))
    mixes = [torch.bincount(h.train.targets, minlength=8) for h in data.hospitals]
    assert not torch.equal(mixes[0], mixes[1])  # label skew across sites
    again = synthetic_blood.build(SyntheticSizes(3, 80, 8, 8, 28), torch.Generator().manual_seed(0))
    assert torch.equal(again.hospitals[2].test.images, data.hospitals[2].test.images)


def test_synthetic_cxr_attributes_shift_prevalence_and_appearance():
    data = synthetic_cxr.build(SyntheticSizes(1, 3000, 10, 10, 32), torch.Generator().manual_seed(0))
    train = data.hospitals[0].train
    assert train.targets.shape == (3000, 4) and set(train.attributes) == {"sex", "age"}
    assert set(train.attributes["age"].tolist()) == set(range(5))  # the study's five age groups
    old, young = train.attributes["age"] == 4, train.attributes["age"] == 0
    cardiomegaly = train.targets[:, 0]
    assert cardiomegaly[old].mean() > 2 * cardiomegaly[young].mean()
    female = train.attributes["sex"] == 1
    lower = train.images[:, 0, 20:28].mean(dim=(1, 2))  # lower lung fields: breast shadows
    assert lower[female].mean() > lower[~female].mean()
    # attributes follow subsets and concatenation
    sub = train.subset(torch.tensor([0, 5]))
    assert torch.equal(sub.attributes["sex"], train.attributes["sex"][[0, 5]])


def test_cxr_run_stores_fairness_in_results(tmp_path):
    out = _run(["--data", "synthetic-cxr", "--train_size", "48", "--val_size", "16", "--test_size", "32",
                "--img_size", "16", "--batch", "8", "--rounds", "2", "--no_progress", "--bootstrap", "50",
                "--save_path", str(tmp_path)])
    fairness = out["summary"]["fairness"]
    assert fairness["resamples"] == 50 and set(fairness["thresholds"]) == set(synthetic_cxr.FINDINGS)
    assert fairness["groups"] == {"sex": ["male", "female"], "age": ["<30", "30-59", "60-69", "70-79", "80+"]}
    m = fairness["metrics"]
    assert {"auc", "sen", "spe", "acc_sex=female", "spd_acc_sex=female", "sen_age=80+", "auc_finding=nodule"} <= set(m)
    assert m["spd_acc_sex=female"]["value"] == pytest.approx(-m["spd_acc_sex=male"]["value"])
    assert m["auc"]["low"] <= m["auc"]["value"] <= m["auc"]["high"]
    for split in ("test_fairness", "test_fairness_low", "test_fairness_high"):
        assert f",all,{split},spd_acc_sex=female," in out["metrics"]
