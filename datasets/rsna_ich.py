"""`--data RSNA-ICH`: the paper's RSNA intracranial-haemorrhage subset (Jiang et al. 2023).

On disk: `train.csv`, `validate.csv`, `test.csv` in --split_dir with the columns
`ImageID,epidural,intraparenchymal,intraventricular,subarachnoid,subdural,healthy`
(0/1 integers; ImageID like `ID_2d6d15f44.png`), and the PNGs in one flat --image_dir.
The label is the `healthy` column, as the paper's code does: class 1 = healthy, class 0 =
any haemorrhage, so the reported AUC is that of P(healthy). Each file is shuffled with the
seed and cut into N equal hospitals (the paper: 20). Images are read as RGB (windowed CT
PNGs carry three channels) at --img_size (224 in the paper), normalised with ImageNet
statistics, and augmented in training with a small random affine and a horizontal flip.

Without the split files, build them from Kaggle's `stage_2_train.csv` (rows `ID,Label`,
IDs like `ID_12cadc6af_epidural`):

    python -m datasets.rsna_ich --labels stage_2_train.csv --out SPLIT_DIR --size 25000
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import torch

from datasets.base import CLASSIFICATION, FederatedData, Hospital, Split
from datasets.imageio import DataError, load_images
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePreparation
from utils.io import write_csv

SUBTYPES = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
COLUMNS = ["ImageID", *SUBTYPES, "healthy"]
SPLIT_FILES = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}


def read_split(path: Path) -> tuple[list[str], list[int]]:
    """(image ids, labels = the healthy column) from one split file, validated."""
    if not path.is_file():
        raise DataError(f"split file {path} is missing; pass --split_dir with train.csv, validate.csv, test.csv "
                        "(or build them: python -m datasets.rsna_ich --labels stage_2_train.csv --out DIR)")
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM is not a column name
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
        ids, labels = [], []
        for line, row in enumerate(reader, start=2):
            if row["healthy"] not in ("0", "1"):
                raise DataError(f"{path}, line {line}: healthy = {row['healthy']!r}, but labels must be 0 or 1")
            if row["ImageID"] in ("", ".", "..") or "/" in row["ImageID"] or "\\" in row["ImageID"]:
                raise DataError(f"{path}, line {line}: ImageID {row['ImageID']!r} is not a file name; ImageIDs "
                                "name files inside --image_dir")
            ids.append(row["ImageID"])
            labels.append(int(row["healthy"]))
    if not ids:
        raise DataError(f"{path} has no rows")
    return ids, labels


def split_into_hospitals(n: int, hospitals: int, gen: torch.Generator) -> list[torch.Tensor]:
    if n < hospitals:
        raise DataError(f"a split file has {n} rows, fewer than -N {hospitals} hospitals; lower -N")
    return list(torch.tensor_split(torch.randperm(n, generator=gen), hospitals))


def build(cfg, gen: torch.Generator) -> FederatedData:
    image_dir, split_dir = Path(cfg.image_dir or ""), Path(cfg.split_dir or "")
    if not cfg.image_dir or not image_dir.is_dir():
        raise DataError(f"--image_dir {cfg.image_dir!r} is not a folder; point it at the folder of RSNA PNGs")
    if not cfg.split_dir or not split_dir.is_dir():
        raise DataError(f"--split_dir {cfg.split_dir!r} is not a folder; it must hold train.csv, validate.csv, test.csv")
    per_split, listed = {}, {}
    for split, filename in SPLIT_FILES.items():
        ids, labels = read_split(split_dir / filename)
        listed[filename] = set(ids)
        missing = [i for i in ids if not (image_dir / i).is_file()]
        if missing:
            raise DataError(f"{len(missing)} image(s) listed in {split_dir / filename} are missing from "
                            f"{image_dir}, e.g. {missing[0]}")
        images = load_images([image_dir / i for i in ids], size=cfg.img_size, mode="RGB")
        parts = split_into_hospitals(len(ids), cfg.clients, gen)
        per_split[split] = [Split(images[p], torch.tensor(labels)[p]) for p in parts]
    hospitals = [Hospital(f"hospital{h:02d}", per_split["train"][h], per_split["val"][h], per_split["test"][h])
                 for h in range(cfg.clients)]
    _warn_overlaps(split_dir, listed)
    prepare = ImagePreparation(IMAGENET_MEAN, IMAGENET_STD, augment=True)
    return FederatedData("RSNA-ICH", CLASSIFICATION, hospitals, in_channels=3, num_outputs=2, prepare=prepare)


def _warn_overlaps(split_dir: Path, listed: dict[str, set[str]]) -> None:
    """The splits should share no image: a test image seen in training measures recall, not
    generalisation. Warned, not refused: a smoke test may reuse one file on purpose."""
    names = list(listed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if shared := listed[a] & listed[b]:
                print(f"warning: {split_dir / a} and {split_dir / b} share {len(shared)} image(s), "
                      f"e.g. {min(shared)}; scores on the later split will not measure generalisation",
                      file=sys.stderr, flush=True)


def build_split_files(labels_csv: Path, out_dir: Path, *, size: int, seed: int,
                      fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> dict[str, int]:
    """A balanced binary subset of Kaggle's stage_2_train labels (half healthy), shuffled with
    `seed` and written as train/validate/test CSVs in the paper's format."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            image, _, subtype = row["ID"].rpartition("_")
            table[image][subtype] = int(row["Label"])
    incomplete = [i for i, t in table.items() if "any" not in t or any(s not in t for s in SUBTYPES)]
    if incomplete:
        raise DataError(f"{labels_csv}: {len(incomplete)} image(s) lack some subtype rows, e.g. {incomplete[0]}")
    ids = sorted(table)
    gen = torch.Generator().manual_seed(seed)
    order = [ids[i] for i in torch.randperm(len(ids), generator=gen)]
    positives = [i for i in order if table[i]["any"] == 1]
    negatives = [i for i in order if table[i]["any"] == 0]
    half = size // 2
    if len(positives) < half or len(negatives) < half:
        raise DataError(f"--size {size} needs {half} haemorrhage and {half} healthy images; {labels_csv} has "
                        f"{len(positives)} and {len(negatives)}")
    chosen = [ids_ for pair in zip(positives[:half], negatives[:half]) for ids_ in pair]
    cut1, cut2 = int(fractions[0] * len(chosen)), int((fractions[0] + fractions[1]) * len(chosen))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in (("train", chosen[:cut1]), ("val", chosen[cut1:cut2]), ("test", chosen[cut2:])):
        records = [{"ImageID": f"{i}.png", **{s: table[i][s] for s in SUBTYPES}, "healthy": 1 - table[i]["any"]}
                   for i in rows]
        write_csv(out_dir / SPLIT_FILES[name], COLUMNS, records)
        counts[name] = len(records)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the paper-format RSNA-ICH split files from stage_2_train.csv.")
    p.add_argument("--labels", required=True, help="Kaggle stage_2_train.csv (ID,Label)")
    p.add_argument("--out", required=True, help="folder for train.csv, validate.csv, test.csv")
    p.add_argument("--size", type=int, default=25000, help="images in the balanced subset (the paper: 25000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        counts = build_split_files(Path(args.labels), Path(args.out), size=args.size, seed=args.seed)
    except (DataError, FileNotFoundError, KeyError) as err:
        print(f"rsna_ich: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {counts} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
