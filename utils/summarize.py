"""Mean +- std of test metrics over runs (e.g. seeds), from their summary.json files.

    python -m utils.summarize experiments/synthetic-ich/seed*/RUN_NAME
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def load_summaries(run_dirs: list[str]) -> list[dict]:
    summaries = []
    for d in run_dirs:
        path = Path(d) / "summary.json"
        if not path.exists():
            raise SystemExit(f"summarize: {path} is missing; is {d} a finished run folder?")
        summaries.append(json.loads(path.read_text()))
    return summaries


def mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.4f} +- {arr.std(ddof=1) if len(arr) > 1 else 0.0:.4f}"


def summarize(summaries: list[dict], keys: list[str] | None = None) -> dict[str, str]:
    """{metric: "mean +- std"} over the runs' test metrics (sample std, ddof=1)."""
    keys = keys or list(summaries[0]["test"])
    return {k: mean_std([s["test"][k] for s in summaries]) for k in keys}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="finished run folders (each holds summary.json)")
    args = p.parse_args(argv)
    summaries = load_summaries(args.run_dirs)
    row = summarize(summaries)
    print(f"{len(summaries)} runs | " + " | ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
