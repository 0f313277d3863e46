import json

from tools.summarize import summarize, table


def _fake_run(root, name, seed, auc, ada, eps_h):
    d = root / name / f"seed{seed}"
    d.mkdir(parents=True)
    config = {"data": "synthetic-ich", "noise_multiplier": 1.0, "ada_vn": ada, "seed": seed, "save_path": "x"}
    summary = {"test": {"auc": auc, "acc": 0.5}, "final_v": 2 if ada else 1,
               "privacy": {"epsilon": {"subclient": {"rdp": 3.0}, "hospital": {"rdp": eps_h}, "patient": {"rdp": 9.0}}}}
    (d / "config.json").write_text(json.dumps(config))
    (d / "summary.json").write_text(json.dumps(summary))


def test_summarize_uses_sample_std():
    row = summarize([{"test": {"auc": 0.8}}, {"test": {"auc": 0.9}}])
    assert row["auc"] == "0.8500 +- 0.0707"


def test_table_groups_seeds_and_orders_settings(tmp_path):
    _fake_run(tmp_path, "a", 0, 0.70, False, 3.0)
    _fake_run(tmp_path, "a", 1, 0.80, False, 3.0)
    _fake_run(tmp_path, "b", 0, 0.60, True, 9.0)
    lines = table(tmp_path).splitlines()
    assert lines[0].startswith("| task | setting | seeds | test auc | test acc | final v")
    assert lines[2] == ("| synthetic-ich | z=1.0 | 2 | 0.7500 +- 0.0707 | 0.5000 +- 0.0000 | 1.0 "
                        "| 3.0000 +- 0.0000 | 3.0000 +- 0.0000 | 9.0000 +- 0.0000 |")
    assert lines[3].startswith("| synthetic-ich | z=1.0, ada_vn | 1 | 0.6000")
    assert lines[3].endswith("| 9.0000 +- 0.0000 | 9.0000 +- 0.0000 |")
