"""tools.fidelity: server learning rates chosen on validation; the study's cells and oracle."""
import json

import pytest

from tools.fidelity import choose, report


def _run(root, mode, seed, *, test, val, z=None, vn=1, ada=False, eps=10.0, lr=None, final_v=None):
    d = root / "synthetic-ich" / f"seed{seed}" / f"{mode}_z{z}_vn{vn}_ada{ada}_lr{lr}"
    d.mkdir(parents=True)
    config = {"data": "synthetic-ich", "mode": mode, "noise_multiplier": z, "virtual_clients": vn, "ada_vn": ada,
              "init_vn": False, "seed": seed, "select_metric": "acc", "adam_lr": lr, "rmsprop_lr": lr}
    (d / "config.json").write_text(json.dumps(config))
    summary = {"test": {"auc": test, "acc": 0.0}, "val": {"acc": val, "auc": 0.0}, "primary_metric": "auc",
               "final_v": final_v or vn, "run_dir": str(d)}
    if z is not None:
        summary["privacy"] = {"epsilon": {u: {"rdp": eps * (vn if u == "hospital" else 1)}
                                          for u in ("hospital", "subclient", "patient")}}
    (d / "summary.json").write_text(json.dumps(summary))


def test_choose_reads_validation_only(tmp_path):
    _run(tmp_path, "fedadam", 0, test=0.99, val=0.60, lr=0.01)   # best on test, worse on validation
    _run(tmp_path, "fedadam", 0, test=0.70, val=0.70, lr=0.001)
    _run(tmp_path, "fed2rmsprop", 0, test=0.70, val=0.65, lr=0.003)
    _run(tmp_path, "fed2rmsprop", 0, test=0.70, val=0.64, lr=0.001)
    assert choose(str(tmp_path)) == {"adam_lr": 0.001, "rmsprop_lr": 0.003}


def test_report_gives_dp_alone_adaptive_and_the_validation_oracle(tmp_path):
    for seed, shift in ((0, 0.0), (1, 0.02)):
        _run(tmp_path, "fedavg", seed, test=0.80 + shift, val=0.8)
        _run(tmp_path, "dpsgd", seed, test=0.60 + shift, val=0.60, z=1.0, vn=1)
        _run(tmp_path, "dpsgd", seed, test=0.70 + shift, val=0.62, z=1.0, vn=2)
        _run(tmp_path, "dpsgd", seed, test=0.75 + shift, val=0.61, z=1.0, vn=4)  # best test, not best val
        _run(tmp_path, "dpsgd", seed, test=0.66 + shift, val=0.63, z=1.0, ada=True, final_v=3)
        _run(tmp_path, "fedavg", seed, test=0.78 + shift, val=0.8, vn=4)  # splitting without noise
    out = tmp_path / "out" / "fidelity"
    text = report([str(tmp_path)], out=str(out))
    assert "| DP-FedAvg | 0.810 ± 0.014 | – | 0.790 ± 0.014 | – |" in text
    row = next(line for line in text.splitlines() if line.startswith("| DP-FedAvg | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "0.810 ± 0.014"                      # no DP
    assert cells[3] == "0.610 ± 0.014 (ε 10)"               # DP alone, hospital epsilon
    assert cells[4] == "0.710 ± 0.014 (ε 20)"               # v = 2 costs twice the hospital epsilon
    assert cells[6] == "missing"                            # v = 8 not run
    assert cells[7].endswith("(3.0)")                       # adaptive, its mean final v
    assert cells[8] == "v=2"                                # oracle chosen on validation, not test
    assert cells[9] == "+0.060" and cells[10] == "-0.040"   # adaptive - DP alone, adaptive - oracle
    assert out.with_suffix(".csv").exists() and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_an_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(SystemExit, match="no run folders"):
        report([str(tmp_path)], out=None)


def test_the_committed_study_is_rebuilt_from_the_committed_records(tmp_path):
    """experiments/intermediaries/results/fidelity.md comes from the records of Table 1 and of
    the fixed splits alone (no checkpoints)."""
    from pathlib import Path
    from tools.fidelity import report
    root = Path(__file__).resolve().parents[1] / "experiments"
    text = report([str(root / "table1" / "results" / "records" / "synthetic-ich"),
                   str(root / "intermediaries" / "results" / "records" / "synthetic-ich")], str(tmp_path / "fidelity"))
    assert text == (root / "intermediaries" / "results" / "fidelity.md").read_text()
