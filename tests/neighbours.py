"""Neighbouring federations, run with the noise instrumented: the tools with which the
privacy tests measure what the released quantities of one round reveal.

A test builds a federation D from flags, then its neighbour D' by editing the data before
the federation is wired (a hospital removed, a record added, a record replaced), and runs
the same round on both with every client-level noise draw replaced by zeros. What the run
releases is then the pre-noise quantity itself: the distance between the two worlds'
releases, in units of the clip bound, is the sensitivity the code really has, which the
ledger's charge must cover. The noise std each draw asked for is recorded as well.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from unittest import mock

import torch

import federated.loop as loop
import federated.pipeline as pipeline
import federated.setup as setup
import privacy.client_dp as client_dp
import privacy.clipping as clipping
from datasets.base import FederatedData, Hospital, Split
from federated.config import parse_config


@dataclass
class Released:
    """What one round released (with zero noise) and what the server combined."""
    update: torch.Tensor                 # the released aggregate (zero noise: the weighted sum)
    stats: dict                          # the round's logged statistics (clip bound, noise std, ...)
    members: list[tuple[int, int]]       # (hospital position, sub-client) of each combined row
    rows: torch.Tensor                   # the clipped messages the server combined [K, P]
    weights: torch.Tensor                # their aggregation weights [K]
    params_changed: bool                 # whether the global model moved this round
    noise_stds: list[float] = field(default_factory=list)   # every std a noise draw asked for
    counts: list[float] = field(default_factory=list)       # pre-noise clip counts (QuantileClip)

    def row(self, member: tuple[int, int]) -> torch.Tensor:
        return self.rows[self.members.index(member)]


def zero_noise(stds: list[float]):
    def draw(numel, std, gen, *, secure, device=None):
        stds.append(float(std))
        return torch.zeros(numel, device=device)
    return draw


@contextlib.contextmanager
def instrumented(record: dict):
    """Every client-level noise draw returns zeros (its std is recorded); the server's
    combine records the rows it sums; the quantile clip records its pre-noise count."""
    stds: list[float] = []
    record.update(stds=stds, combined=[], counts=[])
    real_combine = pipeline.ServerHalf.combine
    real_after = clipping.QuantileClip.after_round

    def combine(messages, weights, numel, device):
        rows = torch.stack([m.payload for m in messages]) if messages else torch.zeros(0, numel)
        record["combined"].append((rows.detach().clone(), weights.detach().clone()))
        return real_combine(messages, weights, numel, device)

    def after_round(self, within_bound, *args, **kwargs):
        record["counts"].append(within_bound)
        return real_after(self, within_bound, *args, **kwargs)

    real_sample = loop.sample_hospitals

    def sample(*args, **kwargs):
        chosen = real_sample(*args, **kwargs)
        record["sampled"] = list(chosen)
        return chosen

    with mock.patch.object(client_dp, "gaussian_noise", zero_noise(stds)), \
            mock.patch.object(clipping, "gaussian_noise", zero_noise(stds)), \
            mock.patch.object(loop, "sample_hospitals", sample), \
            mock.patch.object(pipeline.ServerHalf, "combine", staticmethod(combine)), \
            mock.patch.object(clipping.QuantileClip, "after_round", after_round):
        yield record


def build(args: list[str], edit=None):
    """The federation of `args`, with its data passed through `edit` (FederatedData ->
    FederatedData) before anything is derived from it (sub-client split, calibration)."""
    cfg = parse_config(list(args))
    if edit is None:
        return setup.build_federation(cfg)
    real = setup.build_federated_data
    with mock.patch.object(setup, "build_federated_data", lambda c, gen: edit(real(c, gen))):
        return setup.build_federation(cfg)


def _with_hospitals(data: FederatedData, hospitals: list[Hospital]) -> FederatedData:
    return FederatedData(data.name, data.task, hospitals, data.in_channels, data.num_outputs, data.prepare,
                         data.attribute_groups, data.label_names)


def _train(hospital: Hospital, train: Split) -> Hospital:
    copy = Hospital(hospital.name, train, hospital.val, hospital.test)
    if hasattr(hospital, "key"):
        copy.key = hospital.key
    return copy


def without_hospital(position: int):
    """D' = D with one hospital absent (every other hospital, record and key as in D)."""
    return lambda data: _with_hospitals(data, [h for i, h in enumerate(data.hospitals) if i != position])


