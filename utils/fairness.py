"""Subgroup performance and statistical parity difference (the chest-radiograph study's
fairness measures), from any task's score function.

For each attribute (e.g. sex, age group) and each of its groups g: the task's metrics on
the images of g (AUC and accuracy), and the statistical parity difference on accuracy,
    SPD_g = acc_g - sum_{h != g} n_h acc_h / sum_{h != g} n_h,
the group against the sample-weighted mean of the other groups. With two groups this is
acc_female - acc_male for g = female. Groups without images are left out.
"""
from __future__ import annotations

from typing import Callable

import torch

Score = Callable[[torch.Tensor, torch.Tensor], dict]


def fairness_metrics(outputs: torch.Tensor, targets: torch.Tensor, attributes: dict[str, torch.Tensor],
                     groups: dict[str, list[str]], score: Score) -> dict[str, float]:
    """{"auc_sex=female": .., "acc_sex=female": .., "spd_acc_sex=female": .., ...}"""
    result: dict[str, float] = {}
    for attr, names in groups.items():
        if attr not in attributes:
            continue
        values = attributes[attr].to(outputs.device)
        per_group = {}
        for g, name in enumerate(names):
            mask = values == g
            n = int(mask.sum())
            if n == 0:
                continue
            metrics = score(outputs[mask], targets[mask])
            per_group[name] = (n, metrics["acc"])
            result[f"auc_{attr}={name}"] = metrics.get("auc", float("nan"))
            result[f"acc_{attr}={name}"] = metrics["acc"]
        for name, (n, acc) in per_group.items():
            others = [(m, a) for other, (m, a) in per_group.items() if other != name]
            if others:
                mean_others = sum(m * a for m, a in others) / sum(m for m, _ in others)
                result[f"spd_acc_{attr}={name}"] = acc - mean_others
    return result
