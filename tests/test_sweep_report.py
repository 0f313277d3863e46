"""tools.sweep_report: rows per setting, fairness table and the epsilon-parity correlation."""
import json

import numpy as np
from scipy.stats import pearsonr, t as student_t

from tools.sweep_report import privacy_setting, sweep_report


def _m(value, half=0.02):
    return {"value": value, "low": value - half, "high": value + half}


def _fake(root, seed, eps, spd, acc):
    config = {"data": "synthetic-cxr", "mode": "fedavg", "dp_level": "sample" if eps else "none",
              "sample_epsilon": eps, "sample_noise": None, "seed": seed, "clients": 1}
    fairness = {"auc": _m(acc + 0.1), "acc": _m(acc), "sen": _m(0.7), "spe": _m(0.8),
                "auc_finding=nodule": _m(acc), "sen_finding=nodule": _m(0.6 + seed / 100), "spe_finding=nodule": _m(0.9),
                "acc_sex=female": _m(acc + spd / 2), "acc_sex=male": _m(acc - spd / 2),
                "spd_acc_sex=female": _m(spd), "spd_acc_sex=male": _m(-spd)}
    summary = {"test": {"auc": acc, "acc": acc}, "primary_metric": "auc",
               "fairness": {"metrics": fairness, "resamples": 1000, "thresholds": {}, "threshold_fallback": [], "seed": seed,
                            "groups": {"sex": ["male", "female"]}}}
    if eps:
        summary["sample_privacy"] = {"epsilon_max": {"rdp": eps * 0.99}}
    d = root / f"eps{eps}" / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    (d / "summary.json").write_text(json.dumps(summary))


def test_privacy_setting_labels():
    assert privacy_setting({"mode": "fedavg", "dp_level": "none"}) == "no DP (ε = ∞)"
    assert privacy_setting({"mode": "dpsgd", "epsilon": 10, "dp_level": "update_local", "local_epsilon": 5,
                            "local_noise": None}) == "client-level DP (ε=10) + local update DP (ε=5)"


def test_fairness_tables_costs_and_pearson_correlation(tmp_path):
    points = [(1.0, 0.10, 0.6), (1.0, 0.08, 0.62), (5.0, 0.05, 0.7), (5.0, 0.04, 0.7), (10.0, 0.01, 0.8)]
    for seed, (eps, spd, acc) in enumerate(points):
        _fake(tmp_path, seed, eps, spd, acc)
    for seed in (0, 1):  # epsilon = inf: in the tables and the costs, not in the correlation
        _fake(tmp_path, seed, None, 0.0, 0.85 + 0.01 * seed)
    text = sweep_report([str(tmp_path)], out=str(tmp_path / "out"))
    assert "| sample-level DP-SGD (ε=1.0) | 2 | 0.6100 ± 0.0141 |" in text
    # the study's table: mean ± sd over seeds (mean bootstrap interval)
    assert "| sample-level DP-SGD (ε=1.0) | 2 | 0.710 ± 0.014 (0.690–0.730) | 0.610 ± 0.014 (0.590–0.630) |" in text
    # per finding: AUC; sensitivity / specificity (means), and the lowest rate of any run (seeds 0 and 1)
    assert "| sample-level DP-SGD (ε=1.0) | 0.610; 0.60 / 0.90 | 0.600 |" in text
    assert "| sample-level DP-SGD (ε=1.0) | -0.090 ± 0.014 (-0.110–-0.070) | +0.090 ± 0.014 (+0.070–+0.110) |" \
        in text  # SPD male, female at ε = 1, in the dataset's group order
    # cost against no DP, paired by seed: ε = 1 vs seeds 0 and 1 -> (0.6 - 0.85, 0.62 - 0.86)
    diffs = np.array([0.6 - 0.85, 0.62 - 0.86])
    half = student_t.ppf(0.975, 1) * diffs.std(ddof=1) / np.sqrt(2)
    assert f"| sample-level DP-SGD (ε=1.0) | {diffs.mean():+.3f} ({diffs.mean() - half:+.3f} to " \
           f"{diffs.mean() + half:+.3f}) |" in text
    runs = sorted((e * 0.99, seed, s) for seed, (e, s, _) in enumerate(points))  # by epsilon, then seed
    eps, spd = [e for e, _, _ in runs], [s for _, _, s in runs]
    r, p = pearsonr(eps, spd)
    boot = []
    for idx in np.random.default_rng(0).integers(0, 5, size=(1000, 5)):
        x, y = np.array(eps)[idx], np.array(spd)[idx]
        if x.std() > 0 and y.std() > 0:
            boot.append(np.corrcoef(x, y)[0, 1])
    low, high = np.percentile(boot, [2.5, 97.5])
    assert f"| spd_acc_sex=female | {r:+.3f} | {p:.3g} | {low:+.3f} to {high:+.3f} | 5 |" in text
    # the same resampled runs for every parity difference: male's interval mirrors female's
    assert f"| spd_acc_sex=male | {-r:+.3f} | {p:.3g} | {-high:+.3f} to {-low:+.3f} | 5 |" in text
    assert (tmp_path / "out.csv").read_text().count("\n") == 8
    assert "fairness_spd_acc_sex=female_low" in (tmp_path / "out.csv").read_text().splitlines()[0]
    assert (tmp_path / "out_parity.png").read_bytes()[:4] == b"\x89PNG"


