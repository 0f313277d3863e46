"""Rebuild Table 1 of Jiang et al. (MICCAI 2023) from a sweep's run folders.

    python -m tools.report experiments/table1 --out results/table1

Every run folder below the given paths (one holding config.json) is placed in a cell:
task x noise level x server optimizer x {no DP, DP, DP + intermediaries}. A cell reports
the test metrics as mean +- sample std over its seeds and the epsilon spent per
sub-client, per hospital and per patient (RDP, the paper's accountant; the CSV adds PRV and PLD).
Every cell of the grid the sweep implies is listed: the four optimizers, every noise
level seen for the task and the seeds seen for it; a cell without a finished run says
`missing`, and one with fewer seeds says which are missing or unfinished.
Writes OUT.md, OUT.csv and OUT.png (metric against epsilon, one line per optimizer,
solid without and dashed with intermediaries).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federated.config import RUN_CONTROL_FLAGS
from utils import io, runfiles

# (Table 1 name, non-private mode, private mode)
OPTIMIZERS = (("DP-FedAvg", "fedavg", "dpsgd"), ("DP-FedAdam", "fedadam", "dpadam"),
              ("DP-FedNova", "fednova", "dpnova"), ("DP2-RMSProp", "fed2rmsprop", "dp2rmsprop"))
OPTIMIZER_OF_MODE = {mode: name for name, *modes in OPTIMIZERS for mode in modes}
PRIVATE_MODES = {private for _, _, private in OPTIMIZERS}
SETTINGS = ("no DP", "DP", "DP + intermediaries")
ACCOUNTANTS = ("rdp", "prv", "pld")
UNITS = ("subclient", "hospital", "patient")
# Flags that do not make a different experiment (seed: the repetition inside a cell).
NOT_A_SETTING = RUN_CONTROL_FLAGS | {"seed"}
CELL_FLAGS = {"mode", "noise_multiplier", "epsilon", "ada_vn", "init_vn", "ada_stable", "ada_prog"}
COLUMN_ORDER = ["auc", "acc", "sen", "spe", "f1", "dice", "dice_hard", "hd95", "iou"]
# Column labels where the metric's name alone is ambiguous: the paper's Dice is soft.
LABELS = {"dice": "Dice (soft, the paper's)", "dice_hard": "Dice (hard, logit > 0)"}


@dataclass
class Cell:
    task: str
    level: float | None  # noise multiplier (None: no DP)
    optimizer: str
    setting: str
    finished: dict = field(default_factory=dict)    # seed -> (config, summary)
    unfinished: list = field(default_factory=list)  # seeds whose folder has no summary.json
    configs: set = field(default_factory=set)       # remaining flags, to catch mixed experiments


def find_runs(paths: list[str]) -> list[tuple[Path, dict, dict | None]]:
    """(where, config, summary or None) of every run below the paths: run folders (holding
    config.json) and the compact records tools.archive writes (RUN.run.json)."""
    from tools.archive import RECORD_SUFFIX, read_record

    runs, seen = [], set()
    roots = list(map(Path, paths))
    for root in roots:
        if not root.exists():
            raise SystemExit(f"report: {root} does not exist; pass the sweep's results folder (SAVE)")
        for config_path in sorted(root.rglob(runfiles.CONFIG)):
            summary_path = config_path.parent / runfiles.SUMMARY
            summary = io.read_json(summary_path) if summary_path.exists() else None
            runs.append((config_path.parent, io.read_json(config_path), summary))
            seen.add(_run_key(config_path.parent))
    for root in roots:  # a record of a run whose folder was found too (SAVE/records beside SAVE/DATA) is that run
        for record in sorted(root.rglob("*" + RECORD_SUFFIX)):
            if _run_key(record.with_name(record.name[:-len(RECORD_SUFFIX)])) not in seen:
                runs.append((record, *read_record(record)))
    if not runs:
        raise SystemExit(f"report: no run folders (config.json) or records (*{RECORD_SUFFIX}) below "
                         f"{', '.join(paths)}")
    return runs


def _run_key(folder: Path) -> tuple[str, str, str]:
    """DATA, seedS and RUN of a run folder, or of the folder a record was written from."""
    return folder.parent.parent.name, folder.parent.name, folder.name


def cell_of(config: dict) -> tuple[str, float | None, str, str]:
    mode = config["mode"]
    if mode not in OPTIMIZER_OF_MODE:
        raise SystemExit(f"report: unknown --mode {mode!r} in a run's config.json")
    if mode not in PRIVATE_MODES:
        return config["data"], None, OPTIMIZER_OF_MODE[mode], "no DP"
    level = config["noise_multiplier"]
    if level is None:
        raise SystemExit("report: runs calibrated from --epsilon have no fixed noise level; Table 1 uses "
                         "--noise_multiplier (summarise such runs with python -m tools.summarize)")
    adaptive = config.get("ada_vn") or config.get("init_vn")
    return config["data"], float(level), OPTIMIZER_OF_MODE[mode], "DP + intermediaries" if adaptive else "DP"


def collect(runs: list[tuple[Path, dict, dict | None]]) -> dict[tuple, Cell]:
    """Cells of the implied grid, filled with the runs found."""
    cells: dict[tuple, Cell] = {}
    seeds, levels = defaultdict(set), defaultdict(set)
    for folder, config, summary in runs:
        key = cell_of(config)
        cell = cells.setdefault(key, Cell(*key))
        rest = tuple(sorted((k, json.dumps(v)) for k, v in config.items()
                            if k not in NOT_A_SETTING | CELL_FLAGS))
        cell.configs.add(rest)
        if len(cell.configs) > 1:
            a, b = sorted(cell.configs)[:2]
            differ = sorted({k for k, _ in set(a) ^ set(b)})
            raise SystemExit(f"report: runs with different flags ({', '.join('--' + d for d in differ)}) fall "
                             f"into the same Table 1 cell {key}; report their folders separately")
        if summary is None:
            cell.unfinished.append(config["seed"])
        else:
            cell.finished[config["seed"]] = (config, summary)
        seeds[key[0]].add(config["seed"])
        if key[1] is not None:
            levels[key[0]].add(key[1])
    for task in seeds:
        for name, *_ in OPTIMIZERS:
            grid = [(None, "no DP")] + [(z, s) for z in sorted(levels[task]) for s in SETTINGS[1:]]
            for level, setting in grid:
                cells.setdefault((task, level, name, setting), Cell(task, level, name, setting))
    return cells, seeds


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):  # an epsilon that is not finite (PLD/PRV beyond their range) stays inf
        return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def metrics_of(cells: dict[tuple, Cell], task: str) -> list[str]:
    """The task's test metrics, primary first, in Table 1's column order."""
    for cell in cells.values():
        if cell.task == task and cell.finished:
            summary = next(iter(cell.finished.values()))[1]
            names = sorted(summary["test"], key=lambda m: (m != summary["primary_metric"], COLUMN_ORDER.index(m)
                                                           if m in COLUMN_ORDER else len(COLUMN_ORDER), m))
            return names
    return []


def cell_row(cell: Cell, metrics: list[str], expected_seeds: set) -> dict:
    """One table row: metric and epsilon means/stds, and what is missing."""
    row = {"task": cell.task, "z": "" if cell.level is None else cell.level, "optimizer": cell.optimizer,
           "setting": cell.setting, "seeds": len(cell.finished), "seeds_expected": len(expected_seeds)}
    missing = sorted(expected_seeds - set(cell.finished) - set(cell.unfinished))
    row["missing_seeds"] = " ".join(map(str, missing))
    row["unfinished_seeds"] = " ".join(map(str, sorted(cell.unfinished)))
    summaries = [s for _, s in cell.finished.values()]
    for m in metrics:
        values = [s["test"][m] for s in summaries if m in s["test"]]
        row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(values) if values else ("", "")
    private = summaries and "privacy" in summaries[0]
    for unit in UNITS:
        for acc in ACCOUNTANTS:
            values = [s["privacy"]["epsilon"][unit][acc] for s in summaries] if private else []
            row[f"eps_{unit}_{acc}_mean"], row[f"eps_{unit}_{acc}_std"] = _mean_std(values) if values else ("", "")
    row["final_v_mean"] = float(np.mean([s["final_v"] for s in summaries])) if summaries else ""
    return row


def order_key(cell: Cell) -> tuple:
    names = [o[0] for o in OPTIMIZERS]
    return (cell.task, -1.0 if cell.level is None else cell.level, names.index(cell.optimizer),
            SETTINGS.index(cell.setting))


def build_rows(cells: dict[tuple, Cell], seeds: dict[str, set]) -> dict[str, list[dict]]:
    by_task: dict[str, list[dict]] = defaultdict(list)
    for cell in sorted(cells.values(), key=order_key):
        by_task[cell.task].append(cell_row(cell, metrics_of(cells, cell.task), seeds[cell.task]))
    return by_task


def _pm(row: dict, key: str, digits: int = 4) -> str:
    if row[f"{key}_mean"] == "":
        return "-"
    return f"{row[f'{key}_mean']:.{digits}f} ± {row[f'{key}_std']:.{digits}f}"


def markdown(by_task: dict[str, list[dict]], metrics: dict[str, list[str]]) -> str:
    lines = []
    for task, rows in by_task.items():
        header = ["noise", "optimizer", "setting", "seeds", *(LABELS.get(m, m) for m in metrics[task]),
                  "ε sub-client (RDP)",
                  "ε hospital (RDP)", "ε patient (RDP)", "final v"]
        lines += [f"**{task}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            seeds = f"{row['seeds']}/{row['seeds_expected']}"
            if row["missing_seeds"]:
                seeds += f" (missing seed {row['missing_seeds']})"
            if row["unfinished_seeds"]:
                seeds += f" (unfinished seed {row['unfinished_seeds']})"
            noise = "–" if row["z"] == "" else f"z = {row['z']:g}"
            if row["seeds"] == 0:
                values = ["missing"] * len(metrics[task]) + ["missing"] * 4
            else:
                values = [_pm(row, m) for m in metrics[task]]
                values += [_pm(row, "eps_subclient_rdp", 2), _pm(row, "eps_hospital_rdp", 2),
                           _pm(row, "eps_patient_rdp", 2), f"{row['final_v_mean']:.1f}"]
            lines.append("| " + " | ".join([noise, row["optimizer"], row["setting"], seeds, *values]) + " |")
        lines.append("")
    return "\n".join(lines)


def paper_layout(by_task: dict[str, list[dict]], metrics: dict[str, list[str]]) -> str:
    """Table 1 as the paper lays it out: one row per optimizer and its "+ intermediaries"
    row, one column per noise level, each cell the primary metric with the epsilon spent
    per sub-client (the paper's unit) and per hospital."""
    lines = []
    for task, rows in by_task.items():
        if not metrics[task]:
            continue
        metric = metrics[task][0]
        levels = sorted({r["z"] for r in rows if r["z"] != ""})
        lines += [f"**{task}**: test {LABELS.get(metric, metric)}, mean ± std over seeds; "
                  "(ε per sub-client / per hospital, RDP)", "",
                  "| " + " | ".join(["optimizer", "no DP", *(f"z = {z:g}" for z in levels)]) + " |",
                  "|" + "---|" * (2 + len(levels))]
        for name, *_ in OPTIMIZERS:
            for setting, label in (("DP", name), ("DP + intermediaries", "+ intermediaries")):
                cells = []
                if setting == "DP":
                    base = next((r for r in rows if r["optimizer"] == name and r["setting"] == "no DP"), None)
                    cells.append(_pm(base, metric, 3) if base and base["seeds"] else "missing")
                else:
                    cells.append("")
                for z in levels:
                    r = next((r for r in rows if r["optimizer"] == name and r["setting"] == setting and r["z"] == z),
                             None)
                    if r is None or not r["seeds"]:
                        cells.append("missing")
                        continue
                    cells.append(f"{_pm(r, metric, 3)} ({r['eps_subclient_rdp_mean']:.0f} / "
                                 f"{r['eps_hospital_rdp_mean']:.0f})")
                lines.append("| " + " | ".join([label, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(by_task: dict[str, list[dict]], metrics: dict[str, list[str]], path: Path) -> None:
    """Primary metric against epsilon (sub-client, and hospital) for every optimizer."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(by_task), 2, figsize=(10, 3.6 * len(by_task)), squeeze=False)
    colours = dict(zip([o[0] for o in OPTIMIZERS], ["C0", "C1", "C2", "C3"]))
    for ax_row, (task, rows) in zip(axes, by_task.items()):
        metric = metrics[task][0] if metrics[task] else None
        for ax, unit in zip(ax_row, ("subclient", "hospital")):
            for name, *_ in OPTIMIZERS:
                for setting, style in (("DP", "-"), ("DP + intermediaries", "--")):
                    pts = sorted((r[f"eps_{unit}_rdp_mean"], r[f"{metric}_mean"]) for r in rows
                                 if r["optimizer"] == name and r["setting"] == setting and r["seeds"])
                    if pts:
                        ax.plot(*zip(*pts), style, marker="o", color=colours[name],
                                label=f"{name}{' + intermediaries' if '+' in setting else ''}")
                no_dp = [r for r in rows if r["optimizer"] == name and r["setting"] == "no DP" and r["seeds"]]
                if no_dp:
                    ax.axhline(no_dp[0][f"{metric}_mean"], color=colours[name], linestyle=":", linewidth=1)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(f"ε per {'sub-client' if unit == 'subclient' else 'hospital'} (RDP)")
            ax.set_ylabel(f"test {metric}")
            ax.set_title(f"{task}: dotted = no DP")
        ax_row[0].legend(fontsize=7)
    fig.tight_layout()
    io.write_figure(path, fig)
    plt.close(fig)


def partial_note(by_task: dict[str, list[dict]]) -> str:
    """What the tables lack ('' when every cell holds every seed)."""
    rows = [r for task_rows in by_task.values() for r in task_rows]
    expected = sum(r["seeds_expected"] for r in rows)
    finished = sum(r["seeds"] for r in rows)
    if finished == expected:
        return ""
    return (f"{finished} of {expected} runs of the grid are finished; cells marked missing or short of seeds are "
            "from an interrupted or incomplete sweep: run the sweep's command again to complete them.")


def report(paths: list[str], out: str | None) -> str:
    cells, seeds = collect(find_runs(paths))
    by_task = build_rows(cells, seeds)
    metrics = {task: metrics_of(cells, task) for task in by_task}
    text = paper_layout(by_task, metrics) + "\n" + markdown(by_task, metrics)
    short = partial_note(by_task)
    if short:
        print(f"report: {short}", file=sys.stderr)
        text = f"**Partial results.** {short}\n\n" + text
    if out:
        out_path = Path(out)
        io.write_text(out_path.with_suffix(".md"), text)
        rows = [r for task_rows in by_task.values() for r in task_rows]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        io.write_csv(out_path.with_suffix(".csv"), fields, rows)
        plot(by_task, metrics, out_path.with_suffix(".png"))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for the layout.")
    p.add_argument("paths", nargs="+", help="results folders of a sweep (searched recursively for run folders)")
    p.add_argument("--out", default=None, help="write OUT.md, OUT.csv and OUT.png (default: print Markdown only)")
    args = p.parse_args(argv)
    print(report(args.paths, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
