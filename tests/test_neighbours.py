"""The property behind every client-level charge, measured on real neighbouring federations.

For random federations (number of hospitals, sub-clients per hospital, sampling scheme and
rate, sub-client split, --balance_split, --strict_dp's extra releases, adaptive v), each
unit's neighbouring pair is built as privacy/events.py's RULES state it, the same round is
run in both worlds with every noise draw instrumented (tests/neighbours.py), and:

- the distance between what the two worlds release (the update, the norm sum, the clip
  count) never exceeds the sensitivity the ledger charges for that unit;
- a unit whose hospital-mates enter the sum together with it (unchanged, in both worlds)
  is charged as "revealed", never as if its sampling were hidden;
- the noise std is the same in both worlds and for whoever was sampled;
- the adaptive rule, given the same released statistics, picks the same v in both worlds.
"""
import math
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

import federated.loop as loop
from federated.config import ConfigError
from federated.privacy_setup import sampling_of
from privacy.events import RULES, RoundShape, relation, rule_for
from tests import neighbours as nb
from tests.conftest import TINY

SAMPLINGS = {"all": [], "poisson": ["-sr", "0.5", "--client_sampling", "poisson"],
             "fixed": ["-sr", "0.5", "--client_sampling", "fixed"]}
TOLERANCE = 1e-4  # float32 sums of clipped rows, relative to C


def federation_args(*, hospitals, v, sampling, split, balance, strict, adaptive, seed):
    args = TINY + ["--mode", "dpsgd", "--noise_multiplier", "1.0", "--S", "1e-4", "-N", str(hospitals),
                   "-VN", str(v), "--train_size", "16", "--size_skew", "0.4", "--batch", "4", "--seed", str(seed),
                   "--subclient_split", split] + SAMPLINGS[sampling]
    if balance:
        args.append("--balance_split")
    if strict:
        args += ["--strict_dp", "--adaclip", "--norm_sum_noise", "2.0", "--clip_count_noise", "3.0"]
    if adaptive:
        args += ["--ada_vn", "--max_vn", "3"]
    return args


def measured(a: nb.Released, b: nb.Released) -> dict[str, float]:
    """What a unit moved: the update in C (noise std / z = C / denominator), the norm sum
    in C, and the clip count."""
    out = {"update": nb.distance_in_clip_bounds(a, b, 1.0)}
    if "clipped_fraction" not in a.stats:  # --strict_dp: the released norm sum is of clipped norms
        out["norm_sum"] = abs(a.stats["norm_sum"] - b.stats["norm_sum"]) / a.stats["clip_bound"]
    if a.counts:
        out["count"] = abs(a.counts[-1] - b.counts[-1])
    return out


def compare(a: nb.Released, b: nb.Released, shift) -> tuple[set[int], bool]:
    """The hospitals (positions in D) with a row that differs between the worlds, and whether
    any of them also has a row in both sums unchanged (a companion that shows it took part)."""
    same, changed = set(), set()
    rows_b = {m: b.row(m) for m in b.members}
    for m in a.members:
        t = shift(m)
        (same if t in rows_b and torch.equal(a.row(m), rows_b.pop(t)) else changed).add(m)
    hospitals = {m[0] for m in changed} | {m[0] for m in rows_b}  # rows only D' has (same positions here)
    return hospitals, any(m[0] in hospitals for m in same)


def check_pair(unit, fed, counts, a, b, shift=lambda m: m):
    """The measured distances are within the rule's sensitivities; an amplified ("sampled")
    charge covers the whole contribution of a hospital whose unchanged rows come along; the
    ledger charged this round what the rule says."""
    sampling = sampling_of(fed.cfg)
    shape = RoundShape(tuple(counts), fed.cfg.subclient_split, fed.cfg.balance_split)
    rule = rule_for(unit, shape, sampling)
    bounds = {release: rule.sensitivity(release, shape) for release in ("update", "norm_sum", "count")}
    for release, distance in measured(a, b).items():
        assert distance <= bounds[release] * (1 + TOLERANCE) + TOLERANCE, (unit, release, distance, rule.case)
    changed, companions = compare(a, b, shift)
    rate = rule.probability(shape, sampling)
    if changed and companions and rule.kind == "sampled" and rate < 1:
        per_element = bounds["update"] / (2 if relation(unit, sampling) == "replace" else 1)
        assert per_element >= max(counts[h] for h in changed if h < len(counts)), (unit, rule.case)
    charged = fed.ledger.accounts[f"client/{unit}"].history[-1]
    # a release every round (rate 1) is stored as a plain Gaussian, whatever the unit's kind
    assert charged.kind == (rule.kind if rate < 1 else "sampled") and charged.rate == pytest.approx(rate)


def run_world(fed, round_idx, v):
    """One round of `fed` at `v` sub-clients per hospital (re-split as the rule would);
    returns what it released and each hospital's sub-client count."""
    state = loop.initial_state(fed)
    fed.client_dp.clip_policy.load_state_dict({"bound": fed.cfg.S})  # every world starts from the same bound
    if v != state.v:
        loop.resplit(fed, state, v, round_idx=round_idx - 1)
    counts = list(state.subclient_counts)
    released, _ = nb.release(fed, round_idx, state)
    return released, counts


# Derandomized: CI checks the same 25 federations every time (NEIGHBOUR_EXAMPLES=400 with
# HYPOTHESIS_RANDOM=1 explores new ones; 800 such passed when this test was written).
@settings(max_examples=int(os.environ.get("NEIGHBOUR_EXAMPLES", 25)), deadline=None,
          derandomize=not os.environ.get("HYPOTHESIS_RANDOM"), suppress_health_check=[HealthCheck.too_slow])
