"""Compact run records: what the reports read, small enough to commit beside a table.

    python -m tools.archive experiments/table1/synthetic-ich --out experiments/table1/results/records

Every finished run folder below the paths (config.json and summary.json) becomes one file,
OUT/DATA/seedS/RUN.run.json, holding {"config": ..., "summary": ...}: the resolved flags
and the summary without its per-hospital metrics, sub-client sizes and full privacy report
(a few KB instead of the folder's MBs of checkpoints, curves and TensorBoard events).
tools.report, tools.sweep_report and tools.fidelity read these records as they read run
folders, so a table rebuilds from the repository alone:

    python -m tools.report experiments/table1/results/records/synthetic-ich --out /tmp/table1_ich
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils import io, runfiles

RECORD_SUFFIX = ".run.json"
# Summary fields the reports do not read: per hospital, per sub-client, and the report text
# (the epsilons it holds are kept under "privacy" / "sample_privacy" / "local_privacy").
LEFT_OUT = ("test_per_hospital", "val_per_hospital", "subclient_sizes", "privacy_report", "run_dir")


def compact(config: dict, summary: dict) -> dict:
    return {"config": config, "summary": {k: v for k, v in summary.items() if k not in LEFT_OUT}}


def archive(paths: list[str], out: str) -> list[Path]:
    """Write the records of the finished runs below `paths`; returns the files written."""
    written = []
    for root in map(Path, paths):
        if not root.is_dir():
            raise SystemExit(f"archive: {root} is not a folder; pass a sweep's results folder (SAVE/DATA)")
        for summary_path in sorted(root.rglob(runfiles.SUMMARY)):
            folder = summary_path.parent
            config = io.read_json(folder / runfiles.CONFIG)
            target = Path(out) / config["data"] / f"seed{config['seed']}" / (folder.name + RECORD_SUFFIX)
            io.write_json(target, compact(config, io.read_json(summary_path)))
            written.append(target)
    if not written:
        raise SystemExit(f"archive: no finished runs (summary.json) below {', '.join(paths)}")
    return written


def read_record(path: Path) -> tuple[dict, dict]:
    record = io.read_json(path)
    if not isinstance(record, dict) or set(record) != {"config", "summary"}:
        raise SystemExit(f"{path} is not a run record (written by python -m tools.archive)")
    return record["config"], record["summary"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.archive", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="folders searched for finished run folders")
    p.add_argument("--out", required=True, help="folder for the records (OUT/DATA/seedS/RUN.run.json)")
    args = p.parse_args(argv)
    written = archive(args.paths, args.out)
    print(f"archive: {len(written)} run records in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
