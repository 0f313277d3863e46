"""Mean +- std of test metrics over runs (e.g. seeds), from their summary.json files.

    python -m tools.summarize experiments/synthetic-ich/seed*/RUN_NAME
    python -m tools.summarize --table experiments/intermediaries/runs  # one Markdown row per setting

With --table, every finished run below the folder is grouped by its configuration minus
the seed; each group becomes a row with the test metrics as mean +- sample std over seeds,
the final intermediary count and the final epsilon of the three units (RDP, as the run's
ledger reports it).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from utils import io, runfiles

IGNORED_FOR_GROUPING = {"seed", "exp", "save_path", "resume", "overwrite", "progress", "gpu", "ckpt_every"}


def load_summaries(run_dirs: list[str]) -> list[dict]:
    summaries = []
    for d in run_dirs:
        path = Path(d) / runfiles.SUMMARY
        if not path.exists():
            raise SystemExit(f"summarize: {path} is missing; is {d} a finished run folder?")
        summaries.append(io.read_json(path))
    return summaries


def mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.4f} +- {arr.std(ddof=1) if len(arr) > 1 else 0.0:.4f}"


def summarize(summaries: list[dict], keys: list[str] | None = None) -> dict[str, str]:
    """{metric: "mean +- std"} over the runs' test metrics (sample std, ddof=1)."""
    keys = keys or list(summaries[0]["test"])
    return {k: mean_std([s["test"][k] for s in summaries]) for k in keys}


def group_runs(root: Path) -> dict[tuple, list[tuple[dict, dict]]]:
    groups: dict[tuple, list] = defaultdict(list)
    for path in sorted(root.rglob(runfiles.SUMMARY)):
        config = io.read_json(path.parent / runfiles.CONFIG)
        key = tuple(sorted((k, v) for k, v in config.items() if k not in IGNORED_FOR_GROUPING))
        groups[key].append((config, io.read_json(path)))
    return groups


def _row(runs: list[tuple[dict, dict]]) -> tuple[tuple, list[str]]:
    config = runs[0][0]
    summaries = [s for _, s in runs]
    privacy = [s.get("privacy") for s in summaries]
    private = privacy[0] is not None
    eps = {u: mean_std([p["epsilon"][u]["rdp"] for p in privacy]) if private else "-"
           for u in ("subclient", "hospital", "patient")}
    setting = (f"z={config['noise_multiplier']}" if private else "no DP") + (", ada_vn" if config.get("ada_vn") else "")
    cells = [config["data"], setting, str(len(runs)), *summarize(summaries).values(),
             f"{np.mean([s['final_v'] for s in summaries]):.1f}", eps["subclient"], eps["hospital"], eps["patient"]]
    order = (config["data"], config["noise_multiplier"] or 0.0, bool(config.get("ada_vn")))
    return order, cells


def table(root: Path) -> str:
    """One Markdown table per task; rows sorted by noise multiplier, without/with --ada_vn."""
    by_task: dict[str, list] = defaultdict(list)
    for runs in group_runs(root).values():
        by_task[runs[0][0]["data"]].append((_row(runs), list(runs[0][1]["test"])))
    lines = []
    for task in sorted(by_task):
        rows = sorted(by_task[task])
        metrics = rows[0][1]
        header = ["task", "setting", "seeds", *[f"test {m}" for m in metrics], "final v",
                  "eps sub-client (RDP)", "eps hospital (RDP)", "eps patient (RDP)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for (_, cells), _ in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="finished run folders (each holds summary.json), or with --table one root")
    p.add_argument("--table", action="store_true", help="group every run below the folder into a Markdown table")
    args = p.parse_args(argv)
    if args.table:
        print(table(Path(args.run_dirs[0])))
        return 0
    summaries = load_summaries(args.run_dirs)
    row = summarize(summaries)
    print(f"{len(summaries)} runs | " + " | ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
