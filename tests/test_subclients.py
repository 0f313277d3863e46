import torch

from federated.subclients import allocate_subclients, split_hospitals, split_indices


def test_split_covers_each_sample_exactly_once():
    gen = torch.Generator().manual_seed(0)
    for n, parts in [(10, 1), (10, 3), (17, 5), (7, 7)]:
        chunks = split_indices(n, parts, gen)
        assert len(chunks) == parts
        assert sorted(torch.cat(chunks).tolist()) == list(range(n))
        sizes = [len(c) for c in chunks]
        assert max(sizes) - min(sizes) <= 1


def test_split_is_deterministic_from_the_seed():
    a = split_hospitals([12, 9], [3, 2], torch.Generator().manual_seed(5))
    b = split_hospitals([12, 9], [3, 2], torch.Generator().manual_seed(5))
    c = split_hospitals([12, 9], [3, 2], torch.Generator().manual_seed(6))
    same = lambda x, y: all(torch.equal(p, q) for hx, hy in zip(x, y) for p, q in zip(hx, hy))  # noqa: E731
    assert same(a, b) and not same(a, c)


def test_balanced_allocation_gives_large_hospitals_more_subclients():
    counts = allocate_subclients([100, 50, 25], 2, balance=True)
    assert sum(counts) == 6
    assert counts == [3, 2, 1]  # sub-client sizes 33, 25, 25: as even as 6 parts allow
    assert allocate_subclients([100, 50, 25], 2, balance=False) == [2, 2, 2]


def test_too_many_subclients_is_refused():
    import pytest
    with pytest.raises(ValueError, match="cannot split 3 samples into 4"):
        split_indices(3, 4, torch.Generator())
