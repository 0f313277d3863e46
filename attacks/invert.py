"""Gradient inversion against every protection: python -m attacks.invert --out DIR.

For each model, batch size, number of local steps and scenario (attacks/scenarios.py) it
runs one real round, reads what the attacker reads, runs iDLG and/or Inverting Gradients,
and scores the reconstruction (attacks/metrics.py). It writes DIR/results.csv (one row per
attack, per-image scores included), DIR/attacks.md (mean scores against the ledger's
epsilon) and one PNG per model, batch and steps: the originals on top, one row of
reconstructions per scenario and attack below.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from attacks.inversion import idlg, infer_label, inverting_gradients
from attacks.metrics import image_metrics, match_order
from attacks.scenarios import SCENARIOS, observe, round_flags
from utils import io

METHODS = ("idlg", "ig")
COLUMNS = ("model", "batch", "steps", "scenario", "method", "epsilon", "mse", "psnr", "ssim", "labels",
           "distance", "seconds", "per_image")


def attack(obs, method: str, *, iterations: int, restarts: int, seed: int) -> tuple[torch.Tensor, dict]:
    """One attack on one observation: the reconstruction and its row (without the setting)."""
    start = time.perf_counter()
    shape = tuple(obs.images.shape)
    if len(obs.labels) == 1:  # iDLG's label rule; a batch's labels are given (a stronger attacker)
        labels = torch.tensor([infer_label(obs.client, obs.view)])
        told = "inferred, right" if torch.equal(labels, obs.labels) else "inferred, wrong"
    else:
        labels, told = obs.labels.clone(), "given"
    if method == "idlg":
        recovered, distance = idlg(obs.client, obs.view, shape, labels, iterations=iterations, seed=seed)
    else:
        recovered, distance = inverting_gradients(obs.client, obs.view, shape, labels, box=obs.box,
                                                  iterations=iterations, restarts=restarts, seed=seed)
    scores = image_metrics(obs.images, recovered, obs.box)
    row = {"method": method, "epsilon": obs.epsilon, "mse": scores["mse"], "psnr": scores["psnr"],
           "ssim": scores["ssim"], "labels": told,
           "distance": distance, "seconds": time.perf_counter() - start,
           "per_image": json.dumps(scores["per_image"])}
    return recovered, row


def figure(path: Path, originals: torch.Tensor, rows: list[tuple[str, torch.Tensor]], box: tuple[float, float]) -> None:
    """Originals first, then one set of (order-matched) reconstructions per label: a row
    each for batches, a column each for a single image (one row, titled)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(len(originals), 8)
    sets = [("original", originals)] + [(label, match_order(originals, images)) for label, images in rows]
    single = shown == 1
    grid = (1, len(sets)) if single else (len(sets), shown)
    fig, axes = plt.subplots(*grid, figsize=(1.4 * grid[1] + (0 if single else 1.8), 1.4 * grid[0] + (0.6 if single else 0)),
                             squeeze=False)
    for r, (label, images) in enumerate(sets):
        for c in range(shown):
            ax = axes[0][r] if single else axes[r][c]
            ax.imshow(images[c, 0].float().cpu().numpy(), cmap="gray", vmin=box[0], vmax=box[1])
            ax.set_xticks([])
            ax.set_yticks([])
        if single:
            axes[0][r].set_title(label, fontsize=6)
        else:
            axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    io.write_figure(path, fig)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """Mean scores per setting, scenario and attack, against the ledger's epsilon."""
    lines = ["| model | batch | steps | scenario | epsilon | attack | PSNR (dB) | SSIM | MSE | labels | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = "none (inf)" if math.isinf(r["epsilon"]) else f"{r['epsilon']:.2f}"
        lines.append(f"| {r['model']} | {r['batch']} | {r['steps']} | {r['scenario']} | {eps} | {r['method']} | "
                     f"{r['psnr']:.1f} | {r['ssim']:.3f} | {r['mse']:.4f} | {r['labels']} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attacks.invert", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.csv, attacks.md and the figures")
    parser.add_argument("--models", default="lenet", help="comma-separated registered models (classification)")
    parser.add_argument("--batches", default="1", help="comma-separated batch sizes (images the target holds)")
    parser.add_argument("--steps", default="1", help="comma-separated local SGD steps on that batch")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--methods", default="idlg,ig", help="comma-separated: idlg, ig")
    parser.add_argument("--img_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1, help="the clients' local SGD learning rate")
    parser.add_argument("--idlg_iterations", type=int, default=300)
    parser.add_argument("--ig_iterations", type=int, default=500)
    parser.add_argument("--restarts", type=int, default=2, help="Inverting Gradients' restarts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown scenario or method {unknown[0]!r}; scenarios: {', '.join(SCENARIOS)}; methods: "
                     f"{', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = list(itertools.product(args.models.split(","), map(int, args.batches.split(",")),
                                      map(int, args.steps.split(","))))
    rows = []
    bar = tqdm(total=len(settings) * len(scenarios) * len(methods), desc="attacks", unit="attack", disable=None)
    for model, batch, steps in settings:
        pictures, originals, box = [], None, None
        for scenario in scenarios:
            obs = observe(round_flags(model=model, batch=batch, steps=steps, img_size=args.img_size, lr=args.lr,
                                      seed=args.seed) + SCENARIOS[scenario])
            originals, box = obs.images, obs.box
            for method in methods:
                iterations = args.idlg_iterations if method == "idlg" else args.ig_iterations
                recovered, row = attack(obs, method, iterations=iterations, restarts=args.restarts, seed=args.seed)
                rows.append({"model": model, "batch": batch, "steps": steps, "scenario": scenario, **row})
                pictures.append((f"{scenario}\n{method}", recovered))
                bar.set_postfix(scenario=scenario, psnr=f"{row['psnr']:.1f}")
                bar.update()
        figure(out / f"{model}_batch{batch}_steps{steps}.png", originals, pictures, box)
    bar.close()
    io.write_csv(out / "results.csv", list(COLUMNS), rows)
    io.write_text(out / "attacks.md", table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
