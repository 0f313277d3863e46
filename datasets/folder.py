"""`--data folder`: your own hospitals, one folder per site under --data_root.

Classification: `<site>/<class>/<image>` (class names are the sorted union over sites; two
classes give the binary metrics, more the multi-class ones). Segmentation:
`<site>/images/<name>` with `<site>/masks/<name>` of the same file name and size (any
non-zero mask pixel is foreground). Images are read as RGB at --img_size. Each site is
split 70/15/15 into train/val/test with the seed, by image: if a patient has several
images, keep them in one site folder per split yourself.
"""
from __future__ import annotations

from pathlib import Path

import torch

from datasets.base import CLASSIFICATION, MULTICLASS, SEGMENTATION, FederatedData, Hospital, Split
from datasets.imageio import DataError, image_size, load_images
from datasets.transforms import ImagePreparation

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
FRACTIONS = (0.7, 0.15)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _three_way(n: int, gen: torch.Generator) -> list[torch.Tensor]:
    if n < 3:
        raise DataError("a site needs at least 3 images to have train, val and test")
    order = torch.randperm(n, generator=gen)
    n_train = max(1, int(FRACTIONS[0] * n))
    n_val = max(1, int(FRACTIONS[1] * n))
    return [order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]]


def build(cfg, gen: torch.Generator) -> FederatedData:
    root = Path(cfg.data_root or "")
    if not cfg.data_root or not root.is_dir():
        raise DataError(f"--data_root {cfg.data_root!r} is not a folder; it must hold one folder per site")
    sites = sorted(p for p in root.iterdir() if p.is_dir())
    if not sites:
        raise DataError(f"--data_root {root} has no site folders")
    if cfg.clients > len(sites):
        raise DataError(f"-N {cfg.clients}, but {root} has {len(sites)} site folders; use -N <= {len(sites)}")
    sites = sites[:cfg.clients]
    segmentation = (sites[0] / "images").is_dir()
    if segmentation:
        return _segmentation(sites, cfg.img_size, gen)
    return _classification(sites, cfg.img_size, gen)


def _classification(sites: list[Path], size: int, gen: torch.Generator) -> FederatedData:
    classes = sorted({c.name for s in sites for c in s.iterdir() if c.is_dir()})
    by_folded = {}
    for name in classes:
        if (other := by_folded.setdefault(name.casefold(), name)) != name:
            raise DataError(f"class folders {other!r} and {name!r} differ only in case; rename them to one spelling "
                            "at every site (they would train as two classes)")
    if len(classes) < 2:
        raise DataError(f"found classes {classes} under the sites; classification needs >= 2 class folders")
    hospitals = []
    for site in sites:
        files, labels = [], []
        for k, cls in enumerate(classes):
            if (site / cls).is_dir():
                found = _images(site / cls)
                files += found
                labels += [k] * len(found)
        if not files:
            raise DataError(f"site {site} has no images in its class folders; remove it or add images")
        images, targets = load_images(files, size=size, mode="RGB"), torch.tensor(labels)
        parts = [Split(images[p], targets[p]) for p in _three_way(len(files), gen)]
        hospitals.append(Hospital(site.name, *parts))
    kind = CLASSIFICATION if len(classes) == 2 else MULTICLASS
    return FederatedData("folder", kind, hospitals, in_channels=3, num_outputs=len(classes), prepare=ImagePreparation())


def _segmentation(sites: list[Path], size: int, gen: torch.Generator) -> FederatedData:
    hospitals = []
    for site in sites:
        if not (site / "images").is_dir() or not (site / "masks").is_dir():
            raise DataError(f"site {site} needs both images/ and masks/ (as the first site has)")
        files = _images(site / "images")
        if not files:
            raise DataError(f"site {site}/images is empty; remove the site or add images")
        masks = [site / "masks" / f.name for f in files]
        for image, mask in zip(files, masks):
            if not mask.is_file():
                raise DataError(f"mask {mask} for image {image} is missing")
            if image_size(image) != image_size(mask):
                raise DataError(f"image {image} is {image_size(image)} but its mask {mask} is "
                                f"{image_size(mask)}; they must be the same size")
        images = load_images(files, size=size, mode="RGB")
        targets = (load_images(masks, size=size, mode="L", resample="nearest") > 0).float()
        parts = [Split(images[p], targets[p]) for p in _three_way(len(files), gen)]
        hospitals.append(Hospital(site.name, *parts))
    return FederatedData("folder", SEGMENTATION, hospitals, in_channels=3, num_outputs=1, prepare=ImagePreparation())
