"""Score the global model on every hospital's val or test split, and their mean."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from datasets.base import FederatedData, Split
from federated.flat import FlatState
from federated.task import EVAL_BATCH, Task, label_probabilities, predict
from utils.fairness import fairness_evaluation

MEAN = "mean"
MERGED = "merged"


@dataclass
class EvalSet:
    """All hospitals' images of one split stacked once, so evaluation is one batched pass."""

    names: list[str]
    sizes: list[int]
    images: torch.Tensor
    targets: torch.Tensor
    prepare: object = None
    attributes: dict = field(default_factory=dict)  # pooled per-image fairness attributes
    batch: int = 0  # the training batch size: BatchNorm models are scored in batches of it


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether the model's outputs depend on the batch it is given (BatchNorm without
    running statistics normalises with the batch's own, in evaluation too)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
               for m in model.modules())


def model_outputs(model: nn.Module, es: EvalSet) -> list[torch.Tensor]:
    """Outputs per group of `es`. A model that normalises with batch statistics sees each
    hospital alone, in batches of the training batch size in file order, as the paper's
    evaluation loaders give it; other models are run over all images in pooled chunks
    (the same outputs, fewer calls)."""
    if es.batch and uses_batch_statistics(model):
        return [predict(model, images, es.prepare, es.batch) for images in es.images.split(es.sizes)]
    return list(predict(model, es.images, es.prepare).split(es.sizes))


def eval_set(data: FederatedData, split: str, *, merge: bool, batch: int = 0) -> EvalSet:
    """Per-hospital groups, or one pooled group with --merge (the paper's global val/test)."""
    splits = [getattr(h, split) for h in data.hospitals]
    pooled = Split.concat(splits)
    if merge:
        return EvalSet([MERGED], [len(pooled)], pooled.images, pooled.targets, data.prepare, pooled.attributes,
                       batch)
    return EvalSet([h.name for h in data.hospitals], [len(s) for s in splits], pooled.images, pooled.targets,
                   data.prepare, pooled.attributes, batch)


def evaluate(model: nn.Module, flat: FlatState, params: torch.Tensor | list[torch.Tensor], es: EvalSet,
             task: Task) -> dict[str, dict]:
    """Metrics per hospital plus their unweighted mean over hospitals (the paper's report).
    `params`: one global parameter vector for every hospital, or one vector per hospital
    (personalised models), in the order of `es.names`."""
    if isinstance(params, torch.Tensor):
        flat.set(params)
        outputs = model_outputs(model, es)
    else:
        if len(params) != len(es.names):
            raise ValueError(f"{len(params)} parameter vectors for {len(es.names)} hospitals")
        outputs = []
        for p, images in zip(params, es.images.split(es.sizes)):
            flat.set(p)
            batch = es.batch if es.batch and uses_batch_statistics(model) else EVAL_BATCH
            outputs.append(predict(model, images, es.prepare, batch))
    results = {name: task.score(out, tgt, es.batch)
               for name, out, tgt in zip(es.names, outputs, es.targets.split(es.sizes))}
    metrics = next(iter(results.values())).keys()
    results[MEAN] = {m: nanmean([r[m] for r in results.values()]) for m in metrics}
    return results


def evaluate_fairness(model: nn.Module, flat: FlatState, params: torch.Tensor, val: EvalSet, test: EvalSet,
                      task: Task, groups: dict[str, list[str]], label_names: list[str], *, resamples: int,
                      seed: int) -> dict:
    """The chest-radiograph study's evaluation of one model over all hospitals' images
    pooled: per-finding Youden thresholds on validation, test metrics overall and per
    subgroup, parity differences, bootstrap intervals (utils.fairness); empty when the
    dataset has no attributes."""
    if not groups or not test.attributes:
        return {}
    flat.set(params)
    scores = {}
    for name, es in (("val", val), ("test", test)):
        outputs = torch.cat(model_outputs(model, es))
        scores[name] = label_probabilities(task.kind, outputs).double().cpu().numpy()
    labels = {name: es.targets.reshape(len(es.targets), -1).cpu().numpy() for name, es in (("val", val), ("test", test))}
    names = label_names or [f"output{i}" for i in range(scores["test"].shape[1])]
    attributes = {k: v.cpu().numpy() for k, v in test.attributes.items()}
    return fairness_evaluation(scores["val"], labels["val"], scores["test"], labels["test"], attributes, groups,
                               names, resamples=resamples, seed=seed)


def nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
