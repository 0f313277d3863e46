"""The ring code: rotation, stochastic rounding, the signed reading of the sum, its error."""
import math

import numpy as np
import pytest
import torch

from privacy.secagg.ring import RingCode, from_ring, hadamard, stochastic_round, to_ring


def test_the_rotation_keeps_norms_and_undoes_itself():
    code = RingCode(16, 1000, 1e-3, rotation_seed=7)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rotated = code.rotate(x)
    assert rotated.numel() == 1024
    assert float(torch.linalg.vector_norm(rotated)) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-12)
    assert torch.allclose(code.unrotate(rotated), x, atol=1e-12)
    e = torch.zeros(1024, dtype=torch.float64)
    e[3] = 1.0  # a spike spreads evenly: every coordinate 1 / sqrt(d')
    assert torch.allclose(hadamard(e).abs(), torch.full((1024,), 1 / 32, dtype=torch.float64))


def test_stochastic_rounding_is_unbiased_and_within_one_unit():
    x = torch.tensor([0.25, -1.75, 3.5, 7.0], dtype=torch.float64).repeat(20_000, 1)
    rounded = stochastic_round(x, torch.Generator().manual_seed(0))
    assert ((rounded - x).abs() < 1).all() and (rounded == rounded.round()).all()
    # 20k draws of a Bernoulli(p): standard error <= 0.0036
    assert torch.allclose(rounded.mean(0), x[0], atol=0.015)


def test_the_ring_reads_back_signed():
    values = torch.tensor([0, 1, -1, 2 ** 7 - 1, -(2 ** 7)], dtype=torch.float64)
    assert torch.equal(from_ring(to_ring(values, 8), 8), values)
    assert torch.equal(from_ring(to_ring(torch.tensor([2.0 ** 7]), 8), 8), torch.tensor([-(2.0 ** 7)]))  # wraps
    assert torch.equal(from_ring(to_ring(values, 64), 64), values)


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_the_decoded_sum_is_the_sum_within_the_rounding(bits):
    n, d, c = 10, 3000, 0.7
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(d, generator=gen, dtype=torch.float64) for _ in range(n)]
    xs = [x * (c / torch.linalg.vector_norm(x)) for x in xs]
    code = RingCode.for_sum(bits=bits, dim=d, norm_bound=n * c, noise_std=0.0, rotation_seed=3)
    total = np.zeros(code.padded, dtype=np.uint64)
    for x in xs:
        total = total + code.encode(x, gen)
    error = code.decode(total & np.uint64(2 ** bits - 1)) - sum(xs)
    # each client's rounding: variance <= step^2 / 4 per rotated coordinate
    assert float(torch.linalg.vector_norm(error)) <= code.step * math.sqrt(n * code.padded) / 2 * 1.1


def test_conditional_rounding_keeps_the_bound():
    code = RingCode(32, 4096, 1e-4, rotation_seed=0)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(2))
    x = x / torch.linalg.vector_norm(x)
    exact = 1 / code.step
    bound = exact + 1.0  # a tight bound: a plain rounding often exceeds it
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        rounded = from_ring(code.encode(x, gen, bound=bound), 32)
        assert float(torch.linalg.vector_norm(rounded)) <= bound


def test_the_transform_is_the_hadamard_matrix():
    from scipy.linalg import hadamard as matrix
    for n in (1, 2, 8, 64):
        x = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        expected = torch.from_numpy(matrix(n).astype(float)) @ x / math.sqrt(n)
        assert torch.allclose(hadamard(x), expected, atol=1e-12)


def test_the_step_holds_the_sum_six_standard_deviations_wide():
    code = RingCode.for_sum(bits=20, dim=1000, norm_bound=3.0, noise_std=0.02, rotation_seed=0)
    assert code.padded == 1024 and RingCode.for_sum(bits=8, dim=1, norm_bound=1.0, noise_std=0.0,
                                                     rotation_seed=0).padded == 1
    assert code.step == pytest.approx(2 * 6 * math.sqrt(9 / 1024 + 0.02 ** 2) / 2 ** 20, rel=1e-12)


def test_the_rotation_signs_are_random_and_public():
    code = RingCode(16, 4096, 1.0, rotation_seed=11)
    signs = code.signs()
    assert set(signs.tolist()) == {-1.0, 1.0} and abs(float(signs.mean())) < 0.1
    assert torch.equal(signs, RingCode(16, 4096, 2.0, rotation_seed=11).signs())


def test_rounding_is_reproducible_from_the_sender_s_generator():
    x = torch.rand(500, dtype=torch.float64) * 10
    a = stochastic_round(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, stochastic_round(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, stochastic_round(x, torch.Generator().manual_seed(2)))


def test_an_impossible_rounding_bound_is_refused_with_its_numbers():
    code = RingCode(16, 4, 1e-3, rotation_seed=0)
    with pytest.raises(RuntimeError, match=r"conditional rounding found no rounding within norm 0.5 in 1000 draws"):
        code.encode(torch.ones(4), torch.Generator().manual_seed(0), bound=0.5)


def test_an_encoding_is_reproducible_from_the_sender_s_generator():
    code = RingCode(24, 300, 1e-3, rotation_seed=2)
    x = torch.randn(300, generator=torch.Generator().manual_seed(0))
    first = code.encode(x, torch.Generator().manual_seed(9), noise_mu=4.0)
    assert np.array_equal(first, code.encode(x, torch.Generator().manual_seed(9), noise_mu=4.0))
    assert not np.array_equal(first, code.encode(x, torch.Generator().manual_seed(10), noise_mu=4.0))
