"""Audit a finished run's epsilon from the outside: python -m attacks.audit RUN_DIR.

The run was trained with --audit_canaries K (federated/canaries.py): K canary units sent
fixed random directions, each included or not by a secret bit. Here the auditor reads only
what the run released at its end, the final model, and the record of its own canaries
(audit.pt: the bits, the directions' seed, the starting parameters). Each canary's score
is the cosine of its direction with the model's whole change. From the scores:

- the one-run lower bound (attacks/estimators.py, Steinke et al. 2023) at 95%: the ledger
  claims at most epsilon; this says the run is certainly not better than the bound;
- the one-shot estimate (Andrew et al. 2024): the epsilon the canaries' cosines show.

Both are printed beside the ledger's epsilon for the canaries' unit and written into the
run's summary.json under "audit".
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from attacks.estimators import one_run_epsilon, one_shot_epsilon
from federated.canaries import AUDIT_RECORD, Canaries
from utils import io, runfiles


class AuditError(ValueError):
    """A run folder the audit cannot read; the message says what to do."""


def canary_scores(canaries: Canaries, change: torch.Tensor) -> np.ndarray:
    """The cosine of each canary's direction with the model's change [K]."""
    norm = float(torch.linalg.vector_norm(change.double()))
    if norm == 0:
        return np.zeros(canaries.count)
    return np.array([float(canaries.direction(j, change.numel()).double() @ change.double()) / norm
                     for j in range(canaries.count)])


def ledger_epsilons(summary: dict, unit: str) -> dict[str, dict[str, float]]:
    """The ledger's epsilon per accountant for the canaries' unit, per mechanism that
    protects it: client-level DP and local update DP (either alone bounds it)."""
    found = {}
    if "privacy" in summary:
        found["client"] = {"delta": summary["privacy"]["delta"], **summary["privacy"]["epsilon"][unit]}
    if "local_privacy" in summary:
        local = summary["local_privacy"]
        key = "epsilon_max" if unit == "subclient" else "epsilon_hospital_max"
        found["local"] = {"delta": local["delta"], **local[key]}
    return found


def audit_run(folder: Path, *, confidence: float = 0.95) -> dict:
    """The audit of one finished run, written into its summary.json and returned."""
    folder = Path(folder)
    record_path, summary_path = folder / AUDIT_RECORD, folder / runfiles.SUMMARY
    if not record_path.exists():
        raise AuditError(f"{folder} has no {AUDIT_RECORD}: it was not trained with --audit_canaries K; rerun it with "
                         "--audit_canaries 200 (or more) to audit it")
    if not summary_path.exists():
        raise AuditError(f"{folder} has no {runfiles.SUMMARY}: the run has not finished; finish it with --resume")
    record = torch.load(record_path, map_location="cpu", weights_only=True)
    final = torch.load(folder / runfiles.CHECKPOINT, map_location="cpu", weights_only=True)["state"]["params"]
    canaries = Canaries.from_record(record)
    scores = canary_scores(canaries, final - record["initial_params"])
    included = canaries.included.numpy()
    summary = io.read_json(summary_path)
    ledger = ledger_epsilons(summary, canaries.unit)
    if not ledger:
        raise AuditError(f"{folder}'s summary has no epsilon to audit (no client-level or local update DP)")
    delta = min(entry["delta"] for entry in ledger.values())
    lower = one_run_epsilon(scores, included, delta=delta, confidence=confidence)
    estimate = one_shot_epsilon(scores[included], dim=final.numel(), delta=delta)
    excluded = scores[~included]
    claimed = min(v for entry in ledger.values() for k, v in entry.items() if k != "delta" and math.isfinite(v))
    result = {"unit": canaries.unit, "canaries": canaries.count, "inserted": int(included.sum()),
              "subclients_per_canary": canaries.per_canary, "delta": delta, "dim": final.numel(),
              "lower_bound": lower, "one_shot": estimate, "ledger": ledger, "ledger_epsilon": claimed,
              "null_check": {"excluded_mean": float(excluded.mean()) if excluded.size else math.nan,
                             "excluded_std": float(excluded.std(ddof=1)) if excluded.size > 1 else math.nan,
                             "expected_std": 1 / math.sqrt(final.numel())}}
    summary["audit"] = result
    io.write_json(summary_path, summary)
    return result


def format_audit(result: dict) -> str:
    lower, shot = result["lower_bound"], result["one_shot"]
    ledger = "; ".join(f"{name} " + ", ".join(f"{v:.3f} ({k})" for k, v in entry.items() if k != "delta")
                       for name, entry in result["ledger"].items())
    return "\n".join([
        f"audit of the {result['unit']} unit: {result['canaries']} canaries ({result['inserted']} inserted), "
        f"delta {result['delta']:g}, {result['dim']} parameters",
        f"  ledger epsilon:             {ledger}",
        f"  one-run lower bound ({lower['confidence']:.0%}): {lower['epsilon']:.3f} "
        f"({lower['correct']} of {lower['guesses']} guesses right)",
        f"  one-shot estimate:          {shot['epsilon']:.3f} (inserted cosines {shot['mean']:.4f} +- {shot['std']:.4f}"
        f" against N(0, {shot['null_std']:.4f}^2))",
        "  the lower bound " + ("exceeds the ledger: the mechanism leaks more than it charges"
                                if lower["epsilon"] > result["ledger_epsilon"] else "is within the ledger's epsilon"),
    ])


def audit_table(results: dict[Path, dict]) -> tuple[list[dict], str]:
    """One row per setting (the run folders' names without the hash, so seeds group): the
    ledger's epsilon, the lower bound (mean and largest over seeds) and the one-shot
    estimate (mean +- std over seeds). Returns the rows and a markdown table."""
    groups: dict[str, list[dict]] = {}
    for folder, result in results.items():
        groups.setdefault(Path(folder).name.rsplit("_", 1)[0], []).append(result)
    rows = []
    for setting, found in sorted(groups.items()):
        lower = np.array([r["lower_bound"]["epsilon"] for r in found])
        shot = np.array([r["one_shot"]["epsilon"] for r in found])
        rows.append({"setting": setting, "unit": found[0]["unit"], "canaries": found[0]["canaries"], "seeds": len(found),
                     "ledger_epsilon": float(np.mean([r["ledger_epsilon"] for r in found])),
                     "lower_bound_mean": float(lower.mean()), "lower_bound_max": float(lower.max()),
                     "one_shot_mean": float(shot.mean()), "one_shot_std": float(shot.std(ddof=1)) if len(shot) > 1 else 0.0,
                     "bound_within_ledger": bool(all(r["lower_bound"]["epsilon"] <= r["ledger_epsilon"] for r in found))})
    lines = ["| setting | unit | canaries | seeds | ledger epsilon | lower bound (mean / max) | one-shot estimate |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['unit']} | {r['canaries']} | {r['seeds']} | {r['ledger_epsilon']:.2f} | "
              f"{r['lower_bound_mean']:.2f} / {r['lower_bound_max']:.2f} | {r['one_shot_mean']:.2f} +- "
              f"{r['one_shot_std']:.2f} |" for r in rows]
    return rows, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attacks.audit", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", nargs="+", help="run folders trained with --audit_canaries K")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of the one-run lower bound")
    parser.add_argument("--table", default=None, metavar="OUT",
                        help="also write OUT.csv and OUT.md: one row per setting, seeds pooled")
    args = parser.parse_args(argv)
    if not 0.5 <= args.confidence < 1:
        parser.error(f"--confidence must be in [0.5, 1) (got {args.confidence})")
    results = {}
    for folder in args.run_dir:
        try:
            results[folder] = audit_run(Path(folder), confidence=args.confidence)
        except AuditError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{folder}\n{format_audit(results[folder])}")
    if args.table:
        rows, markdown = audit_table(results)
        io.write_csv(Path(f"{args.table}.csv"), list(rows[0]), rows)
        io.write_text(Path(f"{args.table}.md"), markdown)
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
