import numpy as np
import pytest
import torch

from datasets.base import Split
from federated.subclients import allocate_subclients, assign, record_keys, split_hospitals
from utils.seeding import split_secret


def _split(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 4, 4, generator=gen), torch.randint(0, 2, (n,), generator=gen))


def test_assignment_covers_each_record_exactly_once():
    keys = record_keys(_split(50), split_secret(0))
    for parts in (1, 3, 7):
        chunks = assign(keys, parts)
        assert len(chunks) == parts
        assert sorted(torch.cat(chunks).tolist()) == list(range(50))


def test_assignment_is_a_keyed_function_of_the_record():
    split = _split(40)
    a = split_hospitals([record_keys(split, split_secret(5))], [3])
    b = split_hospitals([record_keys(split, split_secret(5))], [3])
    c = split_hospitals([record_keys(split, split_secret(6))], [3])
    same = lambda x, y: all(torch.equal(p, q) for hx, hy in zip(x, y) for p, q in zip(hx, hy))  # noqa: E731
    assert same(a, b) and not same(a, c)
    # the same record gets the same key wherever it stands
    keys = record_keys(split, split_secret(5))
    reordered = Split(split.images.flip(0), split.targets.flip(0))
    assert np.array_equal(record_keys(reordered, split_secret(5)), keys[::-1])


def test_sizes_are_roughly_equal():
    sizes = [len(i) for i in assign(record_keys(_split(3000), split_secret(1)), 3)]
    assert all(abs(s - 1000) < 100 for s in sizes)  # multinomial: sd ~ 26


def test_balanced_allocation_gives_large_hospitals_more_subclients():
    counts = allocate_subclients([100, 50, 25], 2, balance=True)
    assert sum(counts) == 6
    assert counts == [3, 2, 1]  # sub-client sizes 33, 25, 25: as even as 6 parts allow
    assert allocate_subclients([100, 50, 25], 2, balance=False) == [2, 2, 2]


def test_zero_subclients_is_refused():
    with pytest.raises(ValueError, match="cannot split into 0"):
        assign(np.zeros(3, dtype=np.uint64), 0)
