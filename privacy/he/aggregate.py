"""Encrypted aggregation as the release pipeline's combine (`--secure_agg ckks|cyclic`).

Each input is a sub-client's weighted, clipped update with its side values appended (as
under SecAgg+, privacy/secagg/aggregate.py); the message the pipeline's hooks see is that
input. `ckks`: every input is encrypted under the hospitals' public key, the server adds
the ciphertexts and the hospitals decrypt the sum. `cyclic`: the ring of
privacy/he/cyclic.py, one hop per input, the initiator rotating with the round. The server
holds the public context only; `last.received` is every byte it handled.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from privacy.he.ckks import CkksParams, HospitalKeys, add_encrypted, encrypt
from privacy.he.cyclic import CyclicAbort, cyclic_sum

ENCRYPTED = ("ckks", "cyclic")


@dataclass
class EncryptedSum:
    total: torch.Tensor                 # the decrypted sum of the inputs [d], float64
    received: list[bytes] = field(default_factory=list)  # every ciphertext the server handled


class EncryptedAggregation:
    def __init__(self, kind: str, *, params: CkksParams = CkksParams()):
        if kind not in ENCRYPTED:
            raise ValueError(f"unknown encrypted aggregation {kind!r}; choose one of {ENCRYPTED}")
        self.kind = kind
        self.keys = HospitalKeys(params)  # generated at the hospitals; the server gets public_context() only
        self.last: EncryptedSum | None = None
        self.rounds: list[dict] = []

    def combine(self, inputs: list[np.ndarray], round_idx: int, server_noise: np.ndarray | None = None) -> EncryptedSum:
        """The decrypted sum of `inputs` (float64 vectors) and, when given, `server_noise`,
        which the server encrypts under the public key and adds before anyone decrypts;
        raises CyclicAbort for a ring of fewer than 3 inputs."""
        start = time.perf_counter()
        public = self.keys.public_context()
        if self.kind == "ckks":
            encrypted = [encrypt(public, x) for x in inputs]
            noise = [encrypt(public, server_noise)] if server_noise is not None else []
            total_ct = add_encrypted(public, encrypted + noise)
            total = self.keys.decrypt(total_ct, len(inputs[0]))
            received = [c for vector in encrypted for c in vector]
            sent = float(np.mean([sum(map(len, v)) for v in encrypted]))
        else:
            # the initiator's mask must be unpredictable to the others (who know --seed): from the OS
            ring = cyclic_sum(inputs, self.keys, round_idx=round_idx, rng=np.random.default_rng(secrets.randbits(128)),
                              relay_noise=server_noise)
            total = ring.total
            received = [c for _, hop in ring.hops for c in hop]
            sent = float(np.mean([sum(map(len, hop)) for _, hop in ring.hops]))
        self.last = EncryptedSum(torch.from_numpy(total), received)
        self.rounds.append({"inputs": len(inputs), "bytes_sent": sent, "seconds": time.perf_counter() - start})
        return self.last

    def summary(self) -> dict:
        if not self.rounds:
            return {"rounds": 0, "kind": self.kind}
        return {"rounds": len(self.rounds), "kind": self.kind,
                **{f"mean_{k}": float(np.mean([r[k] for r in self.rounds])) for k in self.rounds[0]}}


__all__ = ["ENCRYPTED", "CyclicAbort", "EncryptedAggregation", "EncryptedSum"]
