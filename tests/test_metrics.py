import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from utils.metrics import classification_metrics, hd95, is_better, segmentation_metrics


def test_classification_metrics_match_hand_computation():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])
    m = classification_metrics(labels, scores)
    # threshold 0.5: tp=3 (0.9,0.8,0.7), fn=1 (0.3), fp=1 (0.6), tn=3
    assert m["acc"] == 6 / 8
    assert m["sen"] == 3 / 4 and m["spe"] == 3 / 4
    assert math.isclose(m["f1"], 2 * 3 / (2 * 3 + 1 + 1))
    # AUC: of the 16 (positive, negative) pairs, only (0.3 vs 0.6) and (0.3 vs 0.4) are misordered
    assert math.isclose(m["auc"], 14 / 16)


def test_auc_is_nan_for_a_single_class():
    assert math.isnan(classification_metrics(np.ones(4), np.random.rand(4))["auc"])


def test_segmentation_metrics_match_hand_computation():
    pred = torch.zeros(1, 1, 8, 8)
    target = torch.zeros(1, 1, 8, 8)
    pred[0, 0, 0:4, 0:4] = 1   # 16 px
    target[0, 0, 0:4, 0:2] = 1  # 8 px, all inside pred
    m = segmentation_metrics(pred, target)
    assert math.isclose(m["dice"], 2 * 8 / (16 + 8), rel_tol=1e-6)
    assert math.isclose(m["iou"], 8 / 16, rel_tol=1e-6)
    # pred's far edge (column 3) is 2 px from target's edge (column 1); target edges lie on pred's
    assert math.isclose(m["hd95"], 2.0, rel_tol=1e-6)


def test_empty_mask_conventions():
    empty, full = torch.zeros(1, 1, 6, 8), torch.zeros(1, 1, 6, 8)
    full[..., 1:3, 1:3] = 1
    assert segmentation_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    missed = segmentation_metrics(empty, full)
    assert missed["dice"] == 0.0 and math.isclose(missed["hd95"], math.hypot(6, 8))


def test_hd95_equals_monai():
    gen = np.random.default_rng(0)
    preds, targets = [], []
    for _ in range(20):
        p = np.zeros((24, 24), bool)
        t = np.zeros((24, 24), bool)
        y, x, h, w = gen.integers(0, 12, 4)
        p[y:y + h + 3, x:x + w + 3] = True
        y, x, h, w = gen.integers(0, 12, 4)
        t[y:y + h + 3, x:x + w + 3] = True
        preds.append(p)
        targets.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_hausdorff_distance(torch.tensor(np.array(preds))[:, None].float(),
                                         torch.tensor(np.array(targets))[:, None].float(),
                                         include_background=True, percentile=95).flatten()
    ours = [hd95(p, t) for p, t in zip(preds, targets)]
    assert np.allclose(ours, ref.numpy(), atol=1e-5)


def test_is_better_respects_metric_direction():
    assert is_better("auc", 0.8, 0.7) and not is_better("auc", 0.6, 0.7)
    assert is_better("hd95", 2.0, 3.0) and not is_better("hd95", 4.0, 3.0)
    assert is_better("dice", 0.1, None)


def test_vectorised_binary_metrics_equal_scikit_learn():
    """The torch scorer (federated evaluation's hot path) against scikit-learn, with ties:
    scores rounded to one decimal so that many positives and negatives share a score."""
    from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

    gen = np.random.default_rng(0)
    for n in (2, 7, 40, 401):
        labels = gen.integers(0, 2, n)
        labels[:2] = [0, 1]
        for scores in (gen.random(n), np.round(gen.random(n), 1), np.full(n, 0.5)):
            m = classification_metrics(torch.as_tensor(labels), torch.as_tensor(scores, dtype=torch.float32))
            scores32 = torch.as_tensor(scores, dtype=torch.float32).numpy()
            assert math.isclose(m["auc"], roc_auc_score(labels, scores32), rel_tol=0, abs_tol=1e-12)
            preds = (scores32 >= 0.5).astype(int)
            tn, fp, fn, tp = confusion_matrix(labels, preds, labels=[0, 1]).ravel()
            assert m["acc"] == (tp + tn) / n and m["sen"] == tp / (tp + fn) and m["spe"] == tn / (tn + fp)
            assert math.isclose(m["f1"], f1_score(labels, preds, zero_division=0.0), abs_tol=1e-12)


