"""The privacy report, generated from what the run declares, never written from flags.

Two declarations feed it: the ledger's accounts (every release, per unit, with its
adjacency and epsilon) and the list of everything else the run writes (metrics, logs,
checkpoints, printed lines), each marked covered, post-processing, or not covered. The
results recorder refuses to log a metric that no output declares, so a new statistic
cannot appear without a line in this report.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

STATUSES = ("covered", "post-processing", "not covered")


@dataclass(frozen=True)
class Output:
    """Something the run writes. `metrics` are the (split, metric) patterns it logs to
    metrics.csv and TensorBoard (fnmatch patterns, e.g. ("val", "*"))."""
    name: str
    status: str
    what: str
    metrics: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"output {self.name!r}: status {self.status!r} is not one of {STATUSES}")

    def declares(self, split: str, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(split, s) and fnmatch.fnmatchcase(metric, m) for s, m in self.metrics)


def undeclared(outputs: list[Output], split: str, metric: str) -> bool:
    return not any(o.declares(split, metric) for o in outputs)


def build_report(*, mode: str, accounts: dict, outputs: list[Output], threat_model: str) -> dict:
    """The report: whom the run trusts, the accounts (from the ledger) and the outputs
    grouped by status."""
    by_status = {s: [f"{o.name}: {o.what}" for o in outputs if o.status == s] for s in STATUSES}
    return {"mode": mode, "threat_model": threat_model, "accounts": accounts, "covered": by_status["covered"],
            "post_processing": by_status["post-processing"], "not_covered": by_status["not covered"],
            "notes": sorted({n for a in accounts.values() for n in a["notes"]})}


def format_report(report: dict) -> str:
    lines = [f"privacy ({report['mode']}):", f"  threat model: {report['threat_model']}"]
    for name, a in report["accounts"].items():
        lines.append(f"  account {name}: {a['adjacency']} [{a['relation']}, {a['sampling']} q={a['sample_rate']:g}, "
                     f"delta={a['delta']:g}]")
    lines += [f"  covered: {c}" for c in report["covered"]]
    lines += [f"  post-processing: {c}" for c in report["post_processing"]]
    lines += [f"  NOT covered: {c}" for c in report["not_covered"]]
    lines += [f"  note: {n}" for n in report["notes"]]
    return "\n".join(lines)
