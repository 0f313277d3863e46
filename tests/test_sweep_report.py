"""utils.sweep_report: rows per setting, fairness table and the epsilon-parity correlation."""
import json

from scipy.stats import pearsonr

from utils.sweep_report import privacy_setting, sweep_report


def _fake(root, seed, eps, spd, acc):
    config = {"data": "synthetic-cxr", "mode": "fedavg", "dp_level": "sample" if eps else "none",
              "sample_epsilon": eps, "sample_noise": None, "seed": seed, "clients": 1}
    summary = {"test": {"auc": acc, "acc": acc}, "primary_metric": "auc",
               "fairness": {"acc_sex=female": acc + spd / 2, "acc_sex=male": acc - spd / 2,
                            "spd_acc_sex=female": spd, "spd_acc_sex=male": -spd}}
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


def test_fairness_table_and_pearson_correlation(tmp_path):
    points = [(1.0, 0.10, 0.6), (1.0, 0.08, 0.62), (5.0, 0.05, 0.7), (5.0, 0.04, 0.7), (10.0, 0.01, 0.8)]
    for seed, (eps, spd, acc) in enumerate(points):
        _fake(tmp_path, seed, eps, spd, acc)
    _fake(tmp_path, 9, None, 0.0, 0.85)  # epsilon = inf: in the tables, not in the correlation
    text = sweep_report([str(tmp_path)], out=str(tmp_path / "out"))
    assert "| sample-level DP-SGD (ε=1.0) | 2 | 0.6100 ± 0.0141 |" in text
    assert "| no DP (ε = ∞) | 1 |" in text
    r, p = pearsonr([e * 0.99 for e, _, _ in points], [s for _, s, _ in points])
    assert f"| spd_acc_sex=female | {r:+.3f} | {p:.3g} | 5 |" in text
    assert (tmp_path / "out.csv").read_text().count("\n") == 7


def test_unfinished_runs_are_listed(tmp_path):
    _fake(tmp_path, 0, 1.0, 0.1, 0.6)
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"mode": "fedavg", "seed": 1}))
    assert "Unfinished runs (no summary.json), not in the table: 1" in sweep_report([str(tmp_path)], out=None)
