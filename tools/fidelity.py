"""The intermediary fidelity study: does splitting hospitals help, and how close does the
adaptive rule get to the best fixed split?

    python -m tools.fidelity choose experiments/intermediaries/runs/grid      # server learning rates
    python -m tools.fidelity report RUNS/table1 RUNS/fixed_v --out experiments/intermediaries/results/fidelity

`choose` picks, for each server optimizer in a learning-rate grid (non-private runs), the
rate with the best mean validation score (the run's --select_metric at its selected round;
the test set is never read) and prints it as shell assignments.

`report` places every private run below the folders in a cell (optimizer x noise level x
split: fixed v = 1 (DP alone), 2, 4, 8 or adaptive) and writes, per optimizer and noise
level: DP alone, the adaptive rule (with its mean final v), the oracle (the fixed v with
the best mean validation score; its test score is reported) and what each costs in
hospital-level epsilon; non-private runs at v = 1 give the reference column, and
non-private runs at fixed v > 1 a second table: what splitting costs without noise. Writes OUT.md, OUT.csv and
OUT.png (test score against v, one panel per optimizer).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from utils import io
from tools.report import OPTIMIZER_OF_MODE, OPTIMIZERS, PRIVATE_MODES, _mean_std, find_runs

SERVER_LR_FLAG = {"fedadam": "adam_lr", "fed2rmsprop": "rmsprop_lr"}
ENV_NAME = {"adam_lr": "ADAM_LR", "rmsprop_lr": "RMSPROP_LR"}
FIXED_V = (1, 2, 4, 8)


def _selection_value(config: dict, summary: dict) -> float:
    metric = config.get("select_metric") or summary["primary_metric"]
    return float(summary["val"][metric])


def choose(root: str) -> dict[str, float]:
    """The server learning rate of each grid optimizer with the best mean validation score."""
    scores: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _, config, summary in find_runs([root]):
        flag = SERVER_LR_FLAG.get(config["mode"])
        if flag is None or summary is None:
            continue
        scores[flag][float(config[flag])].append(_selection_value(config, summary))
    if not scores:
        raise SystemExit(f"fidelity: no finished fedadam / fed2rmsprop runs below {root}")
    chosen = {}
    for flag, by_lr in sorted(scores.items()):
        means = {lr: float(np.mean(v)) for lr, v in by_lr.items()}
        chosen[flag] = max(means, key=lambda lr: (means[lr], -lr))
        grid = ", ".join(f"{lr:g}: {m:.4f}" for lr, m in sorted(means.items()))
        print(f"# --{flag}: mean validation score per rate {{{grid}}} -> {chosen[flag]:g}", file=sys.stderr)
    return chosen


def split_of(config: dict) -> str | None:
    """'v=K' for a fixed split, 'adaptive' for --ada_vn / --init_vn; None for other runs."""
    if config.get("ada_vn") or config.get("init_vn"):
        return "adaptive"
    v = int(config.get("virtual_clients", 1))
    return f"v={v}" if v in FIXED_V else None


def collect(roots: list[str]) -> tuple[dict, dict, str]:
    """{(optimizer, z, split): [(config, summary)]}, {optimizer: [summary]} (no DP), metric."""
    private, public, metric = defaultdict(list), defaultdict(list), None
    for _, config, summary in find_runs(roots):
        if summary is None or config["mode"] not in OPTIMIZER_OF_MODE:
            continue
        metric = metric or summary["primary_metric"]
        name = OPTIMIZER_OF_MODE[config["mode"]]
        if config["mode"] not in PRIVATE_MODES:
            public[(name, split_of(config))].append(summary)
            continue
        split = split_of(config)
        if split is not None and config.get("noise_multiplier") is not None:
            private[(name, float(config["noise_multiplier"]), split)].append((config, summary))
    if metric is None:
        raise SystemExit(f"fidelity: no finished runs below {', '.join(roots)}")
    return private, public, metric


def _stats(runs: list[tuple[dict, dict]], metric: str) -> dict:
    test = _mean_std([s["test"][metric] for _, s in runs])
    val = float(np.mean([_selection_value(c, s) for c, s in runs]))
    eps = _mean_std([s["privacy"]["epsilon"]["hospital"]["rdp"] for _, s in runs])
    eps_sub = _mean_std([s["privacy"]["epsilon"]["subclient"]["rdp"] for _, s in runs])
    return {"test": test, "val": val, "eps_hospital": eps, "eps_subclient": eps_sub, "seeds": len(runs),
            "final_v": float(np.mean([s["final_v"] for _, s in runs]))}


def build_rows(private: dict, public: dict, metric: str) -> list[dict]:
    rows = []
    levels = sorted({z for _, z, _ in private})
    for name, *_ in OPTIMIZERS:
        reference = _mean_std([s["test"][metric] for s in public[(name, "v=1")]]) if public.get((name, "v=1")) \
            else None
        for z in levels:
            cells = {split: _stats(runs, metric) for (n, lz, split), runs in private.items() if n == name and lz == z}
            if not cells:
                continue
            fixed = {s: c for s, c in cells.items() if s.startswith("v=")}
            oracle = max(fixed, key=lambda s: fixed[s]["val"]) if fixed else None
            row = {"optimizer": name, "z": z, "metric": metric,
                   "no_dp": reference[0] if reference else "", "no_dp_std": reference[1] if reference else ""}
            for split, c in sorted(cells.items()):
                row[f"{split}_test"], row[f"{split}_std"] = c["test"]
                row[f"{split}_eps_hospital"] = c["eps_hospital"][0]
                row[f"{split}_eps_subclient"] = c["eps_subclient"][0]
                row[f"{split}_seeds"] = c["seeds"]
            if "adaptive" in cells:
                row["adaptive_final_v"] = cells["adaptive"]["final_v"]
            if oracle:
                row["oracle"] = oracle
                row["oracle_test"] = fixed[oracle]["test"][0]
            rows.append(row)
    return rows


def splitting_rows(public: dict, metric: str) -> list[dict]:
    """Without DP: what splitting alone costs (fixed v, no noise)."""
    rows = []
    for name, *_ in OPTIMIZERS:
        row = {"optimizer": name, "metric": metric}
        for v in FIXED_V:
            runs = public.get((name, f"v={v}"), [])
            if runs:
                row[f"v={v}_test"], row[f"v={v}_std"] = _mean_std([s["test"][metric] for s in runs])
        if len(row) > 4:  # more than v = 1
            rows.append(row)
    return rows


def splitting_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["", f"Without DP (the cost of splitting alone): test {rows[0]['metric']}, mean ± std over seeds", "",
             "| optimizer | " + " | ".join(f"v={v}" for v in FIXED_V) + " |", "|" + "---|" * (1 + len(FIXED_V))]
    for r in rows:
        cells = [f"{r[f'v={v}_test']:.3f} ± {r[f'v={v}_std']:.3f}" if f"v={v}_test" in r else "–" for v in FIXED_V]
        lines.append("| " + " | ".join([r["optimizer"], *cells]) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, split: str) -> str:
    if f"{split}_test" not in row:
        return "missing"
    return f"{row[f'{split}_test']:.3f} ± {row[f'{split}_std']:.3f} (ε {row[f'{split}_eps_hospital']:.0f})"


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "no private runs found"
    metric = rows[0]["metric"]
    header = ["optimizer", "z", "no DP", "DP alone (v=1)", "v=2", "v=4", "v=8", "adaptive (final v)",
              "oracle v", "adaptive − DP alone", "adaptive − oracle"]
    lines = [f"test {metric}, mean ± std over seeds (ε: hospital-level, RDP); oracle: the fixed v with the best "
             "mean validation score", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        adaptive = _cell(r, "adaptive")
        if "adaptive_final_v" in r:
            adaptive += f" ({r['adaptive_final_v']:.1f})"
        gain = f"{r['adaptive_test'] - r['v=1_test']:+.3f}" if "adaptive_test" in r and "v=1_test" in r else "–"
        gap = f"{r['adaptive_test'] - r['oracle_test']:+.3f}" if "adaptive_test" in r and "oracle_test" in r else "–"
        no_dp = f"{r['no_dp']:.3f} ± {r['no_dp_std']:.3f}" if r["no_dp"] != "" else "missing"
        lines.append("| " + " | ".join([r["optimizer"], f"{r['z']:g}", no_dp, _cell(r, "v=1"), _cell(r, "v=2"),
                                         _cell(r, "v=4"), _cell(r, "v=8"), adaptive, r.get("oracle", "–"),
                                         gain, gap]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o[0] for o in OPTIMIZERS if any(r["optimizer"] == o[0] for r in rows)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for colour, r in zip(("C0", "C1", "C2", "C3"), [r for r in rows if r["optimizer"] == name]):
            pts = [(v, r[f"v={v}_test"], r[f"v={v}_std"]) for v in FIXED_V if f"v={v}_test" in r]
            if pts:
                vs, means, stds = zip(*pts)
                ax.errorbar(vs, means, yerr=stds, marker="o", color=colour, capsize=2, label=f"z = {r['z']:g}")
            if "adaptive_test" in r:
                ax.errorbar([r["adaptive_final_v"]], [r["adaptive_test"]], yerr=[r["adaptive_std"]], marker="*",
                            markersize=11, color=colour, linestyle="none")
            if r["no_dp"] != "":
                ax.axhline(r["no_dp"], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(FIXED_V, [str(v) for v in FIXED_V])
        ax.set_xlabel("sub-clients per hospital v")
        ax.set_title(f"{name} (★ adaptive at its mean final v; dotted: no DP)", fontsize=8)
    axes[0][0].set_ylabel(f"test {rows[0]['metric']}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    io.write_figure(path, fig)
    plt.close(fig)


def report(roots: list[str], out: str | None) -> str:
    private, public, metric = collect(roots)
    rows = build_rows(private, public, metric)
    text = markdown(rows) + splitting_markdown(splitting_rows(public, metric))
    if out:
        out_path = Path(out)
        io.write_text(out_path.with_suffix(".md"), text)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        io.write_csv(out_path.with_suffix(".csv"), fields, rows)
        plot(rows, out_path.with_suffix(".png"))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fidelity", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("choose", help="server learning rates from a non-private grid, on validation")
    c.add_argument("root")
    r = sub.add_parser("report", help="the study's table, CSV and plot")
    r.add_argument("roots", nargs="+", help="the study's run folders (Table 1 sweep and fixed splits)")
    r.add_argument("--out", default=None, help="write OUT.md, OUT.csv and OUT.png (default: print only)")
    args = p.parse_args(argv)
    if args.command == "choose":
        for flag, lr in choose(args.root).items():
            print(f"{ENV_NAME[flag]}={lr:g}")
        return 0
    print(report(args.roots, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
