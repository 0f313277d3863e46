"""The fairness part of a sweep report (the chest-radiograph study): tables of the metrics at
the validation-chosen thresholds with their intervals, what each privacy level costs against
no DP, the Pearson correlation of epsilon with each parity difference, and a plot.

Cells read `mean ± sd (low–high)`: the mean and sample standard deviation over seeds of a
run's estimate, and in brackets the mean over seeds of its 95% bootstrap interval (over
test images, utils/fairness.py). Costs are paired by seed (the same data and test set):
the mean difference to the run without DP and its 95% t-interval over seeds. The
correlation is over the private runs (finite epsilon, one point per run) with the p-value
of scipy's pearsonr and a 95% percentile-bootstrap interval over runs (1,000 resamples).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, t as student_t

OVERALL = ("auc", "acc", "sen", "spe")
CORRELATION_RESAMPLES = 1000


def metrics(summary: dict) -> dict[str, dict]:
    """A run's fairness metrics; an undefined value (NaN, written as null) reads as NaN."""
    found = summary.get("fairness", {}).get("metrics", {})
    return {name: {k: math.nan if v is None else v for k, v in m.items()} for name, m in found.items()}


def attribute_groups(runs: list[dict]) -> dict[str, list[str]]:
    """{attribute: [groups in the dataset's order]}, from the runs' fairness results."""
    found: dict[str, list[str]] = {}
    for s in runs:
        for attr, names in s.get("fairness", {}).get("groups", {}).items():
            found.setdefault(attr, [])
            found[attr] += [g for g in names if g not in found[attr]]
    return found


def cell(summaries: list[dict], name: str, sign: str = "") -> str:
    found = [metrics(s)[name] for s in summaries if name in metrics(s)]
    values = [m["value"] for m in found if not math.isnan(m["value"])]
    if not values:
        return "-"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    low, high = (_mean([m[k] for m in found]) for k in ("low", "high"))
    return f"{np.mean(values):{sign}.3f} ± {sd:.3f} ({low:{sign}.3f}–{high:{sign}.3f})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def study_tables(labels: list[str], groups: list[list[dict]]) -> str:
    """`labels[i]`: the setting of `groups[i]` (its runs' summaries, one per seed)."""
    all_runs = [s for runs in groups for s in runs]
    text = "Overall, at the Youden thresholds chosen on validation:\n\n"
    text += _table(["setting", "seeds", "AUC", "accuracy", "sensitivity", "specificity"],
                   [[label, str(len(runs))] + [cell(runs, m) for m in OVERALL] for label, runs in zip(labels, groups)])
    findings = sorted({n.split("=", 1)[1] for s in all_runs for n in metrics(s) if n.startswith("auc_finding=")})
    if findings:
        text += ("\nEach finding: AUC, and sensitivity / specificity at its threshold (mean over seeds); the last "
                 "column is the lowest sensitivity or specificity of any finding in any run (0: a constant "
                 "predictor):\n\n")
        text += _table(["setting"] + findings + ["lowest"], [
            [label] + [_finding_cell(runs, f) for f in findings] + [_lowest_rate(runs, findings)]
            for label, runs in zip(labels, groups)])
    for attr, names in attribute_groups(all_runs).items():
        for what, prefix, sign in (("accuracy", "acc_", ""), ("statistical parity difference (SPD) of accuracy",
                                                             "spd_acc_", "+")):
            text += f"\nBy {attr}, {what} of each group:\n\n"
            text += _table(["setting"] + names, [[label] + [cell(runs, f"{prefix}{attr}={g}", sign) for g in names]
                                                 for label, runs in zip(labels, groups)])
    return text


def _mean(values: list[float]) -> float:
    """The mean of the defined values (NaN if none is)."""
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _mean_of(runs: list[dict], name: str) -> float:
    return _mean([metrics(s)[name]["value"] for s in runs if name in metrics(s)])


def _finding_cell(runs: list[dict], finding: str) -> str:
    auc, sen, spe = (_mean_of(runs, f"{m}_finding={finding}") for m in ("auc", "sen", "spe"))
    return f"{auc:.3f}; {sen:.2f} / {spe:.2f}"


def _lowest_rate(runs: list[dict], findings: list[str]) -> str:
    rates = [metrics(s)[f"{m}_finding={f}"]["value"] for s in runs for f in findings for m in ("sen", "spe")
             if f"{m}_finding={f}" in metrics(s)]
    return f"{min(rates):.3f}" if rates else "-"


def paired_cost(private: list[tuple[int, dict]], baseline: dict[int, dict], name: str) -> str:
    """Mean over seeds of (private - no DP) for metric `name`, with its 95% t-interval."""
    diffs = [metrics(s)[name]["value"] - metrics(baseline[seed])[name]["value"]
             for seed, s in private if seed in baseline and name in metrics(s) and name in metrics(baseline[seed])]
    diffs = [d for d in diffs if not math.isnan(d)]
    if not diffs:
        return "-"
    mean = float(np.mean(diffs))
    if len(diffs) < 2:
        return f"{mean:+.3f}"
    half = student_t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / math.sqrt(len(diffs))
    return f"{mean:+.3f} ({mean - half:+.3f} to {mean + half:+.3f})"


