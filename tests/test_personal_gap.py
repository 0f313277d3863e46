"""tools.personal_gap: personalised against conventional FL, paired by seed."""
import pytest

from tools.archive import RECORD_SUFFIX
from tools.personal_gap import gap_rows, personal_gap, scores
from utils import io


def _record(root, data, algo, shift, seed, agg, global_score, personal_score):
    config = {"data": data, "client_algo": algo, "site_shift": shift, "seed": seed, "secure_agg": agg}
    summary = {"primary_metric": "dice", "test": {"dice": global_score}, "test_personal": {"dice": personal_score}}
    io.write_json(root / f"seed{seed}" / f"{algo}_{shift}_{agg}{RECORD_SUFFIX}", {"config": config, "summary": summary})


def test_gaps_are_paired_by_seed_and_encrypted_runs_left_out(tmp_path):
    for seed, (fedavg, per, per_personal) in enumerate([(0.50, 0.40, 0.60), (0.70, 0.50, 0.74)]):
        _record(tmp_path, "synthetic-covidseg", "sgd", 2.0, seed, "none", fedavg, fedavg + 0.01)
        _record(tmp_path, "synthetic-covidseg", "perfedavg_fo", 2.0, seed, "none", per, per_personal)
        _record(tmp_path, "synthetic-covidseg", "perfedavg_fo", 2.0, seed, "ckks", 0.0, 0.0)  # not read
    table = scores([str(tmp_path)])
    assert set(table) == {("synthetic-covidseg", 2.0, "sgd"), ("synthetic-covidseg", 2.0, "perfedavg_fo")}
    rows = {r["client_algo"]: r for r in gap_rows(table)}
    assert rows["perfedavg_fo"]["vs_fedavg_global"] == pytest.approx([0.10, 0.04])
    assert rows["perfedavg_fo"]["vs_own_global"] == pytest.approx([0.20, 0.24])
    assert rows["sgd"]["vs_fedavg_global"] == pytest.approx([0.01, 0.01])
    text = personal_gap([str(tmp_path)], str(tmp_path / "gap"))
    assert "| synthetic-covidseg | 2 | Per-FedAvg FO | 2 | 0.4500 ± 0.0707 | 0.6700 ± 0.0990 | 0.0700 ± 0.0424 |" in text
    assert (tmp_path / "gap.csv").read_text().count("\n") == 3


def test_no_personalised_runs_is_one_clear_line(tmp_path):
    _record(tmp_path, "synthetic-covidseg", "sgd", 1.0, 0, "ckks", 0.5, 0.5)
    with pytest.raises(SystemExit, match="no finished runs with --personalize_steps and plain aggregation"):
        scores([str(tmp_path)])
