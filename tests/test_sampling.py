"""Which hospitals take part in a round (federated/sampling.py)."""
import pytest
import torch

from federated.sampling import sample_hospitals


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_a_rate_of_one_takes_everyone_and_draws_nothing():
    for mode in ("fixed", "poisson"):
        g = gen()
        before = g.get_state()
        assert sample_hospitals([0, 1, 2, 3], 1.0, mode, g, population=4) == [0, 1, 2, 3]
        assert torch.equal(g.get_state(), before)  # the sampling stream is untouched


@pytest.mark.parametrize("n, rate, k", [(10, 0.3, 3), (10, 0.05, 1), (7, 0.5, 3), (4, 0.99, 3)])
def test_fixed_takes_exactly_int_n_q_hospitals_uniformly(n, rate, k):
    g = gen()
    counts = torch.zeros(n)
    for _ in range(2000):
        chosen = sample_hospitals(list(range(n)), rate, "fixed", g, population=n)
        assert len(chosen) == k and chosen == sorted(set(chosen)) and all(0 <= i < n for i in chosen)
        counts[chosen] += 1
    # each hospital with probability k / n (binomial std over 2000 draws is below 0.012)
    assert torch.allclose(counts / 2000, torch.full((n,), k / n), atol=0.05)


def test_poisson_takes_each_hospital_with_probability_q_from_its_own_draw():
    g = gen()
    counts = torch.zeros(5)
    for _ in range(4000):
        counts[sample_hospitals([0, 1, 2, 3, 4], 0.3, "poisson", g, population=5)] += 1
    assert torch.allclose(counts / 4000, torch.full((5,), 0.3), atol=0.03)
    # Removing a hospital leaves every other hospital's draw as it was.
    for seed in range(20):
        everyone = sample_hospitals([0, 1, 2, 3, 4], 0.5, "poisson", gen(seed), population=5)
        without_2 = sample_hospitals([0, 1, 3, 4], 0.5, "poisson", gen(seed), population=5)
        assert [[0, 1, 3, 4][i] for i in without_2] == [h for h in everyone if h != 2]
    # A key beyond the planned population still gets a draw of its own.
    assert set(sample_hospitals([0, 7], 0.999999, "poisson", gen(), population=3)) == {0, 1}


def test_the_draws_come_from_the_given_generator_only():
    for mode in ("fixed", "poisson"):
        torch.manual_seed(0)
        a = [sample_hospitals(list(range(20)), 0.5, mode, gen(seed), population=20) for seed in range(5)]
        torch.manual_seed(1)
        b = [sample_hospitals(list(range(20)), 0.5, mode, gen(seed), population=20) for seed in range(5)]
        assert a == b and len({tuple(x) for x in a}) > 1


def test_an_unknown_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown client sampling 'uniform'; choose one of"):
        sample_hospitals([0, 1], 0.5, "uniform", gen(), population=2)


@pytest.mark.parametrize("n, q, mode", [(5, 0.5, "fixed"), (7, 0.3, "fixed"), (3, 0.2, "fixed"),
                                        (5, 0.5, "poisson"), (7, 0.3, "poisson"), (5, 0.1, "poisson"), (4, 1.0, "fixed"),
                                        (4, 1.0, "poisson")])
def test_the_accountant_is_told_the_sampling_the_rounds_do(n, q, mode):
    from federated.config import Config
    from federated.privacy_setup import sampling_of
    told = sampling_of(Config(clients=n, sample_rate=q, client_sampling=mode))
    assert told.kind == ("all" if q >= 1 else mode) and told.population == n
    g = gen()
    draws = [sample_hospitals(list(range(n)), q, mode, g, population=n) for _ in range(3000)]
    counts = torch.zeros(n)
    for chosen in draws:
        counts[chosen] += 1
    # each hospital takes part with the probability the accountant amplifies by
    assert torch.allclose(counts / len(draws), torch.full((n,), told.rate), atol=0.03)
    if told.kind == "poisson":
        assert told.sample_size == max(1, round(n * q))  # the expected count, for display
    else:  # the m of "m of n without replacement"
        assert all(len(chosen) == told.sample_size for chosen in draws)
