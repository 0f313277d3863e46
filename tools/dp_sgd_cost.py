"""What DP-SGD costs: seconds per local epoch with and without `--dp_level sample`.

    python -m tools.dp_sgd_cost --data synthetic-cxr --model resnet9_small --epochs 3
    python -m tools.dp_sgd_cost --data synthetic-blood --model dpresnet --img_size 28

Same model, same initial weights, same hospital data; one warm-up epoch each, then the
median of --epochs timed epochs. Any fed_train.py data/model flag is accepted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from utils.seeding import client_generator
from federated.config import parse_config
from federated.adam import AdamMoments
from federated.loop import initial_state, subclient_data
from federated.setup import build_federation


def epoch_seconds(argv: list[str], epochs: int) -> tuple[list[float], str]:
    fed = build_federation(parse_config(argv + ["--rounds", "1", "--no_progress"]))
    state = initial_state(fed)
    shard = subclient_data(fed, state)[0][0]
    times = []
    for i in range(epochs + 1):
        if fed.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fresh = AdamMoments.zeros(1, state.params.numel(), dtype=state.params.dtype, device=state.params.device)
        fed.trainer.update(state.params, shard, fresh, lr=fed.cfg.lr, gen=client_generator(fed.cfg.seed, i, 0, 0))
        if fed.device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first epoch is a warm-up
            times.append(time.perf_counter() - start)
    return times, f"{len(shard)} images, {fed.device}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.dp_sgd_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per setting (after one warm-up)")
    p.add_argument("--sample_noise", default="1.0", help="DP-SGD noise multiplier for the private setting")
    args, flags = p.parse_known_args(argv)
    plain, where = epoch_seconds(flags, args.epochs)
    private, _ = epoch_seconds(flags + ["--dp_level", "sample", "--sample_noise", args.sample_noise], args.epochs)
    a, b = statistics.median(plain), statistics.median(private)
    print(f"{' '.join(flags) or 'defaults'} ({where}, {torch.get_num_threads()} threads): "
          f"non-private {a:.3f} s/epoch, DP-SGD {b:.3f} s/epoch, ratio {b / a:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
