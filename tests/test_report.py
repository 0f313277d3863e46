"""tools.report: Table 1 cells, missing runs, and the files it writes."""
import csv
import json

import pytest

from tools.report import report


def _fake_run(root, mode, seed, metric, *, z=None, ada=False, eps=(3.0, 3.0), finished=True, lr=0.1):
    name = f"{mode}_z{z}_{'ada' if ada else 'fixed'}_lr{lr}"
    d = root / "synthetic-ich" / f"seed{seed}" / name
    d.mkdir(parents=True)
    config = {"data": "synthetic-ich", "mode": mode, "noise_multiplier": z, "epsilon": None, "ada_vn": ada,
              "init_vn": False, "seed": seed, "save_path": str(root), "lr": lr}
    (d / "config.json").write_text(json.dumps(config))
    if finished:
        summary = {"test": {"acc": 0.5, "auc": metric}, "primary_metric": "auc", "final_v": 2 if ada else 1}
        if z is not None:
            summary["privacy"] = {"epsilon": {unit: {acc: e for acc in ("rdp", "prv", "pld")}
                                              for unit, e in zip(("subclient", "hospital", "patient"),
                                                                 (*eps, 3 * eps[0]))}}
        (d / "summary.json").write_text(json.dumps(summary))


def _rows(text):
    """Rows of the long table (one per cell; the paper-layout table above it has other rows)."""
    return [line for line in text.splitlines() if line.startswith(("| – |", "| z = "))]


def test_cells_average_seeds_and_list_every_missing_cell(tmp_path):
    _fake_run(tmp_path, "fedavg", 0, 0.9)
    _fake_run(tmp_path, "fedavg", 1, 0.8)
    _fake_run(tmp_path, "dpsgd", 0, 0.7, z=1.0)
    _fake_run(tmp_path, "dpsgd", 1, 0.6, z=1.0, finished=False)
    _fake_run(tmp_path, "dpadam", 0, 0.5, z=1.0, ada=True, eps=(3.0, 9.0))
    rows = _rows(report([str(tmp_path)], out=None))
    # 4 optimizers x (no DP + one noise level x 2 settings)
    assert len(rows) == 12
    assert rows[0] == "| – | DP-FedAvg | no DP | 2/2 | 0.8500 ± 0.0707 | 0.5000 ± 0.0000 | - | - | - | 1.0 |"
    assert rows[1].startswith("| – | DP-FedAdam | no DP | 0/2 (missing seed 0 1) | missing")
    dp = next(r for r in rows if "DP-FedAvg | DP |" in r)
    assert "1/2 (unfinished seed 1)" in dp and "0.7000 ± 0.0000" in dp
    ours = next(r for r in rows if "DP-FedAdam | DP + intermediaries" in r)
    assert "1/2 (missing seed 1)" in ours and "| 3.00 ± 0.00 | 9.00 ± 0.00 | 9.00 ± 0.00 | 2.0 |" in ours
    assert sum("missing |" in r for r in rows) == 9  # the nine cells with no finished run


def test_report_writes_markdown_csv_and_plot(tmp_path):
    _fake_run(tmp_path, "fedavg", 0, 0.9)
    _fake_run(tmp_path, "dpsgd", 0, 0.7, z=1.0)
    _fake_run(tmp_path, "dpsgd", 0, 0.75, z=0.5, eps=(8.0, 8.0))
    _fake_run(tmp_path, "dpsgd", 0, 0.72, z=0.5, ada=True, eps=(8.0, 16.0))
    out = tmp_path / "out" / "table1"
    text = report([str(tmp_path)], out=str(out))
    assert out.with_suffix(".md").read_text() == text
    # the paper's layout: a row per optimizer and one for its intermediaries, a column per noise level
    assert "| DP-FedAvg | 0.900 ± 0.000 | 0.750 ± 0.000 (8 / 8) | 0.700 ± 0.000 (3 / 3) |" in text
    assert "| + intermediaries |  | 0.720 ± 0.000 (8 / 16) | missing |" in text
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    cell = next(r for r in rows if r["optimizer"] == "DP-FedAvg" and r["setting"] == "DP + intermediaries"
                and r["z"] == "0.5")
    assert float(cell["auc_mean"]) == 0.72 and float(cell["eps_hospital_pld_mean"]) == 16.0
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(out.parent.glob(".*.tmp"))


