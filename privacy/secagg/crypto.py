"""The primitives of secure aggregation, each from a maintained library.

- X25519 key agreement and HKDF-SHA256 (`cryptography`): a 32-byte secret per pair and purpose
- ChaCha20 as the pseudo-random generator of masks (`cryptography`): a seed expands into
  the mask's ring elements
- ChaCha20-Poly1305 (`cryptography`): the shares a client sends another through the server
- Shamir's secret sharing over GF(2^128) (pycryptodome): a 32-byte secret as two 16-byte halves
"""
from __future__ import annotations

import os

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_BYTES = 32
NONCE_BYTES = 12
_RAW = serialization.Encoding.Raw


def keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair from the OS: (private key, raw public key)."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def private_key(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private: X25519PrivateKey, peer_public: bytes, purpose: bytes) -> bytes:
    """The pair's 32-byte secret for `purpose` (HKDF of the X25519 shared point): both ends
    derive the same, nobody else can."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_BYTES, salt=None, info=purpose).derive(shared)


def fresh_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def prg(seed: bytes, count: int) -> np.ndarray:
    """`count` uniform 64-bit words (uint64) expanded from `seed` by ChaCha20; reduced mod
    2^b they stay uniform in Z_{2^b}, as 2^b divides 2^64."""
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(8 * count))
    return np.frombuffer(stream, dtype="<u8")


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Authenticated encryption: nonce || ciphertext; `associated` (sender and recipient)
    is authenticated, not hidden."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, blob: bytes, associated: bytes) -> bytes:
    """The plaintext of `seal`; raises cryptography's InvalidTag if anything was altered."""
    return ChaCha20Poly1305(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)


def split(secret: bytes, threshold: int, holders: int) -> list[bytes]:
    """Shamir shares of a 32-byte `secret` for holders 1..`holders`: any `threshold` of them
    rebuild it, fewer learn nothing. Share i (0-based) belongs to holder index i + 1."""
    halves = [Shamir.split(threshold, holders, secret[i:i + 16]) for i in (0, 16)]
    return [first + second for (_, first), (_, second) in zip(*halves)]


def combine(shares: dict[int, bytes]) -> bytes:
    """The secret of `split` from shares {holder index (1-based): share}, at least the threshold."""
    items = sorted(shares.items())
    return b"".join(Shamir.combine([(i, s[h:h + 16]) for i, s in items]) for h in (0, 16))
