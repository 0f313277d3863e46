"""The chest-radiograph study's evaluation: operating points chosen on validation, test
metrics overall and per subgroup, statistical parity differences, bootstrap intervals.

1. Threshold: per finding, the Youden point of the validation ROC curve, the score t that
   maximises sensitivity + specificity - 1 (Youden, Cancer 1950); an image is called
   positive when its score is >= t, the convention of the ROC curve the point comes from.
   Ties go to the highest such t. A finding without both classes on validation keeps 0.5.
2. Metrics on test at those thresholds: AUC, accuracy, sensitivity and specificity per
   finding, and their averages over findings (the study's macro average).
3. Subgroups: the same four metrics on each group of each attribute (sex, age group), and
   the statistical parity difference on accuracy,
       SPD_g = acc_g - sum_{h != g} n_h acc_h / sum_{h != g} n_h,
   the group against the size-weighted mean of the other groups (with two groups,
   acc_female - acc_male for g = female). Groups without test images are left out.
4. Every number comes with a 95% percentile-bootstrap interval over test images (utils/
   bootstrap.py): whole resamples of the pooled test set, so subgroup sizes vary as they
   would in a new sample; thresholds stay fixed (they belong to the validation set).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from utils.bootstrap import (estimate_and_interval, nanmean, resample_counts, weighted_auc, weighted_rates,
                             with_full_set)

RESAMPLES = 1000
FALLBACK_THRESHOLD = 0.5
RATES = ("acc", "sen", "spe")


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The score threshold at the Youden point of the ROC curve of (scores, labels) (the
    highest one if several tie); None when the labels hold a single class."""
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return None
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))  # thresholds decrease: the first maximum is the highest
    return float(thresholds[best])


def youden_thresholds(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per column of [n, L] scores and labels: its Youden threshold, and the columns that
    fell back to 0.5 because validation held a single class for them."""
    thresholds, fallback = [], []
    for label in range(scores.shape[1]):
        t = youden_threshold(scores[:, label], labels[:, label])
        if t is None:
            fallback.append(label)
        thresholds.append(FALLBACK_THRESHOLD if t is None else t)
    return np.array(thresholds), fallback


def _metrics(scores: np.ndarray, labels: np.ndarray, predicted: np.ndarray, weights: np.ndarray,
             ) -> dict[str, list[np.ndarray]]:
    """Per-finding AUC and rates of every weighted set: {"auc": [L arrays of R], ...}."""
    out: dict[str, list[np.ndarray]] = {"auc": [], **{r: [] for r in RATES}}
    for label in range(scores.shape[1]):
        out["auc"].append(weighted_auc(scores[:, label], labels[:, label], weights))
        for name, values in weighted_rates(predicted[:, label], labels[:, label], weights).items():
            out[name].append(values)
    return out


def study_metrics(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, attributes: dict[str, np.ndarray],
                  groups: dict[str, list[str]], weights: np.ndarray, label_names: list[str],
                  ) -> dict[str, np.ndarray]:
    """Every metric of the study for each weighted set (row of `weights`): overall "auc",
    "acc", "sen", "spe" (mean over findings), the same per finding ("sen_finding=NAME"), per subgroup
    "auc_ATTR=GROUP" (and acc_, sen_, spe_) and "spd_acc_ATTR=GROUP"."""
    predicted = scores >= thresholds[None]
    overall = _metrics(scores, labels, predicted, weights)
    values = {name: nanmean(per_label) for name, per_label in overall.items()}
    for metric, per_label in overall.items():  # each finding's own AUC, accuracy, sensitivity, specificity
        values.update({f"{metric}_finding={name}": v for name, v in zip(label_names, per_label)})
    for attr, names in groups.items():
        if attr not in attributes:
            continue
        accuracy, size = {}, {}
        for g, name in enumerate(names):
            mask = attributes[attr] == g
            if not mask.any():
                continue
            group_weights = weights * mask[None]
            for metric, per_label in _metrics(scores, labels, predicted, group_weights).items():
                values[f"{metric}_{attr}={name}"] = nanmean(per_label)
            accuracy[name], size[name] = values[f"acc_{attr}={name}"], group_weights.sum(1)
        for name in accuracy:
            others = [o for o in accuracy if o != name]
            if not others:
                continue
            other_size = sum(size[o] for o in others)
            with np.errstate(invalid="ignore", divide="ignore"):
                others_acc = sum(size[o] * np.nan_to_num(accuracy[o]) for o in others) / other_size
            values[f"spd_acc_{attr}={name}"] = accuracy[name] - others_acc
    return values


def fairness_evaluation(val_scores: np.ndarray, val_labels: np.ndarray, test_scores: np.ndarray,
                        test_labels: np.ndarray, attributes: dict[str, np.ndarray], groups: dict[str, list[str]],
                        label_names: list[str], *, resamples: int = RESAMPLES, seed: int) -> dict:
    """The study's evaluation of one model (scores are probabilities [n, L]):
    {"groups": {attribute: [group names]}, "thresholds": {finding: t}, "threshold_fallback": [findings], "resamples": R, "seed": s,
     "metrics": {name: {"value", "low", "high"}}}."""
    thresholds, fallback = youden_thresholds(val_scores, val_labels)
    weights = with_full_set(resample_counts(len(test_scores), resamples, seed))
    values = study_metrics(test_scores, test_labels, thresholds, attributes, groups, weights, label_names)
    return {"groups": {a: names for a, names in groups.items() if a in attributes},
            "thresholds": dict(zip(label_names, map(float, thresholds))),
            "threshold_fallback": [label_names[i] for i in fallback],
            "resamples": resamples, "seed": seed,
            "metrics": {name: estimate_and_interval(v) for name, v in values.items()}}
