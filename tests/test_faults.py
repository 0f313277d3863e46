"""A run killed (SIGKILL) at any point, including half-way through writing a checkpoint,
ends bit-identical to an uninterrupted run once `--resume` is run until it finishes."""
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import TINY
from utils import io

RUNNER = Path(__file__).with_name("fault_runner.py")
FLAGS = TINY + ["--mode", "dpsgd", "--noise_multiplier", "1.0", "--adaclip", "--ada_vn", "--rounds", "4",
                "--exp", "run"]


def launch(save_path: Path, *, kill_at: int = 0, log: Path | None = None, resume: bool = False) -> int:
    env = {**os.environ, "KILL_AT_WRITE": str(kill_at), "OMP_NUM_THREADS": "1"}
    if log:
        env["WRITE_LOG"] = str(log)
    argv = FLAGS + ["--save_path", str(save_path)] + (["--resume"] if resume else [])
    done = subprocess.run([sys.executable, str(RUNNER), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode


def outcome(save_path: Path) -> dict:
    folder = save_path / "synthetic-ich" / "seed0" / "run"
    last = torch.load(folder / "last.pt", weights_only=True)
    best = torch.load(folder / "best.pt", weights_only=True)
    summary = io.read_json(folder / "summary.json")
    return {"params": last["state"]["params"], "ledger": last["ledger"], "best": best["model"],
            "metrics": (folder / "metrics.csv").read_text(), "test": summary["test"],
            "privacy": summary["privacy"],
            "temporaries": sorted(p.name for p in folder.glob(".*") if p.name != ".lock")}  # the lock is kept


def same(a: dict, b: dict) -> None:
    assert torch.equal(a["params"], b["params"])
    assert a["best"].keys() == b["best"].keys() and all(torch.equal(a["best"][k], b["best"][k]) for k in a["best"])
    for key in ("ledger", "metrics", "test", "privacy"):
        assert a[key] == b[key], key
    assert b["temporaries"] == []


def test_killed_anywhere_then_resumed_is_bit_identical(tmp_path):
    log = tmp_path / "writes.log"
    assert launch(tmp_path / "reference", log=log) == 0
    reference = outcome(tmp_path / "reference")
    writes = log.read_text().split()
    checkpoints = [i for i, name in enumerate(writes, 1) if name == "last.pt"]
    others = [i for i in range(1, len(writes) + 1) if i not in checkpoints]
    rng = random.Random(0)
    # the first write, a checkpoint mid-run, the last checkpoint, and two other writes at random
    kill_points = sorted({1, rng.choice(checkpoints[:-1]), checkpoints[-1], *rng.sample(others[1:], 2)})
    for k in kill_points:
        save_path = tmp_path / f"killed{k}"
        assert launch(save_path, kill_at=k) == -9, f"write {k} ({writes[k - 1]}) did not kill the run"
        while launch(save_path, resume=True) != 0:
            pass
        same(reference, outcome(save_path))
