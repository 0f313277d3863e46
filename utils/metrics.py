"""Evaluation metrics: binary classification in torch (vectorised; tests pin it to
scikit-learn), the others from MONAI (AUC, Dice, IoU, HD95) and scikit-learn (F1).

MONAI, scikit-learn and SciPy are imported where they are used: MONAI's metrics alone take
~4 s to import, which a binary-classification run never needs.
"""
from __future__ import annotations

import math
import numpy as np
import torch

CLASSIFICATION_METRICS = ("auc", "acc", "sen", "spe", "f1")
MULTICLASS_METRICS = ("acc", "auc", "f1")
SEGMENTATION_METRICS = ("dice", "iou", "hd95", "dice_hard")
MULTILABEL_METRICS = ("auc", "acc")
LOWER_IS_BETTER = {"hd95", "loss"}


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic, ties counted as half (the
    same value as scikit-learn's roc_auc_score); NaN when the labels hold a single class."""
    positive = labels.reshape(-1) == 1
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores.reshape(-1).to(torch.float64))
    _, tie_group, tie_counts = torch.unique_consecutive(scores.reshape(-1)[order].to(torch.float64),
                                                        return_inverse=True, return_counts=True)
    ends = tie_counts.cumsum(0).to(torch.float64)
    ranks = (ends - (tie_counts - 1) / 2)[tie_group]  # 1-based ranks, ties averaged
    rank_sum = ranks[positive[order]].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """Binary metrics from positive-class probabilities: AUC, accuracy, sensitivity
    (recall of class 1), specificity (recall of class 0) and F1. AUC is NaN when the
    labels hold a single class (it is undefined there). Takes tensors or arrays."""
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    scores = torch.as_tensor(scores).reshape(-1)
    preds = (scores >= threshold).to(torch.int64)
    tp = int(((preds == 1) & (labels == 1)).sum())
    tn = int(((preds == 0) & (labels == 0)).sum())
    fp = int(((preds == 1) & (labels == 0)).sum())
    fn = int(((preds == 0) & (labels == 1)).sum())
    return {
        "auc": binary_auc(scores, labels),
        "acc": float((tp + tn) / max(len(labels), 1)),
        "sen": float(tp / (tp + fn)) if tp + fn else math.nan,
        "spe": float(tn / (tn + fp)) if tn + fp else math.nan,
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0,
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, macro one-vs-rest AUC (MONAI; over the classes present with both positives
    and negatives, NaN if none) and macro F1 (scikit-learn) from class probabilities [n, C]."""
    from monai.metrics import compute_roc_auc
    from sklearn.metrics import f1_score

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs)
    preds = probs.argmax(1)
    num_classes = probs.shape[1]
    one_hot = np.eye(num_classes)[labels]
    scorable = [c for c in range(num_classes) if 0 < one_hot[:, c].sum() < len(labels)]
    auc = math.nan
    if scorable:
        per_class = compute_roc_auc(torch.as_tensor(probs[:, scorable], dtype=torch.float64),
                                    torch.as_tensor(one_hot[:, scorable]), average="none")
        auc = float(np.mean(per_class))
    return {"acc": float((preds == labels).mean()), "auc": auc,
            "f1": float(f1_score(labels, preds, labels=list(range(num_classes)), average="macro", zero_division=0.0))}


def multilabel_metrics(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Macro AUC over the findings that have positives and negatives here (MONAI; NaN if
    none) and accuracy averaged over findings at `threshold`, from probabilities [n, F]."""
    from monai.metrics import compute_roc_auc

    targets, probs = np.asarray(targets, dtype=float), np.asarray(probs, dtype=float)
    scorable = [f for f in range(targets.shape[1]) if 0 < targets[:, f].sum() < len(targets)]
    auc = math.nan
    if scorable:
        per_finding = compute_roc_auc(torch.as_tensor(probs[:, scorable], dtype=torch.float64),
                                      torch.as_tensor(targets[:, scorable]), average="none")
        auc = float(np.mean(per_finding))
    return {"auc": auc, "acc": float(((probs >= threshold) == (targets > 0.5)).mean())}


def segmentation_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Mean Dice, IoU and 95th-percentile Hausdorff distance (pixels) over images.

    `pred` and `target` are binary masks [n, 1, H, W]. Conventions for empty masks: both
    empty counts as a perfect match (Dice = IoU = 1, HD95 = 0); exactly one empty gives
    Dice = IoU = 0 and HD95 = the image diagonal, the largest distance possible, so a
    missed gland is penalised rather than dropped from the mean.
    """
    from monai.metrics import compute_dice, compute_iou

    pred, target = pred.float(), target.float()
    dice = compute_dice(pred, target, include_background=True, ignore_empty=False).flatten()
    iou = compute_iou(pred, target, include_background=True, ignore_empty=False).flatten()
    hd = torch.tensor([hd95(p[0].numpy() > 0, t[0].numpy() > 0) for p, t in zip(pred, target)])
    pred_empty = pred.flatten(1).sum(1) == 0
    target_empty = target.flatten(1).sum(1) == 0
    diagonal = math.hypot(*pred.shape[-2:])
    both = pred_empty & target_empty
    one = pred_empty ^ target_empty
    dice = torch.where(both, 1.0, torch.where(one, 0.0, dice))
    iou = torch.where(both, 1.0, torch.where(one, 0.0, iou))
    hd = torch.where(both, 0.0, torch.where(one, diagonal, hd))
    return {"dice": float(dice.mean()), "iou": float(iou.mean()), "hd95": float(hd.mean())}


PAPER_EPS = 1e-5        # the smoothing of Jiang et al.'s soft Dice and IoU
PAPER_EMPTY_HD95 = 1000.0  # their HD95 of an empty prediction


def paper_segmentation_metrics(logits: torch.Tensor, target: torch.Tensor, *, batch: int) -> dict:
    """Segmentation scores as the paper's code computes them on one hospital, in batches of
    `batch` images in order (its evaluation loader): soft Dice of sigmoid probabilities and
    IoU of logits thresholded at 0.5, each per image, averaged per batch and then over
    batches; HD95 of sigmoid >= 0.5 per image, 1000 for an empty prediction, averaged over
    the images with a positive distance (NaN when none has one). A fractional mask (area
    resizing) is thresholded as the paper's casts do: IoU counts only 1.0, HD95 anything > 0. `dice_hard` is this
    repository's hard Dice over images (segmentation_metrics), kept as an extra column."""
    logits, target = logits.float(), target.float()
    dice_batches, iou_batches, distances = [], [], []
    for start in range(0, logits.shape[0], batch):
        out, gt = logits[start:start + batch].flatten(1), target[start:start + batch].flatten(1)
        prob = torch.sigmoid(out)
        dice = (2 * (prob * gt).sum(1) + PAPER_EPS) / (prob.sum(1) + gt.sum(1) + PAPER_EPS)
        hard, truth = out > 0.5, gt.long() != 0  # the paper casts the mask to long: fractions drop out
        iou = ((hard & truth).sum(1) + PAPER_EPS) / ((hard | truth).sum(1) + PAPER_EPS)
        dice_batches.append(float(dice.mean()))
        iou_batches.append(float(iou.mean()))
    for out, gt in zip(logits, target):
        pred = (torch.sigmoid(out[0]) >= 0.5).numpy()
        distance = PAPER_EMPTY_HD95 if not pred.any() else hd95(pred, gt[0].numpy() > 0)  # medpy: bool(mask)
        if distance > 0:  # NaN (an empty mask) and exact matches are left out, as in the paper's loop
            distances.append(distance)
    hard_dice = segmentation_metrics((logits > 0).float(), target)["dice"]
    return {"dice": float(np.mean(dice_batches)), "iou": float(np.mean(iou_batches)),
            "hd95": float(np.mean(distances)) if distances else math.nan, "dice_hard": hard_dice}


def is_better(metric: str, new: float, old: float | None) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new < old if metric in LOWER_IS_BETTER else new > old


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask (the mask minus its erosion)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance between two non-empty 2D masks (pixels).

    Same definition as MONAI's compute_hausdorff_distance(percentile=95) (the larger of
    the two directed 95th percentiles of edge-to-edge distances; tests pin the two
    together), but without its per-image crop/pad transforms, which cost ~5 ms an image.
    """
    from monai.metrics.utils import get_surface_distance

    if not pred.any() or not target.any():
        return math.nan
    ep, et = _edges(pred), _edges(target)
    forward = get_surface_distance(ep, et, distance_metric="euclidean")
    backward = get_surface_distance(et, ep, distance_metric="euclidean")
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))
