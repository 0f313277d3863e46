"""What secure aggregation costs a round: bytes per client, client and server protocol time,
and the ratio to the plain weighted sum, for 5, 10 and 20 hospitals (one input each).

    python -m benchmarks.secagg                          # DPResNet (4.8M parameters)
    python -m benchmarks.secagg --model dpresnet_small --hospitals 5 10 --neighbours 4

Each input is a clipped update of the model's size, weighted, encoded into the ring
(rotation, rounding; with --noise_at clients also its Skellam share), summed by SecAgg+
and decoded, exactly as a run does it (privacy/secagg/). "Plain" is the weighted sum the
server computes without it. Client time is per client (all clients' protocol steps and
encodings divided by their number); server time is the routing, unmasking and decoding.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nets import build_model
from privacy.mechanism import weighted_sum
from privacy.secagg.aggregate import RingRound, SecAggSettings, SecureAggregation
from privacy.secagg.distributed import DistributedNoise

MB = 1e6


def one_round(numel: int, hospitals: int, neighbours: int, bits: int, distributed: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    updates = [torch.randn(numel, generator=gen) for _ in range(hospitals)]
    updates = [u / torch.linalg.vector_norm(u) for u in updates]  # clipped at C = 1
    weights = torch.full((hospitals,), 1.0 / hospitals)
    start = time.perf_counter()
    plain = weighted_sum(updates, weights, numel, torch.device("cpu"))
    plain_s = time.perf_counter() - start

    secure = SecureAggregation(SecAggSettings(neighbours=neighbours, bits=bits), seed=0)
    noise = DistributedNoise(1.0, 5.0) if distributed else None
    if noise is None:
        code = secure.code(0, numel, update_norm=1.0, side_norm=2 ** 0.5, clients=hospitals)
        ring = RingRound(code)
    else:
        w = 1.0 / hospitals
        code = secure.code(0, numel, update_norm=1.0, side_norm=w * noise.side_scale, clients=hospitals,
                           noise_std=noise.central_std(1.0, w))
        ring = RingRound(code, noise.input_bound(code, 1.0, w), noise.share_mu(code, 1.0, w, hospitals),
                         w * noise.side_scale, noise.input_norm(1.0, w))
    start = time.perf_counter()
    sides = (1.0, 1.0) if ring.side_scale is None else (ring.side_scale, 0.0)  # a clipped norm of 1
    inputs = [secure.encode(ring, u * weights[k], sides, torch.Generator().manual_seed(k))
              for k, u in enumerate(updates)]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    summed = secure.combine(inputs, code, 0)
    combine_s = time.perf_counter() - start
    protocol = summed.protocol
    # with the noise at the clients this is the noise's share of the sum, not the rounding's
    error = float(torch.linalg.vector_norm(summed.total.float() - plain) / torch.linalg.vector_norm(plain))
    server_s = protocol.server_seconds + (combine_s - protocol.client_seconds - protocol.server_seconds)
    return {"hospitals": hospitals, "k": protocol.server.params.degree, "t": protocol.server.params.threshold,
            "sent_mb": np.mean(protocol.sent) / MB, "received_mb": np.mean(protocol.received) / MB,
            "plain_mb": numel * 4 / MB, "client_s": (encode_s + protocol.client_seconds) / hospitals,
            "server_s": server_s, "plain_s": plain_s, "error": error}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dpresnet", help="the model whose parameter count sets the update size")
    p.add_argument("--hospitals", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--neighbours", type=int, default=0, help="masking neighbours k (0: every other client)")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--noise_at", default="server", choices=("server", "clients"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    numel = sum(t.numel() for t in build_model(args.model, 3, 8).state_dict().values() if t.is_floating_point())
    print(f"{args.model}: {numel:,} parameters; Z_2^{args.bits}; noise at the {args.noise_at}")
    print("| hospitals | k | t | sent per client (MB) | received per client (MB) | plain upload (MB) | "
          "client time (s) | server time (s) | plain sum (s) | server / plain | relative error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.hospitals:
        r = one_round(numel, n, args.neighbours, args.bits, args.noise_at == "clients")
        print(f"| {n} | {r['k']} | {r['t']} | {r['sent_mb']:.1f} | {r['received_mb']:.3f} | {r['plain_mb']:.1f} | "
              f"{r['client_s']:.2f} | {r['server_s']:.2f} | {r['plain_s']:.3f} | "
              f"{r['server_s'] / r['plain_s']:.0f}x | {r['error']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
