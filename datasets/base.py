"""Containers shared by every federated dataset: a hospital has train/val/test splits."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

CLASSIFICATION = "classification"  # binary, two logits (the paper's ICH head)
MULTICLASS = "multiclass"
SEGMENTATION = "segmentation"
MULTILABEL = "multilabel"  # several findings per image, one logit each


@dataclass
class Split:
    """Images [n, C, H, W] and targets (class ids [n], multi-label floats [n, F] or masks
    [n, 1, H, W]); `attributes` holds per-image group labels (e.g. sex, age group) that
    fairness evaluation reads and training never sees."""

    images: torch.Tensor
    targets: torch.Tensor
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.targets[index], {k: v[index] for k, v in self.attributes.items()})

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.targets.to(device),
                     {k: v.to(device) for k, v in self.attributes.items()})

    @staticmethod
    def concat(splits: list["Split"]) -> "Split":
        keys = set.intersection(*(set(s.attributes) for s in splits)) if splits else set()
        return Split(torch.cat([s.images for s in splits]), torch.cat([s.targets for s in splits]),
                     {k: torch.cat([s.attributes[k] for s in splits]) for k in sorted(keys)})


@dataclass
class Shard:
    """A sub-client's part of a hospital's training split, as indices: no image is copied."""

    parent: Split
    index: torch.Tensor

    def __len__(self) -> int:
        return self.index.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.parent.batch(self.index[index])


@dataclass
class Hospital:
    name: str
    train: Split
    val: Split
    test: Split
    # The hospital's identity in its federation (its partition id): every per-hospital random
    # stream is keyed by it, so one hospital leaving changes nothing of the others. Set to
    # the hospital's position when the federation is built.
    key: int = -1


@dataclass
class FederatedData:
    """One federation: the task kind, the hospitals, and the shape of a model's input/output."""

    name: str
    task: str
    hospitals: list[Hospital]
    in_channels: int
    num_outputs: int
    # Real datasets keep uint8 images and turn each batch into model input here
    # (images, train=..., gen=...) -> float; None: images are model-ready floats.
    prepare: Callable | None = None
    # Names of the values of each per-image attribute (fairness groups), e.g. sex: male, female.
    attribute_groups: dict[str, list[str]] = field(default_factory=dict)
    # Names of the outputs of a multi-label task (the findings), for reports; empty: output0, ...
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        for position, hospital in enumerate(self.hospitals):
            if hospital.key < 0:
                hospital.key = position

    def centre(self, index: int) -> "FederatedData":
        """This federation's hospital `index` alone, keeping its key."""
        return FederatedData(self.name, self.task, [self.hospitals[index]], self.in_channels, self.num_outputs,
                             self.prepare, self.attribute_groups, self.label_names)

    def to(self, device: torch.device) -> "FederatedData":
        hospitals = [Hospital(h.name, h.train.to(device), h.val.to(device), h.test.to(device), h.key)
                     for h in self.hospitals]
        return FederatedData(self.name, self.task, hospitals, self.in_channels, self.num_outputs, self.prepare,
                             self.attribute_groups, self.label_names)
