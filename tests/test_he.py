"""CKKS aggregation and the cyclic protocol (privacy/he/): the encrypted sum is the plain
sum within the stated precision, the server's context cannot decrypt, and the cyclic
ring gives the plain sum, rotates its initiator and refuses fewer than 3 hospitals."""
from __future__ import annotations

import numpy as np
import pytest

from privacy.he.ckks import CKKS_PRECISION, CkksParams, HospitalKeys, add_encrypted, encrypt
from privacy.he.cyclic import MASK_BOUND, CyclicAbort, cyclic_sum, initiator


@pytest.fixture(scope="module")
def keys():
    return HospitalKeys(CkksParams())


def test_the_encrypted_sum_is_the_plain_sum(keys):
    rng = np.random.default_rng(0)
    updates = [rng.normal(scale=0.1, size=20_000) for _ in range(5)]
    public = keys.public_context()
    total = add_encrypted(public, [encrypt(public, u) for u in updates])
    decrypted = keys.decrypt(total, 20_000)
    assert decrypted.dtype == np.float64 and decrypted.shape == (20_000,)
    assert np.max(np.abs(decrypted - np.sum(updates, axis=0))) < CKKS_PRECISION


def test_the_parameters_and_precision_are_the_ones_stated(keys):
    """The report and the README state N 8192, moduli 60/40, scale 2^40 and an error of
    about 3e-8 (held to CKKS_PRECISION = 1e-6 elsewhere): pinned here."""
    assert CkksParams() == CkksParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40), scale_bits=40)
    assert CkksParams().slots == 4096 and CKKS_PRECISION == 1e-6
    assert keys.context.global_scale == 2 ** 40
    rng = np.random.default_rng(1)
    updates = [rng.normal(scale=0.1, size=8192) for _ in range(5)]
    public = keys.public_context()
    error = np.max(np.abs(keys.decrypt(add_encrypted(public, [encrypt(public, u) for u in updates]), 8192)
                          - np.sum(updates, axis=0)))
    assert 1e-10 < error < 1e-7


def test_the_server_s_context_holds_no_secret_key(keys):
    import tenseal as ts
    public = keys.public_context()
    context = ts.context_from(public)
    assert not context.is_private() and keys.context.is_private()
    vector = ts.ckks_vector_from(context, encrypt(public, np.ones(10))[0])
    with pytest.raises(ValueError, match="secret_key"):
        vector.decrypt()


def test_ciphertexts_are_not_the_update(keys):
    public = keys.public_context()
    update = np.linspace(-1, 1, 4096)
    blob = b"".join(encrypt(public, update))
    assert len(blob) > 8 * len(update)  # a ciphertext, not the floats
    assert update.tobytes()[:64] not in blob and update.astype(np.float32).tobytes()[:64] not in blob
    assert len(encrypt(public, np.zeros(3 * 4096 + 1))) == 4  # one ciphertext per 4096 slots


def test_the_cyclic_ring_gives_the_plain_sum_and_rotates(keys):
    rng = np.random.default_rng(1)
    updates = [rng.normal(scale=0.05, size=5000) for _ in range(4)]
    for round_idx in range(4):
        result = cyclic_sum(updates, keys, round_idx=round_idx, rng=np.random.default_rng(round_idx))
        assert result.initiator == initiator(round_idx, 4) == round_idx % 4
        assert np.max(np.abs(result.total - np.sum(updates, axis=0))) < CKKS_PRECISION * 1e3  # the mask's size
        assert [hop[0] for hop in result.hops] == [(result.initiator + k) % 4 for k in range(4)]


def test_the_mask_is_float64_and_hides_the_initiator_s_update_from_its_successor(keys):
    rng = np.random.default_rng(2)
    updates = [rng.normal(scale=0.05, size=5000) for _ in range(3)]
    result = cyclic_sum(updates, keys, round_idx=0, rng=np.random.default_rng(7))
    assert result.mask_dtype == np.float64
    # what the successor could decrypt from the ciphertext it received: the initiator's
    # update plus the mask, uncorrelated with the update
    seen = keys.decrypt(result.hops[0][1], 5000)
    assert abs(np.corrcoef(seen, updates[0])[0, 1]) < 0.05
    # the mask: uniform on [-M, M] per coordinate (mean 0, std M / sqrt(3))
    mask = seen - updates[0]
    assert abs(mask.mean()) < 0.05 * MASK_BOUND and mask.std() == pytest.approx(MASK_BOUND / np.sqrt(3), rel=0.05)
    assert -MASK_BOUND <= mask.min() < -0.99 * MASK_BOUND and 0.99 * MASK_BOUND < mask.max() <= MASK_BOUND
    # and the server only relayed ciphertexts
    assert all(updates[i].astype(np.float32).tobytes()[:64] not in b"".join(blob)
               for i in range(3) for _, blob in result.hops)


def test_fewer_than_three_hospitals_are_refused(keys):
    with pytest.raises(CyclicAbort, match="needs at least 3 hospitals.*2 would let the initiator"):
        cyclic_sum([np.zeros(10), np.zeros(10)], keys, round_idx=0, rng=np.random.default_rng(0))


def test_the_cost_benchmark_measures_and_projects(capsys):
    from benchmarks import he
    assert he.main(["--models", "lenet", "--hospitals", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| lenet | 9,074 | 3 |" in out and "| densenet121 (projected) | 6,872,258 | 1678 |" in out
