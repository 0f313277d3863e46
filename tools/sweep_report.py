"""Tables for sweeps other than Table 1 (the BloodMNIST federation, the chest-radiograph
fairness study): one row per setting, the flags that vary across the sweep.

    python -m tools.sweep_report experiments/blood --out results/blood

Rows group runs by every flag except the seed; columns are the flags that differ between
rows, the test metrics (mean ± sample std over seeds) and the epsilon spent by each kind
of DP the runs used (client level per sub-client, sample level and local update DP: the
largest over hospitals; RDP). When runs carry fairness results (datasets with attributes)
the study's tables follow (tools/fairness_report.py): metrics at the validation-chosen
thresholds with bootstrap intervals, per-group accuracy and parity differences, their cost
against no DP, and the Pearson correlation of epsilon with each parity difference.
Writes OUT.md, OUT.csv (one row per run with its DP flags, `epsilon_spent` and every
fairness estimate with its interval, for replotting) and, with fairness results, OUT_parity.png.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from federated.config import RUN_CONTROL_FLAGS
from tools import fairness_report
from utils import io
from tools.report import find_runs

# Flags that do not change what is computed.
NOT_A_SETTING = RUN_CONTROL_FLAGS | {"seed"}
# Flags summarised by the "privacy" column.
DP_FLAGS = {"mode", "dp_level", "noise_multiplier", "epsilon", "delta", "S", "adaclip", "noclip", "accountant",
            "dp_mode", "target_unit", "sample_noise", "sample_epsilon", "sample_delta", "max_grad_norm",
            "local_noise", "local_epsilon", "local_delta", "local_clip"}
EPSILONS = (("client ε", ("privacy", "epsilon", "subclient", "rdp")),
            ("sample-level ε", ("sample_privacy", "epsilon_max", "rdp")),
            ("local-update ε", ("local_privacy", "epsilon_max", "rdp")))


def _get(summary: dict, path: tuple) -> float | None:
    for key in path:
        if not isinstance(summary, dict) or key not in summary:
            return None
        summary = summary[key]
    return float(summary)


def spent_epsilon(summary: dict) -> float:
    """The run's epsilon for correlation: the largest DP kind it used (inf without DP)."""
    values = [v for _, path in EPSILONS if (v := _get(summary, path)) is not None]
    return max(values) if values else math.inf


def _pm(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.4f} ± {std:.4f}"


def privacy_setting(config: dict) -> str:
    """One label for every DP flag of a run, e.g. "client-level DP (ε=10)"."""
    parts = []
    if config["mode"].startswith("dp"):
        target = f"ε={config['epsilon']}" if config.get("epsilon") is not None else f"z={config['noise_multiplier']}"
        parts.append(f"client-level DP ({target})")
    if config.get("dp_level") == "sample":
        target = (f"ε={config['sample_epsilon']}" if config.get("sample_epsilon") is not None
                  else f"z={config['sample_noise']}")
        parts.append(f"sample-level DP-SGD ({target})")
    if config.get("dp_level") == "update_local":
        target = (f"ε={config['local_epsilon']}" if config.get("local_epsilon") is not None
                  else f"z={config['local_noise']}")
        parts.append(f"local update DP ({target})")
    return " + ".join(parts) or "no DP (ε = ∞)"


def group(runs) -> tuple[list[str], dict[tuple, list[tuple[dict, dict]]]]:
    finished = [(c, s) for _, c, s in runs if s is not None]
    if not finished:
        raise SystemExit("sweep_report: no finished runs (summary.json) below the given folders")
    rows = [({**c, "privacy": privacy_setting(c)}, s) for c, s in finished]
    keys = sorted({k for c, _ in rows for k in c} - NOT_A_SETTING - DP_FLAGS)
    # the training flags that differ, then the privacy setting (which stands for every DP flag)
    varying = [k for k in keys if k != "privacy" and len({json.dumps(c.get(k)) for c, _ in rows}) > 1]
    varying.append("privacy")
    groups: dict[tuple, list] = defaultdict(list)
    for config, summary in rows:
        groups[tuple(json.dumps(config.get(k)) for k in varying)].append((config, summary))
    def order(item):  # the training flags, then the privacy settings from the weakest (ε = ∞) down
        key, members = item
        return [_sortable(v) for v in key[:-1]] + [-float(np.mean([spent_epsilon(s) for _, s in members]))]
    return varying, dict(sorted(groups.items(), key=order))


def _sortable(value: str):
    parsed = json.loads(value)
    return (0, parsed, "") if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else (1, 0, str(parsed))


def _cell(value: str) -> str:
    parsed = json.loads(value)
    return "-" if parsed is None else str(parsed)


