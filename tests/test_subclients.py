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


def test_paper_split_draws_equal_parts_in_a_fixed_order_and_leaves_the_remainder_unused():
    """The paper's split_dataset: int(n / v) records per sub-client, drawn at random without
    replacement; the n mod v left over train in no sub-client until the next split."""
    from federated.subclients import paper_split
    gen = torch.Generator().manual_seed(0)
    parts = paper_split(23, 4, gen)
    assert [len(p) for p in parts] == [5, 5, 5, 5]
    drawn = torch.cat(parts).tolist()
    assert len(set(drawn)) == 20 and all(0 <= i < 23 for i in drawn)  # 3 records unused
    assert all(torch.equal(p, p.sort().values) for p in parts)  # batches run in record order
    assert [len(p) for p in paper_split(750, 8, gen)] == [93] * 8  # RSNA-ICH at v = 8: 6 unused
    assert not all(torch.equal(a, b) for a, b in zip(paper_split(23, 4, gen), parts))  # a fresh draw
    assert torch.equal(torch.cat(paper_split(23, 1, gen)), torch.arange(23))


def test_paper_split_of_fewer_records_than_parts_gives_empty_parts_and_refuses_no_parts():
    from federated.subclients import paper_split
    gen = torch.Generator().manual_seed(0)
    parts = paper_split(2, 3, gen)
    assert len(parts) == 3 and all(p.numel() == 0 and p.dtype == torch.long for p in parts)
    with pytest.raises(ValueError, match="cannot split into 0 sub-clients"):
        paper_split(5, 0, gen)


def test_split_generator_is_keyed_by_the_secret_the_round_and_the_hospital():
    """Each hospital's paper split is drawn from its own keyed stream (finding 20): the same
    (secret, round, hospital) gives the same draw, and changing any one of them another."""
    from federated.subclients import split_generator

    def draw(secret, first_round, hospital):
        return torch.randperm(1000, generator=split_generator(secret, first_round, hospital))

    secret = split_secret(0)
    base = draw(secret, 3, 1)
    assert torch.equal(base, draw(secret, 3, 1))
    for other in (draw(split_secret(1), 3, 1), draw(secret, 4, 1), draw(secret, 3, 2), draw(secret, 1, 3)):
        assert not torch.equal(base, other)
    assert not torch.equal(draw(secret, 3, 1), draw(secret + b"other", 3, 1))  # the whole key counts


def test_paper_loader_keeps_the_last_partial_batch():
    from federated.local import steps_per_epoch
    assert steps_per_epoch(93, 16) == 5                  # shuffled, last partial batch dropped
    assert steps_per_epoch(93, 16, keep_last=True) == 6  # the paper's re-split loaders
    assert steps_per_epoch(3, 16, keep_last=True) == steps_per_epoch(3, 16) == 1
    assert steps_per_epoch(0, 16, keep_last=True) == 0
