"""`--data prostate`: the paper's six-site prostate MRI segmentation (Jiang et al. 2023).

On disk: one JSON per site (I2CVB, MSD, NCI_ISBI_3T, NCI_ISBI_DX, Promise12, ProstateX) in
--split_dir (default: --data_root), each with keys `training`, `validation`, `testing`,
lists of `{"image": ..., "label": ...}` paths relative to --data_root, pointing at 8-bit
PNG slices `<Site>/Image/<case>/<slice>.png` and masks `<Site>/Mask/<case>/<slice>.png`
(mask values 0/255). The usual preprocessing's spellings `NCI_ISBI_Dx` and `PROSTATEx` are
accepted. Slices are read as RGB /255 at --img_size (256 in the paper). With -N < 6 the N
sites with the most training slices take part, as the paper's code.

Build the JSON files from such a folder with a case-level split (a slice-level split would
put slices of one patient in both train and test):

    python -m datasets.prostate --data_root ROOT --out SPLIT_DIR --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from datasets.base import SEGMENTATION, FederatedData, Hospital, Split
from datasets.imageio import DataError, image_size, load_images
from datasets.transforms import ImagePreparation
from utils.io import write_json

SITES = ["I2CVB", "MSD", "NCI_ISBI_3T", "NCI_ISBI_DX", "Promise12", "ProstateX"]
ALIASES = {"NCI_ISBI_DX": ["NCI_ISBI_Dx"], "ProstateX": ["PROSTATEx"]}
SPLIT_KEYS = {"train": "training", "val": "validation", "test": "testing"}


def find_site(folder: Path, site: str, suffix: str = "") -> Path | None:
    """`folder/site+suffix`, or an accepted alternative spelling (reported when used)."""
    for name in [site, *ALIASES.get(site, [])]:
        path = folder / f"{name}{suffix}"
        if path.exists():
            if name != site:
                print(f"prostate: using {path} for site {site} (accepted spelling {name})", file=sys.stderr)
            return path
    return None


def _resolve(root: Path, relative: str, json_path: Path) -> Path:
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise DataError(f"{json_path}: entry {relative!r} points outside --data_root {root}; "
                        "entries must be paths relative to the data root")
    return path


def read_site(root: Path, json_path: Path) -> dict[str, list[tuple[Path, Path]]]:
    try:
        spec = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{json_path} is not valid JSON ({err})") from None
    pairs = {}
    for split, key in SPLIT_KEYS.items():
        if key not in spec:
            raise DataError(f"{json_path} lacks the key {key!r}; expected training, validation, testing")
        entries = spec[key]
        if not isinstance(entries, list):
            raise DataError(f"{json_path}: {key!r} must be a list of entries, each with 'image' and 'label'")
        if not entries:
            raise DataError(f"{json_path}: {key!r} is empty; every site needs slices in each split")
        for e in entries:
            if not (isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("image", "label"))):
                raise DataError(f"{json_path}: {key!r} entry {e!r} must be an object with 'image' and 'label' paths")
        pairs[split] = [(_resolve(root, e["image"], json_path), _resolve(root, e["label"], json_path)) for e in entries]
    _warn_swapped(json_path, pairs)
    _warn_overlaps(json_path, pairs)
    return pairs


SWAP_SAMPLE = 4  # pairs read per split to check which side holds the masks


def _distinct_values(path: Path) -> int | None:
    try:
        with Image.open(path) as img:
            return len(np.unique(np.asarray(img)))
    except (UnidentifiedImageError, OSError):
        return None  # reported with its path when the slices are loaded


def _warn_swapped(json_path: Path, pairs: dict[str, list[tuple[Path, Path]]]) -> None:
    """Masks hold two values (0 and 255, or 0 and 1), MRI slices many: entries whose image
    is two-valued while its mask is not have 'image' and 'label' exchanged. Warned, as a
    constant image would be legal."""
    for split, entries in pairs.items():
        sample = [(_distinct_values(i), _distinct_values(m)) for i, m in entries[:SWAP_SAMPLE]
                  if i.is_file() and m.is_file()]
        if sample and all(i is not None and m is not None and i <= 2 < m for i, m in sample):
            print(f"warning: {json_path}: the {SPLIT_KEYS[split]!r} images look like masks "
                  f"({max(i for i, _ in sample)} values) and the masks like images ({min(m for _, m in sample)}+ "
                  "values); are 'image' and 'label' exchanged?", file=sys.stderr, flush=True)


def _warn_overlaps(json_path: Path, pairs: dict[str, list[tuple[Path, Path]]]) -> None:
    """Splits should share no slice: test slices seen in training measure recall."""
    names = list(pairs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if shared := {img for img, _ in pairs[a]} & {img for img, _ in pairs[b]}:
                print(f"warning: {json_path}: {SPLIT_KEYS[a]!r} and {SPLIT_KEYS[b]!r} share {len(shared)} slice(s), "
                      f"e.g. {min(shared)}; scores on {SPLIT_KEYS[b]!r} will not measure generalisation",
                      file=sys.stderr, flush=True)


def _check_pairs(pairs: list[tuple[Path, Path]]) -> None:
    for image, mask in pairs:
        for path in (image, mask):
            if not path.is_file():
                raise DataError(f"image {path} is missing; check --data_root and the site JSON")
        if image_size(image) != image_size(mask):
            raise DataError(f"image {image} is {image_size(image)} but its mask {mask} is {image_size(mask)}; "
                            "they must be the same size")


def _load(pairs: list[tuple[Path, Path]], size: int) -> Split:
    _check_pairs(pairs)
    # As the paper: image and mask area-resized (MONAI's Resized default), the mask's fractions
    # kept as training targets; the paper's metrics threshold them (utils/metrics.py).
    images = load_images([p for p, _ in pairs], size=size, mode="RGB", resample="area")
    masks = load_images([m for _, m in pairs], size=size, mode="L", resample="area", masks=True)
    return Split(images, masks.float() / 255)


def _chosen_sites(cfg) -> dict[str, dict[str, list[tuple[Path, Path]]]]:
    """The sites taking part (the -N with the most training slices, in SITES order) and
    their image/mask pairs, from the site JSONs alone (no image is read)."""
    root = Path(cfg.data_root or "")
    if not cfg.data_root or not root.is_dir():
        raise DataError(f"--data_root {cfg.data_root!r} is not a folder; point it at the prostate PNG slices")
    split_dir = Path(cfg.split_dir) if cfg.split_dir else root
    sites = {}
    for site in SITES:
        json_path = find_site(split_dir, site, ".json")
        if json_path is None:
            raise DataError(f"split file {split_dir / (site + '.json')} is missing; pass --split_dir, or build "
                            "the files: python -m datasets.prostate --data_root ROOT --out DIR")
        sites[site] = read_site(root, json_path)
    if cfg.clients > len(SITES):
        raise DataError(f"-N {cfg.clients}: the prostate data has {len(SITES)} sites; use -N <= 6")
    top = sorted(SITES, key=lambda s: -len(sites[s]["train"]))[:cfg.clients]
    return {s: sites[s] for s in SITES if s in top}


def _federation(hospitals: list[Hospital]) -> FederatedData:
    return FederatedData("prostate", SEGMENTATION, hospitals, in_channels=3, num_outputs=1, prepare=ImagePreparation())


def _hospital(site: str, pairs: dict[str, list[tuple[Path, Path]]], size: int, key: int = -1) -> Hospital:
    return Hospital(site, *(_load(pairs[k], size) for k in ("train", "val", "test")), key=key)


def build(cfg, gen: torch.Generator) -> FederatedData:
    return _federation([_hospital(s, pairs, cfg.img_size) for s, pairs in _chosen_sites(cfg).items()])


def build_centre(cfg, index: int) -> FederatedData:
    """Hospital `index` of the federation `build` makes, reading that site's images only
    (as a site's own process loads its data: FLamby's `center=`)."""
    site, pairs = list(_chosen_sites(cfg).items())[index]
    return _federation([_hospital(site, pairs, cfg.img_size, key=index)])


def build_split_json(root: Path, out_dir: Path, *, seed: int,
                     fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, dict[str, int]]:
    """Site JSONs from `<Site>/Image/<case>/<slice>.png` (+ Mask), split by case."""
    gen = torch.Generator().manual_seed(seed)
    counts = {}
    for site in SITES:
        folder = find_site(root, site)
        if folder is None:
            raise DataError(f"site folder {root / site} is missing (expected <Site>/Image/<case>/<slice>.png)")
        cases = sorted(p.name for p in (folder / "Image").iterdir() if p.is_dir()) if (folder / "Image").is_dir() else []
        if len(cases) < 3:
            raise DataError(f"{folder / 'Image'} has {len(cases)} case folder(s); a case-level split needs >= 3")
        order = [cases[i] for i in torch.randperm(len(cases), generator=gen)]
        n_train = max(1, int(fractions[0] * len(cases)))
        n_val = max(1, int(fractions[1] * len(cases)))
        groups = {"training": order[:n_train], "validation": order[n_train:n_train + n_val],
                  "testing": order[n_train + n_val:]}
        spec = {}
        for key, group in groups.items():
            entries = []
            for case in sorted(group):
                for image in sorted((folder / "Image" / case).glob("*.png")):
                    mask = folder / "Mask" / case / image.name
                    if not mask.is_file():
                        raise DataError(f"mask {mask} for slice {image} is missing")
                    entries.append({"image": str(image.relative_to(root)), "label": str(mask.relative_to(root))})
            spec[key] = entries
        write_json(out_dir / f"{site}.json", spec)
        counts[site] = {k: len(v) for k, v in spec.items()}
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the six site JSON files with a case-level split.")
    p.add_argument("--data_root", required=True, help="folder holding <Site>/Image/<case>/*.png and <Site>/Mask/...")
    p.add_argument("--out", required=True, help="folder for <Site>.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        counts = build_split_json(Path(args.data_root), Path(args.out), seed=args.seed)
    except DataError as err:
        print(f"prostate: error: {err}", file=sys.stderr)
        return 2
    for site, c in counts.items():
        print(f"{site}: {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
