"""Containers shared by every federated dataset: a hospital has train/val/test splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

CLASSIFICATION = "classification"  # binary, two logits (the paper's ICH head)
MULTICLASS = "multiclass"
SEGMENTATION = "segmentation"


@dataclass
class Split:
    """Images [n, C, H, W] float32 and targets (class ids [n] or masks [n, 1, H, W])."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.targets[index])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.targets.to(device))

    @staticmethod
    def concat(splits: list["Split"]) -> "Split":
        return Split(torch.cat([s.images for s in splits]), torch.cat([s.targets for s in splits]))


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

    def to(self, device: torch.device) -> "FederatedData":
        hospitals = [Hospital(h.name, h.train.to(device), h.val.to(device), h.test.to(device))
                     for h in self.hospitals]
        return FederatedData(self.name, self.task, hospitals, self.in_channels, self.num_outputs, self.prepare)