def replace_hospital_data(data: FederatedData, hospital: int, donor: int) -> FederatedData:
    """D' = D with one hospital's training data replaced by another's (its key kept)."""
    hs = list(data.hospitals)
    hs[hospital] = _train(hs[hospital], hs[donor].train)
    return _with_hospitals(data, hs)


def train_records(hospital: int, keep: slice):
    """Keep only `keep` of one hospital's training records (to build a federation of given sizes)."""
    def edit(data):
        hs = list(data.hospitals)
        train = hs[hospital].train
        hs[hospital] = _train(hs[hospital], train.subset(torch.arange(len(train))[keep]))
        return _with_hospitals(data, hs)
    return edit


def with_record(hospital: int, image: torch.Tensor, target: torch.Tensor, *, then=None):
    """D' = D with one more training record (a patient) in one hospital."""
    def edit(data):
        data = then(data) if then is not None else data
        hs = list(data.hospitals)
        train = hs[hospital].train
        extra = Split(image[None].to(train.images), target[None].to(train.targets))
        hs[hospital] = _train(hs[hospital], Split.concat([train, extra]) if not train.attributes else
                              Split(torch.cat([train.images, extra.images]), torch.cat([train.targets, extra.targets])))
        return _with_hospitals(data, hs)
    return edit


def replaced_record(hospital: int, index: int, image: torch.Tensor, target: torch.Tensor):
    """D' = D with one training record of one hospital replaced by another."""
    def edit(data):
        hs = list(data.hospitals)
        train = hs[hospital].train
        images, targets = train.images.clone(), train.targets.clone()
        images[index], targets[index] = image.to(images), target.to(targets)
        hs[hospital] = _train(hs[hospital], Split(images, targets, train.attributes))
        return _with_hospitals(data, hs)
    return edit


def release(fed, round_idx: int = 0, state=None) -> tuple[Released, object]:
    """Run round `round_idx` of `fed` with zero noise; returns what it released and the state."""
    state = loop.initial_state(fed) if state is None else state
    before = state.params.clone()
    counts = list(state.subclient_counts)
    record: dict = {}
    with instrumented(record):
        _, stats = loop.run_round(fed, state, loop.subclient_data(fed, state), round_idx)
    if record["combined"]:
        rows, weights = record["combined"][-1]
    else:  # nothing was combined: nothing was released
        rows, weights = torch.zeros(0, before.numel()), torch.zeros(0)
    members = [(h, k) for h in record["sampled"] for k in range(counts[h])]
    update = weights.to(rows) @ rows if len(rows) else torch.zeros_like(before)
    released = Released(update, stats, members, rows, weights, not torch.equal(state.params, before),
                        record["stds"], record["counts"])
    return released, state


def distance_in_clip_bounds(a: Released, b: Released, z: float) -> float:
    """||release_D - release_D'|| in units of C on the sum: the noise std on the released
    mean is z * C * max_weight, so C * max_weight = std / z."""
    std = a.stats["noise_std"]
    assert b.stats["noise_std"] == std, "the noise std differs between neighbouring worlds"
    return float(torch.linalg.vector_norm(a.update - b.update)) * z / std


def charged_distance(fed, unit: str, *, z: float) -> float:
    """The distance (in C) that the ledger's last charge to `unit` covers: z over its
    multiplier (the update alone is released outside --strict_dp)."""
    return z / fed.ledger.accounts[f"client/{unit}"].history[-1][0]


def summary_of(save_path, name: str) -> dict:
    from pathlib import Path

    from utils import io
    return io.read_json(next(Path(save_path).rglob(f"{name}/summary.json")))
