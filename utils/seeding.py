"""Seeded random streams owned by the run (reproducible by default; secret on request).

Each consumer of randomness (data synthesis, client sampling, DP noise, the sub-client
assignment key) gets its own generator derived from (seed, stream name), so adding draws
to one stream never shifts another and a resumed run can restore each state. Local
training draws from a generator per (seed, round, hospital, sub-client), so a sub-client's
randomness does not depend on the order in which sub-clients run (nor on which other
hospitals exist: the hospital is its key, datasets/base.py). With `secure` (the
--secure_rng switch) the streams that privacy depends on (client sampling, noise, the
assignment key) are seeded from the OS's cryptographic source instead of the seed.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch

STREAMS = ("data", "sampling", "noise")
SECRET_STREAMS = ("sampling", "noise")  # unpredictable under --secure_rng


def stream_seed(seed: int, stream: str, *path: int) -> int:
    """A 63-bit seed for `stream` (and an optional path of integers), a pure function of them."""
    entropy = [seed, zlib.crc32(stream.encode()), *path]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def secure_generator() -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)


def make_streams(seed: int, *, secure: bool = False) -> dict[str, torch.Generator]:
    return {name: secure_generator() if secure and name in SECRET_STREAMS else make_generator(seed, name)
            for name in STREAMS}


def split_secret(seed: int, *, secure: bool = False) -> bytes:
    """The key of the sub-client assignment hash."""
    if secure:
        return os.urandom(32)
    return stream_seed(seed, "split").to_bytes(8, "little") * 4


def client_generator(seed: int, round_idx: int, hospital: int, subclient: int, *,
                     purpose: str = "update") -> torch.Generator:
    """The generator of one sub-client (hospital key, sub-client index) in one round, for one
    purpose ("update": local training; "local_noise": local update DP), so no two uses
    share a stream."""
    return torch.Generator().manual_seed(stream_seed(seed, f"client/{purpose}", round_idx, hospital, subclient))