def test_runs_of_different_flags_in_one_cell_are_refused(tmp_path):
    _fake_run(tmp_path, "fedavg", 0, 0.9, lr=0.1)
    _fake_run(tmp_path, "fedavg", 1, 0.8, lr=0.2)
    with pytest.raises(SystemExit, match="--lr"):
        report([str(tmp_path)], out=None)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        report([str(tmp_path / "nope")], out=None)
    with pytest.raises(SystemExit, match="no run folders"):
        report([str(tmp_path)], out=None)


def test_segmentation_table_labels_soft_and_hard_dice(tmp_path):
    d = tmp_path / "synthetic-prostate" / "seed0" / "fedavg"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"data": "synthetic-prostate", "mode": "fedavg", "seed": 0,
                                               "noise_multiplier": None}))
    (d / "summary.json").write_text(json.dumps({"test": {"dice": 0.3, "dice_hard": 0.8, "hd95": 5.0, "iou": 0.6},
                                                "primary_metric": "dice", "final_v": 1}))
    header = next(line for line in report([str(tmp_path)], out=None).splitlines() if line.startswith("| noise"))
    assert "| Dice (soft, the paper's) | Dice (hard, logit > 0) | hd95 | iou |" in header


def test_a_report_of_an_incomplete_grid_says_it_is_partial(tmp_path, capsys):
    _fake_run(tmp_path, "fedavg", 0, 0.9)
    _fake_run(tmp_path, "dpsgd", 0, 0.7, z=1.0, finished=False)  # an interrupted sweep
    text = report([str(tmp_path)], out=None)
    assert text.startswith("**Partial results.** 1 of 12 runs of the grid are finished")
    assert "report: 1 of 12 runs" in capsys.readouterr().err


def test_compact_records_rebuild_the_report_of_the_run_folders(tmp_path):
    from tools.archive import archive
    _fake_run(tmp_path / "sweep", "fedavg", 0, 0.9)
    _fake_run(tmp_path / "sweep", "dpsgd", 0, 0.7, z=1.0)
    _fake_run(tmp_path / "sweep", "dpsgd", 0, 0.72, z=1.0, ada=True, eps=(3.0, 6.0))
    _fake_run(tmp_path / "sweep", "dpsgd", 1, 0.6, z=1.0, finished=False)  # not archived: no summary
    written = archive([str(tmp_path / "sweep")], str(tmp_path / "records"))
    assert len(written) == 3 and all(p.name.endswith(".run.json") for p in written)
    from_records = report([str(tmp_path / "records")], out=None)
    assert "0.720 ± 0.000 (3 / 6)" in from_records
    finished_only = tmp_path / "finished"
    import shutil
    shutil.copytree(tmp_path / "sweep", finished_only, ignore=lambda d, names: [] if "seed1" not in d else names)
    assert from_records == report([str(finished_only)], out=None)


@pytest.mark.parametrize("task, table", [("synthetic-ich", "table1_ich"), ("synthetic-prostate", "table1_prostate")])
def test_the_committed_table1_is_rebuilt_from_the_committed_records(task, table, tmp_path):
    """The README's Table 1 comes from experiments/table1/results/records (compact records, no
    checkpoints): rebuilding it from the repository alone gives the committed table."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "experiments" / "table1" / "results"
    rebuilt = report([str(root / "records" / task)], out=str(tmp_path / table))
    assert rebuilt == (root / f"{table}.md").read_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    paper_rows = [line for line in rebuilt.splitlines() if line.startswith(("| DP", "| + intermediaries"))][:8]
    assert len(paper_rows) == 8 and all(row in readme for row in paper_rows), paper_rows


def test_a_run_found_as_a_folder_and_as_its_record_counts_once(tmp_path):
    """A sweep folder holds the run folders and, in SAVE/records, their records: a report over
    the whole folder must not count each run twice (it halved the stds)."""
    from tools.archive import archive
    for seed, auc in ((0, 0.9), (1, 0.7)):
        _fake_run(tmp_path, "fedavg", seed, auc)
    archive([str(tmp_path / "synthetic-ich")], str(tmp_path / "records"))
    from tools.report import find_runs
    assert len(find_runs([str(tmp_path)])) == 2  # tools.fidelity and tools.sweep_report list every run found
    rows = _rows(report([str(tmp_path)], out=None))
    assert rows[0].startswith("| – | DP-FedAvg | no DP | 2/2 | 0.8000 ± 0.1414 |"), rows[0]
