"""`--data bloodmnist` and the other single-label 2D MedMNIST sets, from their `.npz` files.

On disk: `<name>.npz` (28 px) or `<name>_64.npz`, `<name>_128.npz`, `<name>_224.npz` in
--data_root, with uint8 `train_images`, `val_images`, `test_images` ((N,H,W) grey or
(N,H,W,3) colour) and `*_labels` (N,1). --img_size picks the file. Nothing is downloaded.
Hospitals are made by --partition: `dirichlet` label skew (each class's samples are spread
over hospitals with proportions ~ Dir(--dirichlet_alpha)), `quantity` skew (hospital
sizes ~ Dir(alpha), labels mixed), or `iid`. The same proportions cut the val and test
sets, so each hospital is scored on data like its own. ChestMNIST (multi-label) is not
supported.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from datasets.base import CLASSIFICATION, MULTICLASS, FederatedData, Hospital, Split
from datasets.imageio import DataError
from datasets.transforms import ImagePreparation

NUM_CLASSES = {"bloodmnist": 8, "pathmnist": 9, "dermamnist": 7, "octmnist": 4, "pneumoniamnist": 2,
               "retinamnist": 5, "breastmnist": 2, "organamnist": 11, "organcmnist": 11, "organsmnist": 11,
               "tissuemnist": 8}
SIZES = (28, 64, 128, 224)
PARTITIONS = ("dirichlet", "quantity", "iid")


def npz_path(root: Path, name: str, size: int) -> Path:
    if size not in SIZES:
        raise DataError(f"--img_size {size}: MedMNIST comes in {SIZES} px; pick one of those")
    return root / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")


def read_npz(path: Path, name: str, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The three splits of a MedMNIST file, checked: uint8 images of `size` px with 1 or 3
    channels (the same in every split) and integer labels of the dataset's classes."""
    if not path.is_file():
        raise DataError(f"{path} is missing; put the MedMNIST file there (no download is attempted)")
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path} cannot be read as .npz ({type(err).__name__}: {err}); the file may be truncated: "
                        "copy it again") from None
    out = {}
    for split in ("train", "val", "test"):
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in arrays:
                raise DataError(f"{path} lacks the array {key!r}")
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
            raise DataError(f"{path}: {split}_images must be uint8 (N,H,W) or (N,H,W,3), got {images.dtype} "
                            f"{images.shape}")
        if images.shape[1:3] != (size, size):
            raise DataError(f"{path}: {split}_images are {images.shape[1]}x{images.shape[2]} px, but --img_size is "
                            f"{size}; every split must hold {size}x{size} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {split}_labels must be integer class indices, got {labels.dtype}")
        if len(labels) != len(images):
            raise DataError(f"{path}: {len(images)} {split} images but {len(labels)} labels")
        bad = (labels < 0) | (labels >= NUM_CLASSES[name])
        if bad.any():
            raise DataError(f"{path}: {split}_labels holds {labels[bad][0]}, outside 0..{NUM_CLASSES[name] - 1} "
                            f"for {name}")
        x = torch.from_numpy(images)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        out[split] = (x.contiguous(), torch.from_numpy(labels.astype(np.int64)))
    channels = {split: int(x.shape[1]) for split, (x, _) in out.items()}
    if len(set(channels.values())) > 1:
        raise DataError(f"{path}: the splits have different channel counts {channels}; all must be grey or all RGB")
    return out


def hospital_proportions(partition: str, hospitals: int, classes: int, alpha: float,
                         gen: np.random.Generator) -> np.ndarray:
    """[classes, hospitals]: the share of each class that each hospital receives."""
    if partition == "dirichlet":
        return gen.dirichlet(np.full(hospitals, alpha), size=classes)
    if partition == "quantity":
        return np.repeat(gen.dirichlet(np.full(hospitals, alpha))[None], classes, axis=0)
    return np.full((classes, hospitals), 1.0 / hospitals)


def partition(labels: torch.Tensor, shares: np.ndarray, gen: np.random.Generator) -> list[torch.Tensor]:
    """Indices per hospital: each class's (shuffled) samples cut by that class's shares."""
    parts: list[list[int]] = [[] for _ in range(shares.shape[1])]
    for c in range(shares.shape[0]):
        idx = np.flatnonzero(labels.numpy() == c)
        gen.shuffle(idx)
        cuts = (np.cumsum(shares[c])[:-1] * len(idx)).astype(int)
        for h, chunk in enumerate(np.split(idx, cuts)):
            parts[h].extend(chunk.tolist())
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


def build(cfg, gen: torch.Generator) -> FederatedData:
    name = cfg.data
    root = Path(cfg.data_root or "")
    if not cfg.data_root or not root.is_dir():
        raise DataError(f"--data_root {cfg.data_root!r} is not a folder; point it at the folder of {name}*.npz")
    splits = read_npz(npz_path(root, name, cfg.img_size), name, cfg.img_size)
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
    shares = hospital_proportions(cfg.partition, cfg.clients, NUM_CLASSES[name], cfg.dirichlet_alpha, rng)
    per_split = {}
    for split, (images, labels) in splits.items():
        parts = partition(labels, shares, rng)
        empty = [h for h, p in enumerate(parts) if len(p) == 0]
        if empty:
            raise DataError(f"hospital {empty[0]} receives no {split} samples with --partition {cfg.partition} "
                            f"--dirichlet_alpha {cfg.dirichlet_alpha}; raise the alpha or lower -N")
        per_split[split] = [Split(images[p], labels[p]) for p in parts]
    hospitals = [Hospital(f"hospital{h:02d}", per_split["train"][h], per_split["val"][h], per_split["test"][h])
                 for h in range(cfg.clients)]
    classes = NUM_CLASSES[name]
    return FederatedData(name, CLASSIFICATION if classes == 2 else MULTICLASS, hospitals,
                         in_channels=int(splits["train"][0].shape[1]), num_outputs=classes,
                         prepare=ImagePreparation())
