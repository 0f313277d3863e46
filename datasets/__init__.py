"""Federated dataset registry: `--data NAME` -> a builder (cfg, generator) -> FederatedData.

Synthetic generators (the embedded default) and loaders of the real on-disk formats share
one interface: hospitals with train/val/test splits.
"""
from __future__ import annotations

from typing import Callable

import torch

from datasets import (chest_xray, folder, medmnist, prostate, rsna_ich, synthetic_blood, synthetic_chest,
                      synthetic_cxr, synthetic_ich, synthetic_prostate)
from datasets.base import FederatedData
from datasets.synthetic import SyntheticSizes, paper_site_sizes


def _synthetic(build, *, shifted: bool = False):
    def from_config(cfg, gen: torch.Generator) -> FederatedData:
        per_site = tuple(paper_site_sizes(cfg.data, cfg.clients)) if cfg.scale == "paper" else None
        sizes = SyntheticSizes(hospitals=cfg.clients, train=cfg.train_size, val=cfg.val_size,
                               test=cfg.test_size, img_size=cfg.img_size, size_skew=cfg.size_skew, per_site=per_site)
        return build(sizes, gen, site_shift=cfg.site_shift) if shifted else build(sizes, gen)
    return from_config


DATASETS: dict[str, Callable[..., FederatedData]] = {
    "synthetic-ich": _synthetic(synthetic_ich.build),
    "synthetic-prostate": _synthetic(synthetic_prostate.build),
    "synthetic-blood": _synthetic(synthetic_blood.build),
    "synthetic-cxr": _synthetic(synthetic_cxr.build),
    "synthetic-chestct": _synthetic(synthetic_chest.build_chestct, shifted=True),
    "synthetic-covidseg": _synthetic(synthetic_chest.build_covidseg, shifted=True),
    "RSNA-ICH": rsna_ich.build,
    "prostate": prostate.build,
    "chest-xray": chest_xray.build,
    "folder": folder.build,
    **{name: medmnist.build for name in medmnist.NUM_CLASSES},
}
SYNTHETIC = ("synthetic-ich", "synthetic-prostate", "synthetic-blood", "synthetic-cxr", "synthetic-chestct",
             "synthetic-covidseg")


def build_federated_data(cfg, gen: torch.Generator) -> FederatedData:
    return DATASETS[cfg.data](cfg, gen)


# Formats whose sites are separate on disk load one centre without reading the others.
CENTRE_LOADERS: dict[str, Callable[..., FederatedData]] = {"prostate": prostate.build_centre}


def build_centre(cfg, gen: torch.Generator, index: int) -> FederatedData:
    """Hospital `index` alone, keyed as in the whole federation: what that hospital's own
    process (a Flower ClientApp) loads. Per-site formats read only its files; partitioned
    ones (synthetic data, RSNA-ICH's one table, MedMNIST's one file) derive the shared
    partition from the shared seed and keep its part, as a federated partitioner does."""
    if not 0 <= index < cfg.clients:
        raise ValueError(f"hospital {index} is not in a federation of -N {cfg.clients}")
    if cfg.data in CENTRE_LOADERS:
        return CENTRE_LOADERS[cfg.data](cfg, index)
    return build_federated_data(cfg, gen).centre(index)
