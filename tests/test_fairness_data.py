"""Fairness metrics by hand, the two new synthetic datasets and the GroupNorm ResNets."""
import pytest
import torch
from opacus.validators import ModuleValidator

from datasets.synthetic import SyntheticSizes
from datasets import synthetic_blood, synthetic_cxr
from federated.task import make_task
from nets import build_model
from tests.test_loop import _run
from utils.fairness import fairness_metrics


def test_fairness_metrics_by_hand():
    # Six images, binary task (two logits); sex: 0 male x3, 1 female x3.
    labels = torch.tensor([1, 0, 1, 1, 0, 0])
    p1 = torch.tensor([0.9, 0.2, 0.4, 0.8, 0.6, 0.3])  # P(class 1)
    outputs = torch.log(torch.stack([1 - p1, p1], dim=1))
    sex = torch.tensor([0, 0, 0, 1, 1, 1])
    age = torch.tensor([0, 0, 1, 1, 2, 2])
    groups = {"sex": ["male", "female"], "age": ["<40", "40-65", ">65"]}
    f = fairness_metrics(outputs, labels, {"sex": sex, "age": age}, groups, make_task("classification").score)
    # male: preds [1, 0, 0] vs [1, 0, 1] -> 2/3; female: [1, 1, 0] vs [1, 0, 0] -> 2/3
    assert f["acc_sex=male"] == pytest.approx(2 / 3) and f["acc_sex=female"] == pytest.approx(2 / 3)
    assert f["spd_acc_sex=female"] == pytest.approx(0.0)
    # male AUC: positives {0.9, 0.4} vs negative {0.2} -> 1.0; female: positive 0.8 vs {0.6, 0.3} -> 1.0
    assert f["auc_sex=male"] == pytest.approx(1.0)
    # age: <40 acc 1 (n=2), 40-65 acc 1/2 (n=2), >65 acc 1/2 (n=2)
    assert f["acc_age=<40"] == pytest.approx(1.0)
    assert f["spd_acc_age=<40"] == pytest.approx(1.0 - 0.5)
    assert f["spd_acc_age=40-65"] == pytest.approx(0.5 - (2 * 1.0 + 2 * 0.5) / 4)
    # >65: labels [0, 0] -> AUC undefined (NaN), accuracy still reported
    assert f["auc_age=>65"] != f["auc_age=>65"] and f["acc_age=>65"] == pytest.approx(0.5)


def test_spd_weights_the_other_groups_by_size():
    labels = torch.zeros(6, 4)
    probs = torch.full((6, 4), 0.1)
    probs[0] = 0.9  # one image of group 0 wrong on all four findings
    outputs = torch.logit(probs)
    age = torch.tensor([0, 0, 1, 2, 2, 2])
    f = fairness_metrics(outputs, labels, {"age": age}, {"age": ["a", "b", "c"]}, make_task("multilabel").score)
    assert f["acc_age=a"] == pytest.approx(0.5)
    assert f["spd_acc_age=a"] == pytest.approx(-0.5)
    assert f["spd_acc_age=b"] == pytest.approx(1.0 - (2 * 0.5 + 3 * 1.0) / 5)


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
    old, young = train.attributes["age"] == 2, train.attributes["age"] == 0
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
                "--img_size", "16", "--batch", "8", "--rounds", "2", "--no_progress", "--save_path", str(tmp_path)])
    fairness = out["summary"]["fairness"]
    assert {"acc_sex=female", "spd_acc_sex=female", "auc_age=>65"} <= set(fairness)
    assert fairness["spd_acc_sex=female"] == pytest.approx(-fairness["spd_acc_sex=male"])
    assert ",all,test_fairness,spd_acc_sex=female," in out["metrics"]
