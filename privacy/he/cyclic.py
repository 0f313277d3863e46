"""Cyclic aggregation (the PPPML-HMI protocol, with its flaws fixed): each round one
hospital, rotating with the round, starts the ring. It encrypts its weighted update plus a
random float64 mask under the hospitals' public key; each hospital in turn adds its own
encrypted update to the running ciphertext (the server only relays ciphertexts); back at
the start, the initiator decrypts and removes the mask.

Who learns what: the server sees ciphertexts only. Every hospital holds the secret key,
so the one that receives the running ciphertext could decrypt the partial sum plus the
mask: the mask (uniform in [-M, M] per coordinate, float64; the published code added it
in float32) hides it up to a statistical distance of about B / M per coordinate for
updates bounded by B. Two colluding hospitals on either side of a third learn its update
(the difference of what they saw); the initiator learns the sum, so with two hospitals it
would learn the other's update, and fewer than 3 are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from privacy.he.ckks import HospitalKeys, add_encrypted, encrypt

MASK_BOUND = 1e3  # M: the mask is uniform in [-M, M] per coordinate


class CyclicAbort(ValueError):
    """A ring the protocol cannot run safely; the message says why and what to use."""


def initiator(round_idx: int, hospitals: int) -> int:
    """The hospital that starts (and finishes) round `round_idx`'s ring."""
    return round_idx % hospitals


@dataclass
class CyclicResult:
    total: np.ndarray                 # the decrypted sum [d], float64
    initiator: int
    hops: list[tuple[int, list[bytes]]] = field(default_factory=list)  # (sender, the ciphertext it sent)
    mask_dtype: type = np.float64


def cyclic_sum(updates: list[np.ndarray], keys: HospitalKeys, *, round_idx: int, rng: np.random.Generator,
               mask_bound: float = MASK_BOUND, relay_noise: np.ndarray | None = None) -> CyclicResult:
    """The sum of the hospitals' (already weighted) updates through the ring. `relay_noise`:
    what the server, relaying the last ciphertext back to the initiator, encrypts under the
    public key and adds (the central noise), so the initiator decrypts no sum without it."""
    n = len(updates)
    if n < 3:
        raise CyclicAbort(f"cyclic aggregation needs at least 3 hospitals (got {n}): with 2 would let the initiator "
                          "read the other's update as the sum minus its own; use --secure_agg ckks or secagg+")
    public = keys.public_context()
    start = initiator(round_idx, n)
    d = len(updates[start])
    mask = rng.uniform(-mask_bound, mask_bound, size=d).astype(np.float64)
    running = encrypt(public, np.asarray(updates[start], dtype=np.float64) + mask)
    hops = [(start, running)]
    for k in range(1, n):
        sender = (start + k) % n
        running = add_encrypted(public, [running, encrypt(public, updates[sender])])
        hops.append((sender, running))
    if relay_noise is not None:
        running = add_encrypted(public, [running, encrypt(public, relay_noise)])
    total = keys.decrypt(running, d) - mask
    return CyclicResult(total, start, hops, mask.dtype.type)
