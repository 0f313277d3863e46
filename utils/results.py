"""One folder per run: config.json, metrics.csv (long format), tb/ (TensorBoard),
best.pt / last.pt checkpoints and summary.json."""
from __future__ import annotations

import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from privacy.report import Output, undeclared
from utils import io, runfiles

METRIC_FIELDS = ["round", "hospital", "split", "metric", "value"]


def metric_rows(round_idx: int, split: str, per_hospital: dict[str, dict]) -> list[dict]:
    """Long-format rows (round x hospital x split x metric) for one evaluation."""
    return [{"round": round_idx, "hospital": hospital, "split": split, "metric": metric, "value": value}
            for hospital, metrics in per_hospital.items() for metric, value in metrics.items()]


class RunRecorder:
    """Owns the files of one run folder; every write is atomic."""

    def __init__(self, run_dir: Path, *, outputs: list[Output], resume_round: int | None = None):
        self.dir = Path(run_dir)
        self.outputs = outputs  # what the privacy report declares: nothing else may be logged
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        if resume_round is not None and self.metrics_path.exists():
            # Keep what the checkpointed rounds logged; later rounds are re-run, and the
            # test rows are rewritten when training ends (they belong to the final best round).
            self.rows = [_typed(r) for r in io.read_csv(self.metrics_path)
                         if int(r["round"]) <= resume_round and r["split"] != "test"]
        # purge_step drops TensorBoard events of rounds that will be re-run after a resume.
        purge = None if resume_round is None else resume_round + 1
        self.tb = SummaryWriter(log_dir=str(self.dir / runfiles.TENSORBOARD), purge_step=purge)

    @property
    def metrics_path(self) -> Path:
        return self.dir / runfiles.METRICS

    def write_config(self, config: dict) -> None:
        io.write_json(self.dir / runfiles.CONFIG, config)

    def log(self, rows: list[dict]) -> None:
        """Append rows and mirror them to TensorBoard; metrics.csv is rewritten (atomically)
        by `flush`, which the loop calls with every checkpoint and at the end: rewriting it
        every round grows with the run. A metric that no declared output covers is refused:
        it would leave the run without a line in its privacy report."""
        for r in rows:
            if undeclared(self.outputs, r["split"], r["metric"]):
                raise RuntimeError(f"metric {r['split']}/{r['metric']} is not declared in the run's outputs "
                                   "(federated/privacy_setup.py: declared_outputs); declare it before logging it")
        self.rows.extend(rows)
        for r in rows:
            if not math.isnan(r["value"]):
                self.tb.add_scalar(f"{r['split']}/{r['metric']}/{r['hospital']}", r["value"], r["round"])

    def flush(self) -> None:
        io.write_csv(self.metrics_path, METRIC_FIELDS, self.rows)
        self.tb.flush()

    def write_summary(self, summary: dict) -> None:
        io.write_json(self.dir / runfiles.SUMMARY, summary)

    def close(self) -> None:
        try:
            self.flush()
        finally:  # a failed write must still stop TensorBoard's writer thread before the folder goes
            self.tb.close()


def _typed(row: dict) -> dict:
    return {"round": int(row["round"]), "hospital": row["hospital"], "split": row["split"],
            "metric": row["metric"], "value": float(row["value"])}
