"""`--data chest-xray`: chest radiographs listed in label tables of the common public format
(CheXpert's; MIMIC-CXR-JPG tables joined with their patient ages take the same shape).

On disk: `train.csv`, `valid.csv` and `test.csv` in --split_dir, each with the columns
`Path` (the image file, relative to --image_dir), `Sex` (Male / Female; anything else,
e.g. Unknown, keeps the image out of the sex groups), `Age` (years, 0-120) and one column
per finding named in --findings. Finding values: 1 positive; 0 or blank (not mentioned)
negative; -1 uncertain, mapped by --uncertain: `zeros` (U-Zeros, the default: uncertain
counts as negative) or `ones` (U-Ones; Irvin et al., AAAI 2019, compare both). A table with
a `Frontal/Lateral` column keeps its frontal images only, as the study used frontal views.

The study's groups (datasets/radiograph_groups.py): sex, and age <30, 30-59, 60-69, 70-79,
80+. Images are read as greyscale at --img_size and scaled to [0, 1]; training flips them
horizontally at random, as the study did. One site: the study trains centrally (-N 1).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from datasets.base import MULTILABEL, FederatedData, Hospital, Split
from datasets.imageio import DataError, load_images
from datasets.radiograph_groups import ATTRIBUTE_GROUPS, SEX_GROUPS, age_group
from datasets.transforms import ImagePreparation

SPLIT_FILES = {"train": "train.csv", "val": "valid.csv", "test": "test.csv"}
UNCERTAIN_POLICIES = {"zeros": 0.0, "ones": 1.0}  # federated.choices.UNCERTAIN_POLICIES (tests: equal)
MAX_AGE = 120
VIEW_COLUMN = "Frontal/Lateral"
LABEL_VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "": 0.0, "-1": None, "-1.0": None}


def _age(text: str, where: str) -> float:
    try:
        years = float(text)
    except ValueError:
        years = math.nan
    if not 0 <= years <= MAX_AGE:  # also false for NaN
        raise DataError(f"{where}: Age = {text!r} is not a number of years in 0-{MAX_AGE}; fix the value or "
                        "drop the row")
    return years


def _sex(text: str) -> int:
    """Index into SEX_GROUPS, or -1 (no sex group) for Unknown and other values."""
    name = {"m": "male", "f": "female"}.get(text.strip().lower(), text.strip().lower())
    return SEX_GROUPS.index(name) if name in SEX_GROUPS else -1


def read_table(path: Path, findings: list[str], uncertain: str) -> tuple[list[str], torch.Tensor, dict]:
    """(image paths, targets [n, len(findings)], {"sex", "age"} group indices) of one label
    table, validated; frontal rows only where the table says which view each image is."""
    if not path.is_file():
        raise DataError(f"label table {path} is missing; --split_dir must hold {', '.join(SPLIT_FILES.values())}")
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM is not a column name
        reader = csv.DictReader(f)
        missing = [c for c in ("Path", "Sex", "Age", *findings) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; it needs Path, Sex, Age and the "
                            f"--findings columns (has: {', '.join(reader.fieldnames or [])})")
        paths, targets, sex, ages = [], [], [], []
        for line, row in enumerate(reader, start=2):
            if VIEW_COLUMN in row and row[VIEW_COLUMN].strip().lower() != "frontal":
                continue
            where = f"{path}, line {line}"
            labels = []
            for finding in findings:
                value = row[finding].strip()
                if value not in LABEL_VALUES:
                    raise DataError(f"{where}: {finding} = {value!r}; labels must be 1, 0, -1 (uncertain) or blank")
                labels.append(UNCERTAIN_POLICIES[uncertain] if LABEL_VALUES[value] is None else LABEL_VALUES[value])
            ages.append(_age(row["Age"], where))
            paths.append(row["Path"])
            targets.append(labels)
            sex.append(_sex(row["Sex"]))
    if not paths:
        raise DataError(f"{path} has no (frontal) rows")
    attributes = {"sex": torch.tensor(sex), "age": age_group(torch.tensor(ages, dtype=torch.float64))}
    return paths, torch.tensor(targets), attributes


def build(cfg, gen: torch.Generator) -> FederatedData:
    image_dir, split_dir = Path(cfg.image_dir or ""), Path(cfg.split_dir or "")
    if cfg.clients != 1:
        raise DataError(f"--data chest-xray is one site (the study trains centrally); use -N 1, not -N {cfg.clients}")
    if not cfg.image_dir or not image_dir.is_dir():
        raise DataError(f"--image_dir {cfg.image_dir!r} is not a folder; point it at the folder the tables' Path "
                        "column is relative to")
    if not cfg.split_dir or not split_dir.is_dir():
        raise DataError(f"--split_dir {cfg.split_dir!r} is not a folder; it must hold "
                        f"{', '.join(SPLIT_FILES.values())}")
    findings = [f.strip() for f in cfg.findings.split(",")]
    splits = {}
    for split, filename in SPLIT_FILES.items():
        paths, targets, attributes = read_table(split_dir / filename, findings, cfg.uncertain)
        missing = [p for p in paths if not (image_dir / p).is_file()]
        if missing:
            raise DataError(f"{len(missing)} image(s) listed in {split_dir / filename} are missing from "
                            f"{image_dir}, e.g. {missing[0]}")
        images = load_images([image_dir / p for p in paths], size=cfg.img_size, mode="L")
        splits[split] = Split(images, targets, attributes)
    hospital = Hospital("site0", splits["train"], splits["val"], splits["test"])
    prepare = ImagePreparation(augment=True, degrees=0.0, translate=0.0)  # a random horizontal flip only
    return FederatedData("chest-xray", MULTILABEL, [hospital], in_channels=1, num_outputs=len(findings),
                         prepare=prepare, attribute_groups=ATTRIBUTE_GROUPS, label_names=findings)
