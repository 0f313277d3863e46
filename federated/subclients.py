"""Hospitals and their sub-clients ("intermediaries", Jiang et al., MICCAI 2023, Sec. 2.2).

Each hospital's training set is cut into sub-clients that train and are clipped as
separate units. A record's sub-client is chosen by a keyed hash of the record's content:
sub-client = H_key(record) mod v. Adding or removing one record therefore changes one
sub-client of one hospital and leaves every other record where it was, which the patient
unit of the privacy ledger relies on (a split seeded by the hospitals' sizes would move
many records when one is added). The key is secret (from the seed, or from the OS under
--secure_rng). Sizes follow a multinomial, so sub-clients differ a little in size.

`--subclient_split paper` instead draws the paper's split (its split_dataset): int(n/v)
records per sub-client at random without replacement, the n mod v left over unused until
the next split. One patient added can then change every sub-client of its hospital, which
the patient unit is charged for (privacy/events.py).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from datasets.base import Split


def allocate_subclients(train_sizes: list[int], per_hospital: int, *, balance: bool) -> list[int]:
    """Number of sub-clients per hospital.

    Default: `per_hospital` everywhere. With `balance` (the paper's --balance_split) the
    same total N * v is handed out greedily to whichever hospital currently has the
    largest sub-clients, so sub-client sizes even out across hospitals of unequal size.
    """
    counts = [per_hospital] * len(train_sizes)
    if not balance:
        return counts
    counts = [1] * len(train_sizes)
    for _ in range(per_hospital * len(train_sizes) - len(train_sizes)):
        largest = max(range(len(counts)), key=lambda h: train_sizes[h] / counts[h])
        counts[largest] += 1
    return counts


def record_keys(split: Split, secret: bytes) -> np.ndarray:
    """A 64-bit keyed hash (BLAKE2b) of each record's image and target."""
    images = split.images.detach().cpu().contiguous().numpy()
    targets = split.targets.detach().cpu().contiguous().numpy()
    keys = np.empty(len(split), dtype=np.uint64)
    for i in range(len(split)):
        h = hashlib.blake2b(images[i].tobytes(), key=secret, digest_size=8)
        h.update(targets[i].tobytes())
        keys[i] = int.from_bytes(h.digest(), "little")
    return keys


def assign(keys: np.ndarray, parts: int) -> list[torch.Tensor]:
    """Index sets of the `parts` sub-clients: record i goes to keys[i] mod parts."""
    if parts < 1:
        raise ValueError(f"cannot split into {parts} sub-clients")
    which = keys % np.uint64(parts)
    return [torch.from_numpy(np.nonzero(which == k)[0]).long() for k in range(parts)]


def split_hospitals(keys: list[np.ndarray], counts: list[int]) -> list[list[torch.Tensor]]:
    """Sub-client index sets for every hospital: result[h][k] indexes hospital h's train set."""
    return [assign(k, c) for k, c in zip(keys, counts)]


def paper_split(n: int, parts: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The paper's split: `parts` disjoint random sets of int(n / parts) records, each in
    record order (its sub-client loaders do not shuffle); the remainder is left out."""
    if parts < 1:
        raise ValueError(f"cannot split into {parts} sub-clients")
    size = n // parts
    drawn = torch.randperm(n, generator=gen)[:size * parts]
    return [part.sort().values for part in drawn.view(parts, size)]  # size 0: empty parts


def split_generator(secret: bytes, first_round: int, hospital: int) -> torch.Generator:
    """The generator of one hospital's paper split used from `first_round` on: keyed by the
    run's secret (from the OS under --secure_rng), so the draw is as secret as the hash's
    key, and by the hospital's key, so no hospital's draw depends on another's size."""
    message = first_round.to_bytes(8, "little") + hospital.to_bytes(8, "little")
    digest = hashlib.blake2b(message, key=secret[:64], digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
