"""tools.sweep and the two Table 1 sweep scripts in quick mode, end to end."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from utils import io
from tools.sweep import parse_line, plan, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_parse_line_accepts_flags_or_a_copied_command():
    assert parse_line("--mode fedavg --seed 0") == ["--mode", "fedavg", "--seed", "0"]
    assert parse_line("python fed_train.py --mode fedavg") == ["--mode", "fedavg"]
    assert parse_line("  # a comment") is None and parse_line("") is None


def test_sweep_skips_finished_runs_and_resumes_broken_ones(tmp_path, capsys):
    line = " ".join(TINY + ["--save_path", str(tmp_path), "--rounds", "2"])
    assert run_sweep([line], jobs=1) == 0
    status, _, folder = plan(line.split())
    assert status == "done" and (folder / "summary.json").exists()
    (folder / "summary.json").unlink()  # as if the job had been killed after its last checkpoint
    status, argv, _ = plan(line.split())
    assert status == "resume" and argv[-1] == "--resume"
    assert run_sweep([line], jobs=1) == 0
    assert (folder / "summary.json").exists()
    assert "1 runs, 0 finished (skipped), 1 to run" in capsys.readouterr().err


def test_sweep_refuses_invalid_lines_before_running_anything(tmp_path, capsys):
    good = " ".join(TINY + ["--save_path", str(tmp_path)])
    assert run_sweep([good, "--mode nosuch"], jobs=1) == 2
    assert "line 2 has invalid flags" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_failed_runs_are_reported(tmp_path, capsys):
    line = " ".join(TINY + ["--save_path", str(tmp_path), "--data", "RSNA-ICH", "--image_dir", str(tmp_path / "x")])
    assert run_sweep([line], jobs=1) == 1
    assert "1 of 1 runs failed" in capsys.readouterr().err


def _quick(script: str, save: Path, **env_vars) -> str:
    env = {**os.environ, "QUICK": "1", "JOBS": "2", "PY": sys.executable, "SAVE": str(save), **env_vars}
    done = subprocess.run(["bash", str(ROOT / script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.parametrize("script, data, out, metric, levels", [
    ("run_ich_exp.sh", "synthetic-ich", "table1_ich", "auc", ["0.5", "1.0", "1.5"]),
    ("run_prostate_exp.sh", "synthetic-prostate", "table1_prostate", "dice", ["0.3", "0.5", "0.7"]),
])
def test_quick_sweep_runs_the_whole_grid_and_reports_it(tmp_path, script, data, out, metric, levels):
    log = _quick(script, tmp_path)
    assert "sweep: 84 runs, 0 finished (skipped), 84 to run" in log
    summaries = list((tmp_path / data).rglob("summary.json"))
    assert len(summaries) == 84  # 4 optimizers x (no DP + 3 noise levels x 2) x 3 seeds
    modes = {json.loads((s.parent / "config.json").read_text())["mode"] for s in summaries}
    assert modes == {"fedavg", "fedadam", "fednova", "fed2rmsprop", "dpsgd", "dpadam", "dpnova", "dp2rmsprop"}
    rows = list(csv.DictReader(open(tmp_path / f"{out}.csv")))
    assert len(rows) == 4 * 7 and all(r["seeds"] == "3" for r in rows)
    assert sorted({r["z"] for r in rows} - {""}, key=float) == [str(float(z)) for z in levels]
    assert all(r[f"{metric}_mean"] != "" for r in rows)
    assert (tmp_path / f"{out}.png").stat().st_size > 10_000
    assert "missing" not in (tmp_path / f"{out}.md").read_text()
    # Running the script again skips every finished run.
    assert "84 finished (skipped), 0 to run" in _quick(script, tmp_path)


def test_quick_blood_sweep_compares_local_and_client_level_dp(tmp_path):
    _quick("run_blood_exp.sh", tmp_path, SEEDS="0")  # one seed keeps the suite short
    summaries = [io.read_json(p) for p in (tmp_path / "synthetic-blood").rglob("summary.json")]
    assert len(summaries) == 18  # 3 federation sizes x 6 settings
    table = (tmp_path / "blood.md").read_text()
    for n in (5, 10, 20):
        for setting in ("no DP (ε = ∞)", "local update DP (ε=10.0)", "client-level DP (ε=10.0)"):
            assert any(line.startswith(f"| {n} |") and setting in line for line in table.splitlines())
        rows = [line.split(" | ") for line in table.splitlines() if line.startswith(f"| {n} |")]
        secure = {(r[1], r[2], r[5]): r for r in rows}
        # no DP: the secure sum gives the plain model to the ring's rounding
        assert secure[("server", "secagg+", "no DP (ε = ∞)")][7:9] == secure[("server", "none", "no DP (ε = ∞)")][7:9]
        # the noise at the clients protects each unit as replaced, by the others' shares: dearer at the same z
        distributed = float(secure[("clients", "secagg+", "client-level DP (z=1.0)")][10].split(" ± ")[0])
        assert distributed > float(secure[("server", "none", "client-level DP (z=1.0)")][10].split(" ± ")[0])
    local = [s for s in summaries if "local_privacy" in s]
    assert len(local) == 3 and all(s["local_privacy"]["epsilon_max"]["rdp"] <= 10.0 for s in local)


def test_quick_cxr_sweep_reports_fairness_and_its_correlation_with_epsilon(tmp_path):
    _quick("run_cxr_exp.sh", tmp_path, SEEDS="0 1")
    table = (tmp_path / "cxr.md").read_text()
    for eps in ("1.0", "5.0", "10.0"):
        assert f"sample-level DP-SGD (ε={eps})" in table
    assert "spd_acc_sex=female" in table and "Pearson correlation" in table
    rows = list(csv.DictReader(open(tmp_path / "cxr.csv")))
    assert len(rows) == 8
    private = [r for r in rows if r["epsilon_spent"] != "inf"]
    assert len(private) == 6 and all(float(r["epsilon_spent"]) <= float(r["sample_epsilon"]) for r in private)


def test_quick_audit_sweep_audits_every_mechanism_within_its_ledger(tmp_path):
    _quick("run_audit_exp.sh", tmp_path, SEEDS="0")
    rows = list(csv.DictReader(open(tmp_path / "results" / "audit.csv")))
    assert len(rows) == 7 and all(r["bound_within_ledger"] == "True" for r in rows)
    assert {r["unit"] for r in rows} == {"subclient", "hospital"}
    assert any("localDP" in r["setting"] for r in rows) and any("strict" in r["setting"] for r in rows)
    summaries = [io.read_json(p) for p in (tmp_path / "synthetic-ich").rglob("summary.json")]
    assert len(summaries) == 7 and all("audit" in s for s in summaries)
    assert list((tmp_path / "results" / "audit_records").rglob("*.json"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_lines_differing_in_one_result_flag_finish_in_their_own_folders(tmp_path, jobs):
    """Issue 26: --img_size (and --model, --train_size, ...) were not in the folder's name, so
    the second line was skipped as finished, or two jobs wrote one folder at once."""
    base = TINY + ["--save_path", str(tmp_path), "--rounds", "2"]
    lines = [" ".join(base), " ".join(base + ["--img_size", "20"])]
    assert run_sweep(lines, jobs=jobs) == 0
    folders = [plan(line.split())[2] for line in lines]
    assert folders[0] != folders[1]
    for folder, size in zip(folders, (16, 20)):
        assert io.read_json(folder / "config.json")["img_size"] == size
        assert io.read_json(folder / "summary.json")["rounds_run"] == 2
        assert len(list((folder / "tb").glob("events.out.tfevents.*"))) == 1
    assert all(plan(line.split())[0] == "done" for line in lines)


def test_a_line_repeated_in_a_sweep_runs_once(tmp_path, capsys):
    line = " ".join(TINY + ["--save_path", str(tmp_path), "--rounds", "1"])
    assert run_sweep([line, line], jobs=2) == 0
    err = capsys.readouterr().err
    assert "line 2 is the same run as line 1" in err and "1 to run" in err


def test_a_sweep_refuses_lines_whose_named_folder_holds_another_setting(tmp_path, capsys):
    base = TINY + ["--save_path", str(tmp_path), "--rounds", "1", "--exp", "same"]
    assert run_sweep([" ".join(base)], jobs=1) == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert run_sweep([" ".join(base + ["--img_size", "20"])], jobs=1) == 2
    assert "line 1: run folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_interrupting_a_sweep_prints_one_line_and_its_runs_resume(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it): one line, no
    tracebacks from the workers; the same command then finishes the sweep."""
    import signal
    import time
    base = TINY + ["--save_path", str(tmp_path), "--rounds", "150", "--ckpt_every", "5"]
    lines = "\n".join(" ".join(base + ["--seed", str(s)]) for s in range(3)) + "\n"
    cmd = [sys.executable, "-m", "tools.sweep", "--jobs", "2"]
    # As from a terminal: a suite started in the background (`cmd &`) inherits SIGINT ignored.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(lines)
    proc.stdin.close()
    deadline = time.time() + 120
    while not list(tmp_path.rglob("last.pt")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("sweep: interrupted;"), err
    assert "rerun the same command" in err
    done = subprocess.run(cmd, cwd=ROOT, input=lines, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.rglob("summary.json"))) == 3


