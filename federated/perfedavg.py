"""Per-FedAvg's local step (Fallah, Mokhtari, Ozdaglar, "Personalized federated learning
with theoretical guarantees: a model-agnostic meta-learning approach", NeurIPS 2020).

The client minimises F(w) = f(w - alpha grad f(w)): the loss after one personalising step.
One local step takes three independent batches D, D', D'':

    temp = w - alpha grad f(w; D)                              (the personalising step)
    FO:  w <- w - beta grad f(temp; D')                        (first-order: Eq. 8 without the Hessian)
    HF:  w <- w - beta (I - alpha H(w; D'')) grad f(temp; D')  (Hessian-free, Eq. 10)

where HF's Hessian-vector product is the central difference
(grad f(w + delta v; D'') - grad f(w - delta v; D'')) / (2 delta), exact for a quadratic.
The step is a pure function of the parameters, a gradient oracle and the batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch

PERFEDAVG_ALGOS = ("perfedavg_fo", "perfedavg_hf", "pppml")  # pppml: the published code's steps (federated/local.py)

GradFn = Callable[[torch.Tensor, Hashable], torch.Tensor]  # (flat params, batch) -> flat gradient


@dataclass(frozen=True)
class PerFedAvgSettings:
    algo: str
    alpha: float               # the personalising step size
    beta: float                # the meta step size
    hf_delta: float = 1e-3     # HF's finite-difference width

    def __post_init__(self):
        if self.algo not in PERFEDAVG_ALGOS:
            raise ValueError(f"unknown Per-FedAvg variant {self.algo!r}; choose one of {PERFEDAVG_ALGOS}")
        if not self.alpha > 0:
            raise ValueError(f"--alpha must be > 0 (got {self.alpha})")
        if not self.beta > 0:
            raise ValueError(f"--beta must be > 0 (got {self.beta})")
        if not self.hf_delta > 0:
            raise ValueError(f"--hf_delta must be > 0 (got {self.hf_delta})")


def finite_difference_hvp(grad: GradFn, w: torch.Tensor, v: torch.Tensor, *, batch: Hashable,
                          delta: float) -> torch.Tensor:
    """H(w; batch) v by the central difference of gradients (Fallah et al., Sec. 5)."""
    return (grad(w + delta * v, batch) - grad(w - delta * v, batch)) / (2 * delta)


def perfedavg_step(w: torch.Tensor, grad: GradFn, batches: tuple, settings: PerFedAvgSettings) -> torch.Tensor:
    """One Per-FedAvg step from `w` on `batches` (D, D'[, D''] for HF); returns the new w."""
    needed = 3 if settings.algo == "perfedavg_hf" else 2
    if len(batches) < needed:
        raise ValueError(f"{settings.algo} takes {'three batches' if needed == 3 else 'two batches'} a step "
                         f"(got {len(batches)})")
    temp = w - settings.alpha * grad(w, batches[0])
    outer = grad(temp, batches[1])
    if settings.algo == "perfedavg_hf":
        outer = outer - settings.alpha * finite_difference_hvp(grad, w, outer, batch=batches[2],
                                                               delta=settings.hf_delta)
    return w - settings.beta * outer
