"""Size of a run's last.pt at the paper's scale, from the state's shapes, checked by
writing the stacked Adam state of a few sub-clients for real.

    python -m benchmarks.checkpoint_size                       # DenseNet-121 (RSNA-ICH), paper U-Net
    python -m benchmarks.checkpoint_size --v 8 11 14

During a run last.pt holds every sub-client's Adam moments (3 x P float32 each, plus a step
count), the global and best parameters, and the server optimizer's state (FedAdam and
DP2-RMSProp keep two more vectors). It is written every --ckpt_every rounds. The last.pt a
finished run keeps drops the moments unless --keep_optimizer.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from federated.adam import SubclientMoments
from nets import build_model

# label: (model, input channels, outputs, hospitals in the paper's federation)
MODELS = {"DenseNet-121 (RSNA-ICH)": ("densenet121", 3, 2, 20), "paper U-Net (prostate)": ("unet", 1, 1, 6)}
GB = 1e9


def measured_bytes_per_subclient(numel: int, subclients: int) -> tuple[float, float]:
    """Bytes per sub-client and seconds per GB of a real torch.save of stacked state."""
    store = SubclientMoments.fresh([subclients], numel, dtype=torch.float32, device=torch.device("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.pt")
        start = time.perf_counter()
        torch.save(store.state_dict(), path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        seconds = time.perf_counter() - start
        size = os.path.getsize(path)
    return size / subclients, seconds / (size / GB)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--v", type=int, nargs="+", default=[8, 11, 14], help="sub-clients per hospital")
    p.add_argument("--measure", type=int, default=3, help="sub-clients written for real to check the formula (0: skip)")
    args = p.parse_args(argv)
    print("| model | P | v | sub-clients | last.pt during a run | writes per 100 rounds, before -> now | "
          "kept per finished run, before -> now (FedAvg / FedAdam) |")
    print("|---|---|---|---|---|---|---|")
    for label, (name, cin, cout, hospitals) in MODELS.items():
        numel = sum(t.numel() for t in build_model(name, cin, cout).state_dict().values() if t.is_floating_point())
        moments = 3 * 4 * numel + 8  # three float32 moments and a float64 step per sub-client
        params = 2 * 4 * numel       # the global and the best parameters
        for v in args.v:
            s = hospitals * v
            during = s * moments + params
            print(f"| {label} | {numel:,} | {v} | {s} | {during / GB:.1f} GB | 100 -> 10 (--ckpt_every 10) | "
                  f"{during / GB:.1f} GB -> {params / 1e6:.0f} MB / {2 * params / 1e6:.0f} MB |")
        if args.measure:
            per, seconds_per_gb = measured_bytes_per_subclient(numel, args.measure)
            print(f"|   measured: {per / 1e6:.2f} MB per sub-client written (formula {moments / 1e6:.2f} MB), "
                  f"{seconds_per_gb:.1f} s per GB on this machine | | | | | | |")


if __name__ == "__main__":
    main()
