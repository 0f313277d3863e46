"""How the clip bound C is chosen each round.

- FixedClip (--S): C is a constant.
- MedianClip (--adaclip, the paper's code): C = min(median of the round's update norms, 25).
  The median is computed from unprotected norms and is not privatised: the privacy report
  lists it as not covered.
- QuantileClip (--adaclip with --strict_dp): private adaptive clipping, Andrew et al.
  (NeurIPS 2021), Alg. 1: each sub-client sends b_k = 1[||delta_k|| <= C] with its update;
  the server releases sum_k b_k + N(0, sigma_b^2) (a Gaussian release of sensitivity 1, charged to
  the ledger) and updates C <- C * exp(-eta * (b_bar - gamma)) toward the gamma quantile,
  where b_bar divides the noised count by the expected number of participants (q times the
  planned sub-clients, as Andrew et al. do under sampling), never by the realised one:
  the released fraction's scale must not depend on who was sampled.
"""
from __future__ import annotations

import math

import torch

from privacy.mechanism import gaussian_noise

MEDIAN_CAP = 25.0  # the paper's code caps the median bound ("important for dp2")


class FixedClip:
    def __init__(self, bound: float):
        self.bound = bound

    def bound_for(self, norms: torch.Tensor) -> float:
        return self.bound

    def after_round(self, within_bound: float, gen: torch.Generator, *, secure: bool,
                    expected: float) -> float | None:
        """Update the bound for the next round from the number of this round's updates whose
        norm was within the bound (`expected`: the public number of participants to divide
        by); returns the noise multiplier of any release."""
        return None

    def state_dict(self) -> dict:
        return {"bound": self.bound}

    def load_state_dict(self, state: dict) -> None:
        self.bound = state["bound"]


class NoClip(FixedClip):
    """--noclip ablation: no clipping, so no finite privacy guarantee."""

    def __init__(self):
        super().__init__(math.inf)


class MedianClip(FixedClip):
    def __init__(self):
        super().__init__(math.nan)

    def bound_for(self, norms: torch.Tensor) -> float:
        if len(norms):
            self.bound = min(float(torch.median(norms)), MEDIAN_CAP)
        elif math.isnan(self.bound):  # nobody sampled before any median: the cap (only noise is released)
            self.bound = MEDIAN_CAP
        return self.bound


class QuantileClip(FixedClip):
    def __init__(self, initial: float, *, quantile: float, lr: float, count_noise: float):
        super().__init__(initial)
        self.quantile, self.lr, self.count_noise = quantile, lr, count_noise

    def after_round(self, within_bound: float, gen: torch.Generator, *, secure: bool,
                    expected: float) -> float | None:
        count = within_bound + float(gaussian_noise(1, self.count_noise, gen, secure=secure))
        fraction = count / expected
        self.bound *= math.exp(-self.lr * (fraction - self.quantile))
        return self.count_noise  # sensitivity 1 per sub-client: multiplier = sigma_b
