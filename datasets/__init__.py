"""Federated dataset registry: `--data NAME` -> a builder of FederatedData."""
from __future__ import annotations

from typing import Callable

import torch

from datasets import synthetic_ich, synthetic_prostate
from datasets.base import FederatedData
from datasets.synthetic import SyntheticSizes

DATASETS: dict[str, Callable[[SyntheticSizes, torch.Generator], FederatedData]] = {
    "synthetic-ich": synthetic_ich.build,
    "synthetic-prostate": synthetic_prostate.build,
}


def build_federated_data(cfg, gen: torch.Generator) -> FederatedData:
    sizes = SyntheticSizes(hospitals=cfg.clients, train=cfg.train_size, val=cfg.val_size,
                           test=cfg.test_size, img_size=cfg.img_size, size_skew=cfg.size_skew)
    return DATASETS[cfg.data](sizes, gen)
