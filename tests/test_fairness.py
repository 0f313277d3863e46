"""The chest-radiograph study's evaluation against hand-computed values: Youden thresholds
chosen on validation, metrics at them on test, parity differences and bootstrap intervals
(utils/fairness.py, utils/bootstrap.py)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from utils.bootstrap import resample_counts, weighted_auc, weighted_rates, with_full_set
from utils.fairness import fairness_evaluation, study_metrics, youden_threshold, youden_thresholds


def test_youden_threshold_by_hand():
    # t = 0.6 separates the classes: sensitivity 1, specificity 1
    assert youden_threshold(np.array([0.2, 0.3, 0.6, 0.7, 0.5]), np.array([0, 0, 1, 1, 0])) == 0.6
    # J = 0.5 at t = 0.8 (sen 1/2, spe 1) and at t = 0.35 (sen 1, spe 1/2): the higher one
    assert youden_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.8
    # one class only: no ROC curve, no threshold
    assert youden_threshold(np.array([0.1, 0.9]), np.array([1, 1])) is None


def test_thresholds_come_from_validation_and_apply_to_test():
    val_scores = np.array([[0.2, 0.1], [0.3, 0.2], [0.6, 0.3], [0.7, 0.4]])
    val_labels = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])  # finding 2: positives only
    thresholds, fallback = youden_thresholds(val_scores, val_labels)
    assert thresholds.tolist() == [0.6, 0.5] and fallback == [1]
    # test: finding 1 at t = 0.6 -> predictions [0, 1, 1, 0] vs labels [0, 0, 1, 1]
    test_scores = np.array([[0.55, 0.9], [0.6, 0.1], [0.65, 0.7], [0.1, 0.2]])
    test_labels = np.array([[0, 1], [0, 0], [1, 1], [1, 0]])
    out = fairness_evaluation(val_scores, val_labels, test_scores, test_labels, {}, {}, ["a", "b"], resamples=10,
                              seed=0)
    m = {k: v["value"] for k, v in out["metrics"].items()}
    # finding a: tp 1, tn 1, fp 1, fn 1; finding b at 0.5: predictions [1, 0, 1, 0] all right
    assert m["sen"] == pytest.approx((0.5 + 1) / 2) and m["spe"] == pytest.approx((0.5 + 1) / 2)
    assert m["acc"] == pytest.approx((0.5 + 1) / 2)
    # AUC a: positives {0.65, 0.1} vs negatives {0.55, 0.6} -> 2 of 4 pairs; b: 1.0
    assert m["auc_finding=a"] == pytest.approx(0.5) and m["auc"] == pytest.approx(0.75)
    assert m["sen_finding=a"] == pytest.approx(0.5) and m["spe_finding=b"] == pytest.approx(1.0)
    assert m["acc_finding=b"] == pytest.approx(1.0)
    assert out["thresholds"] == {"a": 0.6, "b": 0.5} and out["threshold_fallback"] == ["b"]
    assert out["resamples"] == 10 and out["seed"] == 0 and out["groups"] == {}


def test_subgroup_metrics_and_parity_by_hand():
    # one finding, threshold 0.5; sex: 0 male x3, 1 female x3; age groups 0, 1, 2
    scores = np.array([[0.9], [0.2], [0.4], [0.8], [0.6], [0.3]])
    labels = np.array([[1], [0], [1], [1], [0], [0]])
    sex, age = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 2, 2])
    groups = {"sex": ["male", "female"], "age": ["<30", "30-59", "60+"]}
    v = study_metrics(scores, labels, np.array([0.5]), {"sex": sex, "age": age}, groups, np.ones((1, 6)), ["x"])
    v = {k: float(a[0]) for k, a in v.items()}
    # male: predictions [1, 0, 0] vs [1, 0, 1]; female: [1, 1, 0] vs [1, 0, 0]
    assert v["acc_sex=male"] == pytest.approx(2 / 3) and v["sen_sex=male"] == pytest.approx(1 / 2)
    assert v["spe_sex=female"] == pytest.approx(1 / 2) and v["sen_sex=female"] == pytest.approx(1.0)
    assert v["spd_acc_sex=female"] == pytest.approx(0.0)
    assert v["auc_sex=male"] == pytest.approx(1.0) and v["auc_sex=female"] == pytest.approx(1.0)
    # age: accuracies 1 (n 2), 1/2 (n 2), 1/2 (n 2); 60+ has no positive: AUC undefined
    assert v["spd_acc_age=<30"] == pytest.approx(1.0 - 0.5)
    assert v["spd_acc_age=30-59"] == pytest.approx(0.5 - (2 * 1.0 + 2 * 0.5) / 4)
    assert np.isnan(v["auc_age=60+"]) and v["acc_age=60+"] == pytest.approx(0.5)


def test_missing_attributes_and_empty_groups_are_skipped_not_fatal():
    scores, labels = np.array([[0.9], [0.2], [0.8], [0.1]]), np.array([[1], [0], [1], [0]])
    groups = {"site": ["a"], "age": ["<30", "30-59", "80+"], "sex": ["male", "female"]}  # no "site" attribute
    attributes = {"age": np.array([0, 0, 2, 2]), "sex": np.array([0, 1, 0, 1])}  # no image aged 30-59
    v = study_metrics(scores, labels, np.array([0.5]), attributes, groups, np.ones((1, 4)), ["x"])
    assert "acc_age=30-59" not in v and v["acc_age=80+"][0] == 1.0 and "spd_acc_sex=female" in v
    assert not any(k.endswith("site=a") for k in v)


def test_parity_weights_the_other_groups_by_size():
    scores, labels = np.full((6, 1), 0.1), np.zeros((6, 1))
    scores[0] = 0.9  # one image of group a wrong
    age = np.array([0, 0, 1, 2, 2, 2])
    v = study_metrics(scores, labels, np.array([0.5]), {"age": age}, {"age": ["a", "b", "c"]}, np.ones((1, 6)), ["x"])
    assert v["spd_acc_age=a"][0] == pytest.approx(0.5 - 1.0)
    assert v["spd_acc_age=b"][0] == pytest.approx(1.0 - (2 * 0.5 + 3 * 1.0) / 5)


def test_resample_counts_are_whole_resamples():
    counts = resample_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all()
    assert np.array_equal(counts, resample_counts(7, 50, seed=3))
    assert not np.array_equal(counts, resample_counts(7, 50, seed=4))


def test_weighted_metrics_equal_the_metrics_of_the_resampled_sets():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40) / 5  # ties on purpose
    labels = rng.integers(0, 2, 40)
    predicted = scores >= 0.5
    draws = np.random.default_rng(11).integers(0, 40, size=(30, 40))
    counts = resample_counts(40, 30, seed=11)
    auc, rates = weighted_auc(scores, labels, counts), weighted_rates(predicted, labels, counts)
    for r, idx in enumerate(draws):  # the same draws, resampled explicitly
        y, s, p = labels[idx], scores[idx], predicted[idx]
        assert auc[r] == pytest.approx(roc_auc_score(y, s))
        assert rates["acc"][r] == pytest.approx(np.mean(y == p))
        assert rates["sen"][r] == pytest.approx(np.mean(p[y == 1]))
        assert rates["spe"][r] == pytest.approx(np.mean(~p[y == 0]))


def test_bootstrap_interval_is_the_percentile_of_explicit_resamples():
    rng = np.random.default_rng(1)
    n, resamples, seed = 60, 200, 5
    labels = rng.integers(0, 2, (n, 1))
    scores = np.clip(0.3 * labels + 0.7 * rng.random((n, 1)), 0, 1)
    sex, age = rng.integers(0, 2, n), rng.integers(0, 3, n)
    out = fairness_evaluation(scores, labels, scores, labels, {"sex": sex, "age": age},
                              {"sex": ["m", "f"], "age": ["y", "m", "o"]}, ["x"], resamples=resamples, seed=seed)
    assert out["groups"] == {"sex": ["m", "f"], "age": ["y", "m", "o"]}
    t = out["thresholds"]["x"]
    by_hand = {"auc": [], "acc": [], "spd_acc_sex=f": [], "spd_acc_age=o": []}
    for idx in np.random.default_rng(seed).integers(0, n, size=(resamples, n)):
        y, s, g, a = labels[idx, 0], scores[idx, 0], sex[idx], age[idx]
        right = (s >= t) == (y == 1)
        by_hand["auc"].append(roc_auc_score(y, s))
        by_hand["acc"].append(right.mean())
        by_hand["spd_acc_sex=f"].append(right[g == 1].mean() - right[g == 0].mean())
        by_hand["spd_acc_age=o"].append(right[a == 2].mean() - right[a != 2].mean())  # others weighted by size
    for name, values in by_hand.items():
        low, high = np.percentile(values, [2.5, 97.5])
        assert out["metrics"][name]["low"] == pytest.approx(low)
        assert out["metrics"][name]["high"] == pytest.approx(high)
        assert low <= out["metrics"][name]["value"] <= high


def test_interval_of_a_two_image_accuracy_spans_every_resample():
    # one right, one wrong: resampled accuracy is 0, 1/2 or 1 (probabilities 1/4, 1/2, 1/4),
    # so 1000 resamples put the 2.5th percentile at 0 and the 97.5th at 1
    scores, labels = np.array([[0.9], [0.95]]), np.array([[1], [0]])
    val = np.array([[0.9], [0.1]]), np.array([[1], [0]])  # validation picks t = 0.9
    out = fairness_evaluation(*val, scores, labels, {}, {}, ["x"], resamples=1000, seed=0)
    assert out["metrics"]["acc"] == {"value": 0.5, "low": 0.0, "high": 1.0}


def test_a_metric_undefined_in_every_resample_has_no_interval():
    # the female group has no positive image: its AUC is undefined in every resample
    scores, labels = np.array([[0.9], [0.2], [0.3], [0.4]]), np.array([[1], [0], [0], [0]])
    out = fairness_evaluation(scores, labels, scores, labels, {"sex": np.array([0, 0, 1, 1])},
                              {"sex": ["m", "f"]}, ["x"], resamples=50, seed=0)
    m = out["metrics"]["auc_sex=f"]
    assert np.isnan(m["value"]) and np.isnan(m["low"]) and np.isnan(m["high"])


def test_interval_narrows_with_more_test_images():
    rng = np.random.default_rng(2)

    def width(n):
        labels = rng.integers(0, 2, (n, 1))
        scores = 0.3 * labels + 0.7 * rng.random((n, 1))
        m = fairness_evaluation(scores, labels, scores, labels, {}, {}, ["x"], resamples=300, seed=0)["metrics"]
        return m["auc"]["high"] - m["auc"]["low"]
    assert width(2000) < width(100) / 2


def test_with_full_set_puts_the_estimate_first():
    weights = with_full_set(resample_counts(5, 3, seed=0))
    assert weights.shape == (4, 5) and (weights[0] == 1).all()