@given(hospitals=st.integers(2, 4), v=st.integers(1, 3), sampling=st.sampled_from(list(SAMPLINGS)),
       split=st.sampled_from(["hash", "paper"]), balance=st.booleans(), strict=st.booleans(),
       adaptive=st.booleans(), round_idx=st.integers(1, 3), seed=st.integers(0, 50), target=st.integers(0, 3))
@example(hospitals=2, v=2, sampling="all", split="hash", balance=True, strict=False, adaptive=False, round_idx=1,
         seed=0, target=0)
@example(hospitals=3, v=2, sampling="poisson", split="paper", balance=False, strict=True, adaptive=True,
         round_idx=2, seed=1, target=1)
def test_every_unit_moves_the_release_at_most_as_far_as_it_is_charged(hospitals, v, sampling, split, balance,
                                                                      strict, adaptive, round_idx, seed, target):
    args = federation_args(hospitals=hospitals, v=v, sampling=sampling, split=split, balance=balance, strict=strict,
                           adaptive=adaptive, seed=seed)
    try:
        fed = nb.build(args)
    except ConfigError:  # a skewed size left a hospital with fewer records than sub-clients
        reject()
    h = target % hospitals
    rule_v = v
    if adaptive:  # the rule, given the same released statistics, must choose the same v in every world
        stats = {"expected_noise_norm": 3.0, "aggregate_norm": 1.0, "norm_sum": 0.5 + seed / 10}
        chosen = []
        for world in (fed, nb.build(args, nb.without_hospital(h))):
            state = loop.initial_state(world)
            loop.adapt_subclients(world, state, stats, 0)
            chosen.append(state.v)
        assert chosen[0] == chosen[1]
        rule_v = chosen[0]
    a, counts = run_world(fed, round_idx, rule_v)
    # the noise std does not depend on who was sampled: the same in every round of this world
    assert {run_world(fed, r, rule_v)[0].stats["noise_std"] for r in range(4)} == {a.stats["noise_std"]}

    # hospital: removed (Poisson, all) or replaced by another's data (fixed-size: N is public)
    if sampling == "fixed":
        neighbour = nb.build(args, lambda d: nb.replace_hospital_data(d, h, (h + 1) % hospitals))
        check_pair("hospital", fed, counts, a, run_world(neighbour, round_idx, rule_v)[0])
    else:
        neighbour = nb.build(args, nb.without_hospital(h))
        shift = lambda m: (m[0] - (m[0] > h), m[1]) if m[0] != h else (-1, -1)  # noqa: E731
        check_pair("hospital", fed, counts, a, run_world(neighbour, round_idx, rule_v)[0], shift)

    # patient: one record added to hospital h
    image = torch.rand(fed.data.hospitals[h].train.images.shape[1:], generator=torch.Generator().manual_seed(seed))
    neighbour = nb.build(args, nb.with_record(h, image, torch.tensor(seed % 2)))
    check_pair("patient", fed, counts, a, run_world(neighbour, round_idx, rule_v)[0])

    # sub-client: its message present or absent. The sampling draws whole hospitals, so with
    # c >= 2 a sub-client's mates enter the sum exactly when it does: it is charged as revealed.
    for member in a.members:
        assert sum(m[0] == member[0] for m in a.members) == counts[member[0]]  # the whole hospital, or none
    if max(counts) >= 2:
        assert rule_for("subclient", RoundShape(tuple(counts), split, balance), sampling_of(fed.cfg)).kind == "revealed"


def test_the_rules_table_is_the_one_in_the_docs():
    """docs/privacy.md states each unit's adjacency and sensitivities once: the table the
    code charges from (privacy/events.py, RULES)."""
    from pathlib import Path

    from privacy.events import rules_markdown
    docs = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    assert rules_markdown() in docs


@pytest.mark.parametrize("c, n, v", [(1, 3, 1), (2, 4, 2), (3, 2, 2), (5, 6, 3)])
def test_the_rules_labels_say_what_their_formulas_compute(c, n, v):
    """Each formula's label in the table (e.g. "(2N+1)v") evaluates to what the code charges."""
    for rule in RULES:
        for label, formula in (rule.update, rule.norm_sum, rule.count):
            product = re.sub(r"(?<=[0-9a-zA-Z)])(?=[a-zA-Z(])", "*", label)  # "2Nv" -> "2*N*v"
            value = eval(product, {"__builtins__": {}}, {"c": c, "N": n, "v": v})  # noqa: S307 -- the table's labels
            assert math.isclose(value, formula(c, n, v)), (rule.case, label)


def test_inclusion_probabilities():
    from privacy.accountants import Sampling
    from privacy.events import inclusion
    poisson, fixed = Sampling("poisson", 0.3, 5, 2), Sampling("fixed", 0.4, 5, 2)
    assert inclusion(poisson, 1) == 0.3 and inclusion(poisson, 2) == pytest.approx(1 - 0.7 ** 2)
    assert inclusion(fixed, 1) == 0.4
    assert inclusion(fixed, 2) == pytest.approx(1 - (3 * 2) / (5 * 4))  # neither of two among 2 of 5
    assert inclusion(fixed, 3) == pytest.approx(1 - 1 / 10)  # misses 3 of 5 only if both draws are the other 2
    assert inclusion(fixed, 4) == 1.0 and inclusion(fixed, 6) == 1.0 and inclusion(Sampling("all", 1.0, 5, 5), 3) == 1.0
    draws = np.random.default_rng(0).random((200_000, 5)).argsort(1)[:, :2]  # 2 of 5 without replacement
    either = np.isin(draws, [0, 1]).any(1).mean()
    assert either == pytest.approx(inclusion(fixed, 2), abs=0.01)
