"""What CKKS aggregation costs a round (privacy/he/ckks.py): per client, encrypting its
update and the bytes it sends; at the server, adding the ciphertexts; at a hospital,
decrypting the sum; and the cyclic ring's round (privacy/he/cyclic.py).

    python -m benchmarks.he                               # the repository's models, 5 hospitals
    python -m benchmarks.he --models cnn unet_small --hospitals 3

Measured on each model's size, and projected for DenseNet-121 (the paper's RSNA-ICH
model, 6,872,258 parameters) from the time and bytes per ciphertext measured on the
largest model run here: CKKS cost is linear in the number of ciphertexts (4096 floats
each at N = 8192).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from nets import build_model
from privacy.he.ckks import CkksParams, HospitalKeys, add_encrypted, encrypt
from privacy.he.cyclic import cyclic_sum

DENSENET121 = 6_872_258
MB = 1e6
IN_CHANNELS_OUTPUTS = {"unet_small": (1, 1), "unet": (1, 1)}


def parameters(model: str) -> int:
    cin, cout = IN_CHANNELS_OUTPUTS.get(model, (1, 2))
    return sum(p.numel() for p in build_model(model, cin, cout).parameters())


def one_round(keys: HospitalKeys, numel: int, hospitals: int) -> dict:
    rng = np.random.default_rng(0)
    updates = [rng.normal(scale=1e-3, size=numel) for _ in range(hospitals)]
    public = keys.public_context()
    start = time.perf_counter()
    encrypted = [encrypt(public, u) for u in updates]
    encrypt_s = (time.perf_counter() - start) / hospitals
    start = time.perf_counter()
    total = add_encrypted(public, encrypted)
    add_s = time.perf_counter() - start
    start = time.perf_counter()
    decrypted = keys.decrypt(total, numel)
    decrypt_s = time.perf_counter() - start
    start = time.perf_counter()
    ring = cyclic_sum(updates, keys, round_idx=0, rng=np.random.default_rng(1)) if hospitals >= 3 else None
    cyclic_s = time.perf_counter() - start if ring is not None else math.nan
    return {"params": numel, "ciphertexts": len(encrypted[0]), "encrypt_s": encrypt_s, "add_s": add_s,
            "decrypt_s": decrypt_s, "cyclic_s": cyclic_s, "mb_per_client": sum(map(len, encrypted[0])) / MB,
            "error": float(np.max(np.abs(decrypted - np.sum(updates, axis=0))))}


def projected(row: dict, numel: int, hospitals: int) -> dict:
    """Scale a measured row by the number of ciphertexts (the cost is linear in it)."""
    factor = math.ceil(numel / CkksParams().slots) / row["ciphertexts"]
    return {"params": numel, "ciphertexts": math.ceil(numel / CkksParams().slots),
            **{k: row[k] * factor for k in ("encrypt_s", "add_s", "decrypt_s", "cyclic_s", "mb_per_client")},
            "error": math.nan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.he", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lenet", "cnn_narrow", "cnn", "unet_small", "dpresnet_small"])
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.hospitals < 1:
        parser.error(f"--hospitals must be >= 1 (got {args.hospitals})")
    torch.set_num_threads(args.threads)
    keys = HospitalKeys(CkksParams())
    rows = {m: one_round(keys, parameters(m), args.hospitals) for m in args.models}
    largest = max(rows.values(), key=lambda r: r["params"])
    rows["densenet121 (projected)"] = projected(largest, DENSENET121, args.hospitals)
    print(f"CKKS (N = 8192, moduli 60/40, scale 2^40), {args.hospitals} hospitals, {args.threads} threads")
    print("| model | parameters | ciphertexts | encrypt s / client | add s (server) | decrypt s | cyclic round s | "
          "MB / client | max error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['params']:,} | {r['ciphertexts']} | {r['encrypt_s']:.3f} | {r['add_s']:.3f} | "
              f"{r['decrypt_s']:.3f} | {r['cyclic_s']:.3f} | {r['mb_per_client']:.1f} | {r['error']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
