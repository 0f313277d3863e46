"""Binary-label metrics under bootstrap resampling, computed for all resamples at once.

A bootstrap resample of n images is a vector of counts (how often each image was drawn;
they sum to n). Every metric here takes a weight matrix [R, n], one row per resample, and
returns R values: a metric of a resample equals the metric of the weighted set. Row 0 of
`with_full_set` is all ones (the test set itself), so one call gives the estimate and its
bootstrap distribution. Subgroups are weights times the group's mask.

The interval is the percentile bootstrap (Efron & Tibshirani, 1993, ch. 13): the 2.5th and
97.5th percentiles of the resampled values; resamples where a metric is undefined (a
subgroup without positives, say) are left out of its percentiles.
"""
from __future__ import annotations

import warnings

import numpy as np

CONFIDENCE = 0.95


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] draw counts of `resamples` bootstrap resamples of n items (with
    replacement, n draws each), reproducible from `seed`."""
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (draws + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def with_full_set(counts: np.ndarray) -> np.ndarray:
    """Row 0: the unresampled set (weight 1 each), then the resamples."""
    return np.vstack([np.ones((1, counts.shape[1])), counts])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of each weighted set: the Mann-Whitney statistic with ties counted as half,
    P(score of a positive > score of a negative), every image counted `weight` times. NaN
    where a row has no positive or no negative weight."""
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # one block per distinct score
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score
    wins = (pos * (below + 0.5 * neg)).sum(1)
    return _ratio(wins, pos.sum(1) * neg.sum(1))


def weighted_rates(predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, sensitivity and specificity of 0/1 predictions on each weighted set."""
    y, p = labels.astype(bool), predicted.astype(bool)
    tp, tn = weights @ (y & p), weights @ (~y & ~p)
    positives, negatives = weights @ y, weights @ ~y
    return {"acc": _ratio(tp + tn, positives + negatives), "sen": _ratio(tp, positives),
            "spe": _ratio(tn, negatives)}


def nanmean(stack: list[np.ndarray]) -> np.ndarray:
    """Mean over the arrays of `stack`, ignoring NaN (NaN only where all are NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(stack), axis=0)


def estimate_and_interval(values: np.ndarray) -> dict[str, float]:
    """values[0]: the full set's metric; values[1:]: its resamples -> value, low, high."""
    tail = 100 * (1 - CONFIDENCE) / 2
    resampled = values[1:][~np.isnan(values[1:])]
    low, high = np.percentile(resampled, [tail, 100 - tail]) if resampled.size else (np.nan, np.nan)
    return {"value": float(values[0]), "low": float(low), "high": float(high)}