def test_paper_soft_dice_is_sigmoid_overlap_per_image_averaged_per_batch_then_over_batches():
    """Jiang et al.'s code: Dice of sigmoid probabilities (eps 1e-5) per image, the mean of each
    evaluation batch, then the mean over batches (a last, smaller batch weighs as much as a full one)."""
    from utils.metrics import paper_segmentation_metrics
    target = torch.zeros(3, 1, 4, 4)
    target[0, 0, :2, :2] = 1  # 4 of 16 pixels
    target[1, 0, :2, :] = 1   # 8 of 16
    target[2, 0, :2, :2] = 1
    logits = torch.zeros(3, 1, 4, 4)  # sigmoid 0.5 everywhere
    logits[2] = torch.where(target[2] > 0, 20.0, -20.0)  # a near-perfect third image
    per_image = [(2 * 2 + 1e-5) / (8 + 4 + 1e-5), (2 * 4 + 1e-5) / (8 + 8 + 1e-5), 1.0]
    m = paper_segmentation_metrics(logits, target, batch=2)
    expected = ((per_image[0] + per_image[1]) / 2 + per_image[2]) / 2
    assert math.isclose(m["dice"], expected, rel_tol=1e-6)
    assert not math.isclose(m["dice"], sum(per_image) / 3, rel_tol=1e-3)  # not the mean over images


def test_paper_iou_thresholds_logits_at_one_half():
    """The paper's IoU compares logits (not probabilities) with 0.5: a logit of 0.3 (p = 0.57) is background."""
    from utils.metrics import paper_segmentation_metrics
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, :2, :2] = 1
    logits = torch.full((1, 1, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 0.3
    logits[0, 0, 0, 0] = 0.7
    m = paper_segmentation_metrics(logits, target, batch=4)
    assert math.isclose(m["iou"], (1 + 1e-5) / (4 + 1e-5), rel_tol=1e-6)


def test_paper_hd95_scores_an_empty_prediction_1000_and_averages_only_positive_distances():
    from utils.metrics import paper_segmentation_metrics
    target = torch.zeros(3, 1, 16, 16)
    target[:, 0, 4:8, 4:8] = 1
    logits = torch.full((3, 1, 16, 16), -10.0)
    logits[1, 0, 4:8, 4:8] = 10.0        # exact: distance 0, left out of the mean
    logits[2, 0, 4:8, 7:11] = 10.0       # shifted by 3 columns
    m = paper_segmentation_metrics(logits, target, batch=8)
    shifted = hd95(np.asarray(logits[2, 0] > 0), np.asarray(target[2, 0] > 0))
    assert shifted > 0
    assert math.isclose(m["hd95"], (1000.0 + shifted) / 2, rel_tol=1e-9)
    assert "dice_hard" in m  # the repository's hard Dice stays as an extra column


def test_segmentation_trains_on_the_papers_soft_dice_loss_by_default():
    """The paper's prostate loss: 1 - (2 sum(p g) + 1e-5) / (sum p + sum g + 1e-5) per image,
    p = sigmoid(logits), mean over the batch (MONAI's DiceLoss with its default smoothing);
    --seg_loss dicece adds binary cross-entropy (this repository's earlier default)."""
    from federated.task import make_task
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=gen)
    target = (torch.rand(3, 1, 8, 8, generator=gen) > 0.5).float()
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    paper = (1 - (2 * (p * g).sum(1) + 1e-5) / (p.sum(1) + g.sum(1) + 1e-5)).mean()
    assert torch.allclose(make_task("segmentation").loss_fn(logits, target), paper, atol=1e-6)
    with_ce = make_task("segmentation", seg_loss="dicece").loss_fn(logits, target)
    assert torch.allclose(with_ce, paper + torch.nn.functional.binary_cross_entropy_with_logits(logits, target),
                          atol=1e-6)


def test_paper_scores_threshold_fractional_masks_as_its_code():
    """Area-resized masks carry fractions. The paper's IoU casts the mask to long (only 1.0
    counts), its HD95 (medpy) casts it to bool (anything above 0 counts), and its soft Dice
    uses the fractions as they are."""
    from utils.metrics import paper_segmentation_metrics
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1.0
    target[0, 0, 1, 2:6] = 0.5  # a fractional rim above the square
    logits = torch.full((1, 1, 8, 8), -20.0)
    logits[0, 0, 2:6, 2:6] = 20.0  # predicts exactly the square of ones
    scores = paper_segmentation_metrics(logits, target, batch=1)
    assert scores["iou"] == pytest.approx(1.0)  # the rim truncates to 0
    assert scores["hd95"] == pytest.approx(1.0)  # the rim counts for the distance: one pixel off
    assert scores["dice"] == pytest.approx(2 * 16 / (16 + 18), rel=1e-4)  # soft: 16 + 4 * 0.5
