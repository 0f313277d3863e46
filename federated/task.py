"""What differs between classification and segmentation: loss, scoring, primary metric."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from datasets.base import CLASSIFICATION, MULTICLASS, MULTILABEL, SEGMENTATION
from utils.metrics import classification_metrics, multiclass_metrics, multilabel_metrics, paper_segmentation_metrics

# Chunks of 64 run faster than one batch of hundreds on a CPU (activations stay in cache).
EVAL_BATCH = 64


@dataclass(frozen=True)
class Task:
    kind: str
    primary_metric: str
    loss_fn: nn.Module
    # (model outputs, targets) of one hospital, and its evaluation batch size (0: one batch) -> metrics
    score: Callable[..., dict]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, prepare=None, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    model.eval()
    outputs = []
    for i in range(0, images.shape[0], batch_size):
        batch = images[i:i + batch_size]
        outputs.append(model(batch if prepare is None else prepare(batch, train=False)))
    return torch.cat(outputs)


def _score_classification(outputs: torch.Tensor, targets: torch.Tensor, batch: int = 0) -> dict:
    # Two-logit softmax, as the paper's DenseNet: the score is P(class 1).
    probs = torch.softmax(outputs, dim=1)[:, 1]
    return classification_metrics(targets.cpu(), probs.cpu())


def _score_multiclass(outputs: torch.Tensor, targets: torch.Tensor, batch: int = 0) -> dict:
    probs = torch.softmax(outputs, dim=1)
    return multiclass_metrics(targets.cpu().numpy(), probs.cpu().numpy())


def _score_multilabel(outputs: torch.Tensor, targets: torch.Tensor, batch: int = 0) -> dict:
    return multilabel_metrics(targets.cpu().numpy(), torch.sigmoid(outputs).cpu().numpy())


def _score_segmentation(outputs: torch.Tensor, targets: torch.Tensor, batch: int = 0) -> dict:
    # The paper's soft Dice, IoU and HD95, per evaluation batch as its loaders give them,
    # with the hard Dice (logit > 0) beside them.
    return paper_segmentation_metrics(outputs.cpu(), targets.cpu(), batch=batch or len(outputs))


def label_probabilities(kind: str, outputs: torch.Tensor) -> torch.Tensor:
    """One probability per label [n, L] for operating points and fairness: each finding's
    sigmoid (multi-label), or P(class 1) of a two-class softmax (binary classification)."""
    if kind == MULTILABEL:
        return torch.sigmoid(outputs)
    if kind == CLASSIFICATION:
        return torch.softmax(outputs, dim=1)[:, 1:2]
    raise ValueError(f"fairness evaluation needs a binary or multi-label task, not {kind!r}")


SEG_LOSSES = ("dice", "dicece")


def make_task(kind: str, *, seg_loss: str = "dice") -> Task:
    if kind == CLASSIFICATION:
        return Task(kind, "auc", nn.CrossEntropyLoss(), _score_classification)
    if kind == MULTICLASS:
        return Task(kind, "acc", nn.CrossEntropyLoss(), _score_multiclass)
    if kind == MULTILABEL:
        return Task(kind, "auc", nn.BCEWithLogitsLoss(), _score_multilabel)
    if kind == SEGMENTATION:
        from monai.losses import DiceCELoss, DiceLoss  # ~3 s to import: only segmentation needs it

        # The paper's prostate loss is the soft Dice of sigmoid probabilities per image (MONAI's
        # DiceLoss, smoothing 1e-5 as the paper's); --seg_loss dicece adds binary cross-entropy.
        loss = DiceLoss(sigmoid=True) if seg_loss == "dice" else DiceCELoss(sigmoid=True)
        return Task(kind, "dice", loss, _score_segmentation)
    raise ValueError(f"unknown task kind {kind!r}")