def cost_table(rows: list[tuple[str, list[tuple[int, dict]], dict[int, dict]]]) -> str:
    """What each private setting costs against the run without DP of the same seed. rows:
    (setting, [(seed, summary)], {seed: summary of the run without DP})."""
    rows = [r for r in rows if r[2]]
    if not rows:
        return ""
    spds = [f"spd_acc_{a}={g}" for a, names in attribute_groups([s for _, runs, _ in rows for _, s in runs]).items()
            for g in names]
    header = ["setting", "Δ AUC", "Δ accuracy"] + [f"Δ SPD {n[8:]}" for n in spds]
    cells = [[label] + [paired_cost(runs, base, n) for n in ("auc", "acc", *spds)] for label, runs, base in rows]
    return ("\nCost against no DP, paired by seed (mean difference and its 95% t-interval over seeds; "
            "Δ SPD > 0 moves the group's accuracy up relative to the others):\n\n" + _table(header, cells))


def correlations(points: list[tuple[float, dict]], *, seed: int = 0) -> dict[str, dict]:
    """Pearson r of epsilon with each parity difference over the private runs (points:
    (epsilon spent, summary)), its p-value and a bootstrap interval over runs."""
    # one run order for every name (by epsilon, then seed), so resamples are the same runs for all
    private = sorted(((eps, s) for eps, s in points if math.isfinite(eps)),
                     key=lambda p: (p[0], p[1].get("fairness", {}).get("seed", 0)))
    names = [f"spd_acc_{a}={g}" for a, groups in attribute_groups([s for _, s in private]).items() for g in groups]
    out = {}
    for name in names:
        rng = np.random.default_rng(seed)
        pairs = np.array([(eps, metrics(s)[name]["value"]) for eps, s in private if name in metrics(s)])
        if len(pairs) < 3 or np.isnan(pairs).any() or pairs[:, 0].std() == 0 or pairs[:, 1].std() == 0:
            continue
        r, p = pearsonr(pairs[:, 0], pairs[:, 1])
        resampled = []
        for idx in rng.integers(0, len(pairs), size=(CORRELATION_RESAMPLES, len(pairs))):
            x, y = pairs[idx, 0], pairs[idx, 1]
            if x.std() > 0 and y.std() > 0:
                resampled.append(np.corrcoef(x, y)[0, 1])
        low, high = np.percentile(resampled, [2.5, 97.5]) if resampled else (math.nan, math.nan)
        out[name] = {"r": float(r), "p": float(p), "low": float(low), "high": float(high), "runs": len(pairs)}
    return out


def correlation_table(corr: dict[str, dict]) -> str:
    if not corr:
        return ""
    rows = [[n, f"{c['r']:+.3f}", f"{c['p']:.3g}", f"{c['low']:+.3f} to {c['high']:+.3f}", str(c["runs"])]
            for n, c in corr.items()]
    return ("\nPearson correlation of epsilon spent with each parity difference (private runs; interval: "
            f"bootstrap over runs, {CORRELATION_RESAMPLES} resamples):\n\n"
            + _table(["parity difference", "r", "p", "95% interval", "runs"], rows))


def plot_parity(points: list[tuple[float, dict]], path: Path) -> None:
    """SPD of every group against epsilon: one panel per attribute, each run a point with its
    bootstrap interval, the mean over seeds joined by a line; no DP at the right, marked ∞."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = attribute_groups([s for _, s in points])
    if not groups:
        return
    # runs are placed at their epsilon spent to two significant digits (9.985 -> 10), no DP at the right
    levels = sorted({float(f"{eps:.2g}") for eps, _ in points if math.isfinite(eps)})
    where_inf = max(levels) * 3 if levels else 1.0

    def position(eps: float) -> float:
        return float(f"{eps:.2g}") if math.isfinite(eps) else where_inf
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (attr, names) in zip(axes[0], groups.items()):
        for k, g in enumerate(names):
            name = f"spd_acc_{attr}={g}"
            found = [(position(eps), metrics(s)[name]) for eps, s in points if name in metrics(s)]
            if not found:
                continue
            xs = np.array([x for x, _ in found])
            ys = np.array([m["value"] for _, m in found])
            errors = [[m["value"] - m["low"] for _, m in found], [m["high"] - m["value"] for _, m in found]]
            line = ax.errorbar(xs * (1 + 0.04 * (k - len(names) / 2)), ys, yerr=errors, fmt="o", ms=3, alpha=0.5,
                               capsize=2)
            at = sorted(set(xs))
            ax.plot(at, [ys[xs == x].mean() for x in at], "-", color=line[0].get_color(), label=g)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(levels + [where_inf], [f"{e:g}" for e in levels] + ["∞"])
        ax.minorticks_off()
        ax.set_xlabel("ε spent (sample-level DP-SGD)")
        ax.set_ylabel("SPD of accuracy")
        ax.set_title(f"Statistical parity difference by {attr}")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    tmp.replace(path)