def optional_columns(summaries: list[dict], primary: str) -> list[tuple[str, tuple | None]]:
    """Columns shown only when some run has them: the personalised score (--personalize_steps),
    and the encrypted aggregation's bytes and seconds per round with the run's seconds per round."""
    def some(path):
        return any(_get(s, path) is not None for s in summaries)
    columns = []
    if some(("test_personal", primary)):
        columns.append((f"personalised test {primary}", ("test_personal", primary)))
    if some(("encrypted_aggregation", "mean_bytes_sent")):
        columns += [("encrypted MB sent per input", ("encrypted_aggregation", "mean_bytes_sent")),
                    ("encryption s/round", ("encrypted_aggregation", "mean_seconds")),
                    ("run s/round", None)]
    return columns


def _optional_value(summary: dict, path: tuple | None) -> float | None:
    if path is None:
        rounds = summary.get("rounds_run")
        return summary["wall_s"] / rounds if rounds and "wall_s" in summary else None
    value = _get(summary, path)
    return value / 1e6 if value is not None and path[-1] == "mean_bytes_sent" else value


def results_table(varying: list[str], groups: dict) -> str:
    first = next(iter(groups.values()))[0][1]
    metrics = sorted(first["test"], key=lambda m: m != first["primary_metric"])
    eps_cols = [(name, path) for name, path in EPSILONS
                if any(_get(s, path) is not None for runs in groups.values() for _, s in runs)]
    extra = optional_columns([s for runs in groups.values() for _, s in runs], first["primary_metric"])
    header = [*varying, "seeds", *[f"test {m}" for m in metrics], *[n for n, _ in extra], *[n for n, _ in eps_cols]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, runs in groups.items():
        cells = [_cell(v) for v in key] + [str(len(runs))]
        cells += [_pm([s["test"].get(m) for _, s in runs]) for m in metrics]
        cells += [_pm([_optional_value(s, path) for _, s in runs]) for _, path in extra]
        cells += [_pm([_get(s, path) for _, s in runs]) for _, path in eps_cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fairness_sections(groups: dict, points: list[tuple[float, dict]]) -> str:
    """The study's tables, costs and correlations for runs with fairness results."""
    keys = [k for k, runs in groups.items() if any("fairness" in s for _, s in runs)]
    if not keys:
        return ""
    labels = [" / ".join(_cell(v) for v in k) for k in keys]
    text = "\n" + fairness_report.study_tables(labels, [[s for _, s in groups[k]] for k in keys])
    no_dp = json.dumps(privacy_setting({"mode": "fedavg"}))
    text += fairness_report.cost_table([
        (label, [(c["seed"], s) for c, s in groups[k]], {c["seed"]: s for c, s in groups.get(k[:-1] + (no_dp,), [])})
        for label, k in zip(labels, keys) if k[-1] != no_dp])
    return text + fairness_report.correlation_table(fairness_report.correlations(points))


def sweep_report(paths: list[str], out: str | None) -> str:
    runs = find_runs(paths)
    varying, groups = group(runs)
    unfinished = [str(folder) for folder, _, s in runs if s is None]
    text = results_table(varying, groups)
    points = [(spent_epsilon(s), s) for _, _, s in runs if s is not None and "fairness" in s]
    text += fairness_sections(groups, points)
    if unfinished:
        text += f"\nUnfinished runs (no summary.json), not in the table: {len(unfinished)}\n" + \
                "".join(f"- {u}\n" for u in unfinished)
    if out:
        io.write_text(Path(out).with_suffix(".md"), text)
        rows = []
        for _, config, summary in runs:
            if summary is None:
                continue
            row = {k: config.get(k) for k in varying if k != "privacy"} | {"privacy": privacy_setting(config)}
            row |= {k: config[k] for k in sorted(DP_FLAGS) if k in config}
            row |= {"seed": config["seed"], "epsilon_spent": spent_epsilon(summary)}
            row |= {f"test_{k}": v for k, v in summary["test"].items()}
            row |= {f"test_personal_{k}": v for k, v in summary.get("test_personal", {}).items()}
            row |= {f"encrypted_{k}": v for k, v in summary.get("encrypted_aggregation", {}).items()}
            row |= {"wall_s": summary.get("wall_s")}
            for k, m in fairness_report.metrics(summary).items():
                row |= {f"fairness_{k}": m["value"], f"fairness_{k}_low": m["low"], f"fairness_{k}_high": m["high"]}
            rows.append(row)
        io.write_csv(Path(out).with_suffix(".csv"), list(dict.fromkeys(k for r in rows for k in r)), rows)
        if points:
            fairness_report.plot_parity(points, Path(out).with_name(Path(out).name + "_parity.png"))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.sweep_report", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="results folders of a sweep")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv")
    args = p.parse_args(argv)
    print(sweep_report(args.paths, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
