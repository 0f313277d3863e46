"""Time per round of one job three ways: fed_train.py in one process, Flower's simulation
engine, and the localhost deployment (deploy/run_local.sh), each with and without Flower's
SecAgg+ where it applies. Run one after the other on an otherwise idle machine.

    python -m benchmarks.flower                       # -N 3, 5 rounds, DP-FedAvg strict
    python -m benchmarks.flower --rounds 3 --skip-local

Per round: the mean over the run's rounds of training, release and the hospitals'
validation (fed_train.py: its summary's total round time / rounds; Flower: the server's
measured round times). Wall: the whole command, start-up included.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOB = ["--mode", "dpsgd", "--noise_multiplier", "1.0", "--strict_dp", "--threads", "1", "--no_progress"]


def _summary(save_path: Path) -> dict:
    return json.loads(next(save_path.rglob("summary.json")).read_text())


def _timed(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-local", action="store_true", help="leave out the localhost deployment")
    args = parser.parse_args(argv)
    job = ["-N", str(args.hospitals), "--rounds", str(args.rounds), *JOB]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("fed_train.py (one process)", [sys.executable, "fed_train.py", *job], None)]
        for secagg in ([], ["--flower_secagg"]):
            label = " + SecAgg+" if secagg else ""
            runs.append((f"Flower simulation engine{label}", [sys.executable, "-m", "deploy.simulate", *job, *secagg],
                         None))
            if not args.skip_local:
                runs.append((f"localhost deployment{label}", ["bash", "deploy/run_local.sh", str(args.hospitals),
                                                               *job[2:], *secagg], {"PYTHON": sys.executable}))
        for i, (label, command, env) in enumerate(runs):
            save = Path(tmp) / str(i)
            wall = _timed([*command, "--save_path", str(save)], env)
            summary = _summary(save)
            timing = summary["timing"]
            flower = "mean_round_s" in timing
            per_round = timing["mean_round_s"] if flower else timing["total_s"] / summary["rounds_run"]
            eps = summary["privacy"]["epsilon"]["subclient"]["rdp"]
            rows.append((label, per_round, wall, summary["test"][summary["primary_metric"]], eps))
            print(f"{label}: {per_round:.2f} s per round, {wall:.1f} s wall", file=sys.stderr, flush=True)
    print(f"| run ({args.hospitals} hospitals, {args.rounds} rounds) | s per round | wall s | test AUC | "
          "epsilon per sub-client (RDP) |")
    print("|---|---|---|---|---|")
    for label, per_round, wall, test, eps in rows:
        print(f"| {label} | {per_round:.2f} | {wall:.1f} | {test:.4f} | {eps:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
