"""The demographic groups of the chest-radiograph fairness study, shared by `synthetic-cxr`
and the radiograph CSV loader: sex (male, female) and the study's five age groups."""
from __future__ import annotations

import torch

SEX_GROUPS = ["male", "female"]
AGE_EDGES = (30, 60, 70, 80)  # years; a group runs from its lower edge up to, not including, the next
AGE_GROUPS = ["<30", "30-59", "60-69", "70-79", "80+"]
ATTRIBUTE_GROUPS = {"sex": SEX_GROUPS, "age": AGE_GROUPS}


def age_group(years: torch.Tensor) -> torch.Tensor:
    """Index into AGE_GROUPS of each age in years (30 -> "30-59", 80 and above -> "80+")."""
    return torch.bucketize(years, torch.tensor(AGE_EDGES, dtype=years.dtype), right=True)