def test_undefined_fairness_values_read_back_from_json_are_reported_as_missing(tmp_path):
    _fake(tmp_path, 0, 1.0, 0.1, 0.6)
    _fake(tmp_path, 1, None, 0.0, 0.8)
    path = next(tmp_path.glob("eps1.0/seed0/summary.json"))
    summary = json.loads(path.read_text())
    summary["fairness"]["metrics"]["auc_finding=nodule"] = {"value": None, "low": None, "high": None}
    path.write_text(json.dumps(summary))  # as utils.io writes NaN
    text = sweep_report([str(tmp_path)], out=str(tmp_path / "out"))
    assert "| sample-level DP-SGD (ε=1.0) | nan; 0.60 / 0.90 | 0.600 |" in text


def test_unfinished_runs_are_listed(tmp_path):
    _fake(tmp_path, 0, 1.0, 0.1, 0.6)
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"mode": "fedavg", "seed": 1}))
    assert "Unfinished runs (no summary.json), not in the table: 1" in sweep_report([str(tmp_path)], out=None)


def test_the_committed_cxr_tables_are_rebuilt_from_the_committed_records(tmp_path):
    """experiments/cxr_fairness/results/cxr.md comes from its records alone (no checkpoints)."""
    from pathlib import Path
    from tools.sweep_report import sweep_report
    root = Path(__file__).resolve().parents[1] / "experiments" / "cxr_fairness" / "results"
    assert sweep_report([str(root / "records" / "synthetic-cxr")], out=str(tmp_path / "cxr")) == \
        (root / "cxr.md").read_text()


def test_the_committed_blood_table_is_rebuilt_from_the_committed_records(tmp_path):
    """experiments/blood/results/blood.md comes from its records alone."""
    from pathlib import Path
    from tools.sweep_report import sweep_report
    root = Path(__file__).resolve().parents[1] / "experiments" / "blood" / "results"
    assert sweep_report([str(root / "records" / "synthetic-blood")], out=str(tmp_path / "blood")) == \
        (root / "blood.md").read_text()


def test_the_committed_pppml_tables_are_rebuilt_from_the_committed_records(tmp_path):
    """experiments/pppml/results/: both tasks' tables and the headline gap table come from
    the records alone."""
    from pathlib import Path
    from tools.personal_gap import personal_gap
    from tools.sweep_report import sweep_report
    root = Path(__file__).resolve().parents[1] / "experiments" / "pppml" / "results"
    for data in ("synthetic-chestct", "synthetic-covidseg"):
        assert sweep_report([str(root / "records" / data)], out=str(tmp_path / data)) == \
            (root / f"{data}.md").read_text()
    assert personal_gap([str(root / "records")], out=str(tmp_path / "gap")) == (root / "gap.md").read_text()