def test_quick_pppml_sweep_reports_global_personalised_and_encryption_costs(tmp_path):
    _quick("run_pppml_exp.sh", tmp_path, SEEDS="0")
    for data, metric in (("synthetic-chestct", "auc"), ("synthetic-covidseg", "dice")):
        summaries = [io.read_json(p) for p in (tmp_path / data).rglob("summary.json")]
        assert len(summaries) == 16  # 4 client algorithms x 3 aggregations + 2 x 2 site shifts
        assert all(metric in s["test_personal"] for s in summaries)
        rows = list(csv.DictReader(open(tmp_path / f"{data}.csv")))
        by = {(r["client_algo"], r["secure_agg"], r["site_shift"]): r for r in rows}
        assert len(by) == 16
        for algo in ("sgd", "perfedavg_fo", "perfedavg_hf", "pppml"):
            plain = float(by[(algo, "none", "2.0")][f"test_{metric}"])
            for kind in ("ckks", "cyclic"):  # the encrypted sum trains the plain model, to CKKS's precision
                assert float(by[(algo, kind, "2.0")][f"test_{metric}"]) == pytest.approx(plain, abs=0.02)
                assert float(by[(algo, kind, "2.0")]["encrypted_mean_bytes_sent"]) > 0
        table = (tmp_path / f"{data}.md").read_text()
        assert f"personalised test {metric}" in table and "encrypted MB sent per input" in table
