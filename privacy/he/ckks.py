"""CKKS aggregation (Cheon, Kim, Kim, Song 2017) through TenSEAL: the hospitals hold the
secret key, the server holds a public context, adds ciphertexts and returns the encrypted
sum, which the hospitals decrypt.

Parameters: ring degree N = 8192 (4096 slots a ciphertext), coefficient moduli of 60 and
40 bits, scale 2^40. No multiplication is needed, so one level is enough; these give
about 3e-8 absolute error on a sum of five updates of 200k floats on the development
machine (tests/test_he.py holds it to CKKS_PRECISION). A vector is encrypted as
ciphertexts of one slot-full each, so any model size is one list of ciphertexts.
In this simulation the hospitals' key is generated in one process; a deployment would
generate it among the hospitals and never send it to the server.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tenseal as ts

CKKS_PRECISION = 1e-6  # the absolute error a decrypted sum may have (measured: ~3e-8)


@dataclass(frozen=True)
class CkksParams:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


class HospitalKeys:
    """The CKKS context with the secret key: the hospitals' side."""

    def __init__(self, params: CkksParams):
        self.params = params
        self.context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                                  coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        self.context.global_scale = 2 ** params.scale_bits
        public = self.context.copy()
        public.make_context_public()  # drops the secret key
        self._public = public.serialize()

    def public_context(self) -> bytes:
        """What the server (and any encrypting party) is given: no secret key in it."""
        return self._public

    def decrypt(self, ciphertexts: list[bytes], length: int) -> np.ndarray:
        """The vector [length] (float64) that `ciphertexts` encrypt."""
        parts = [ts.ckks_vector_from(self.context, c).decrypt() for c in ciphertexts]
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])[:length]


@functools.lru_cache(maxsize=4)
def _public_context(public: bytes) -> ts.Context:
    return ts.context_from(public)


def encrypt(public: bytes, values: np.ndarray, *, slots: int = CkksParams().slots) -> list[bytes]:
    """`values` [d] as ciphertexts of one slot-full (`slots`, N / 2) each, under the public
    context (a longer input would make TenSEAL split it and warn on every call)."""
    context = _public_context(public)
    values = np.asarray(values, dtype=np.float64)
    return [ts.ckks_vector(context, values[i:i + slots].tolist()).serialize()
            for i in range(0, max(len(values), 1), slots)]


def add_encrypted(public: bytes, ciphertexts: list[list[bytes]]) -> list[bytes]:
    """The server's step: the encrypted sum of the inputs, chunk by chunk."""
    context = _public_context(public)
    total = None
    for vector in ciphertexts:
        chunks = [ts.ckks_vector_from(context, c) for c in vector]
        total = chunks if total is None else [a + b for a, b in zip(total, chunks)]
    return [c.serialize() for c in total]
