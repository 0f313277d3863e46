"""Seeded random streams owned by the run (DESIGN.md, privacy invariant 5).

Each consumer of randomness (data synthesis, sub-client split, client sampling, local
shuffling, DP noise) gets its own generator derived from (seed, stream name), so adding
draws to one stream never shifts another and a resumed run can restore each state.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

STREAMS = ("data", "split", "sampling", "local", "noise", "local_noise")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for `stream`, a pure function of (seed, stream)."""
    entropy = [seed, zlib.crc32(stream.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def make_streams(seed: int) -> dict[str, torch.Generator]:
    return {name: make_generator(seed, name) for name in STREAMS}
