"""The PPPML-HMI study's headline table: does a personalised model beat conventional FL?

    python -m tools.personal_gap experiments/pppml/results/records --out experiments/pppml/results/gap

For each task, site shift and client algorithm (runs with plain aggregation: encryption
trains the same model), the global model's test score, the personalised one (each
hospital's model adapted by --personalize_steps at --alpha), and two gaps paired by seed:
personalised minus FedAvg's global model (`--client_algo sgd`, the conventional FL the
system is compared with) and personalised minus its own global model. Mean ± sample std
over seeds, in the task's primary metric (AUC, Dice). Writes OUT.md and OUT.csv.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from tools.report import find_runs
from tools.sweep_report import _pm
from utils import io

CONVENTIONAL = "sgd"
ALGORITHMS = {"sgd": "FedAvg", "perfedavg_fo": "Per-FedAvg FO", "perfedavg_hf": "Per-FedAvg HF",
              "pppml": "published code's steps"}


def scores(paths: list[str]) -> dict[tuple, dict[int, tuple[float, float]]]:
    """(task, site shift, algorithm) -> seed -> (global, personalised) test score."""
    out: dict[tuple, dict] = defaultdict(dict)
    for _, config, summary in find_runs(paths):
        if summary is None or "test_personal" not in summary or config.get("secure_agg", "none") != "none":
            continue
        metric = summary["primary_metric"]
        key = (config["data"], float(config.get("site_shift", 1.0)), config.get("client_algo", "sgd"))
        out[key][config["seed"]] = (summary["test"][metric], summary["test_personal"][metric])
    if not out:
        raise SystemExit("personal_gap: no finished runs with --personalize_steps and plain aggregation below "
                         f"{', '.join(paths)}")
    return out


def gap_rows(table: dict[tuple, dict[int, tuple[float, float]]]) -> list[dict]:
    rows = []
    order = list(ALGORITHMS)
    for (data, shift, algo) in sorted(table, key=lambda k: (k[0], k[1], order.index(k[2]) if k[2] in order else 9)):
        runs = table[(data, shift, algo)]
        fedavg = table.get((data, shift, CONVENTIONAL), {})
        paired = sorted(set(runs) & set(fedavg))
        rows.append({"task": data, "site_shift": shift, "client_algo": algo, "seeds": len(runs),
                     "global": [g for g, _ in runs.values()], "personalised": [p for _, p in runs.values()],
                     "vs_fedavg_global": [runs[s][1] - fedavg[s][0] for s in paired],
                     "vs_own_global": [p - g for g, p in runs.values()]})
    return rows


def markdown(rows: list[dict]) -> str:
    header = ["task", "site shift", "client algorithm", "seeds", "global", "personalised",
              "personalised − FedAvg global (paired)", "personalised − own global"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([r["task"], f"{r['site_shift']:g}", ALGORITHMS.get(r["client_algo"], r["client_algo"]),
                                        str(r["seeds"]), _pm(r["global"]), _pm(r["personalised"]),
                                        _pm(r["vs_fedavg_global"]), _pm(r["vs_own_global"])]) + " |")
    return "\n".join(lines) + "\n"


def personal_gap(paths: list[str], out: str | None) -> str:
    rows = gap_rows(scores(paths))
    text = markdown(rows)
    if out:
        io.write_text(Path(out).with_suffix(".md"), text)
        flat = [{k: (sum(v) / len(v) if v else None) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        io.write_csv(Path(out).with_suffix(".csv"), list(flat[0]), flat)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.personal_gap", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="run folders or run records of the sweep")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv")
    args = p.parse_args(argv)
    print(personal_gap(args.paths, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
