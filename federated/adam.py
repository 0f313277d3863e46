"""The sub-clients' local optimizer: Adam with amsgrad (the paper's), NAdam (the
chest-radiograph study's, `--local_opt nadam`) or plain SGD (`--local_opt sgd`, FedAvg's
own, whose update is the gradient the inversion attacks read), over stacked state.

Every sub-client keeps its own Adam moments between rounds (unless --reset_optimizer). They
live here as rows of three [S, P] tensors and one [S] step count, S = all sub-clients,
P = the flat model size, so a step of one sub-client (the loop engine) or of many at once
(the batched engine) is one set of vector operations, and a checkpoint writes four tensors
instead of three per model tensor per sub-client. The update is torch.optim.Adam's with
amsgrad=True (tests compare the two); each row has its own step count and bias corrections.
NAdam is torch.optim.NAdam's (Dozat, 2016; momentum decay 0.004) on the same rows: it uses
exp_avg and exp_avg_sq and leaves max_exp_avg_sq at zero; its running product of momentum
coefficients is a function of the step count, so it is recomputed, not stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as the paper's code uses
MOMENTUM_DECAY = 4e-3  # torch.optim.NAdam's default
LOCAL_OPTIMIZERS = ("adam", "nadam", "sgd")


@dataclass
class AdamMoments:
    """Adam state of R sub-clients: step [R] (float64: a re-split averages step counts, as
    the paper's code averages whole optimizer states) and the moments [R, P]."""
    step: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    max_exp_avg_sq: torch.Tensor

    @staticmethod
    def zeros(rows: int, numel: int, *, dtype: torch.dtype, device: torch.device) -> "AdamMoments":
        """Fresh state: what torch.optim.Adam starts from."""
        moments = [torch.zeros(rows, numel, dtype=dtype, device=device) for _ in range(3)]
        return AdamMoments(torch.zeros(rows, dtype=torch.float64, device=device), *moments)

    def rows(self, index: torch.Tensor | slice) -> "AdamMoments":
        """Rows `index`: views for a slice, copies for an index tensor."""
        return AdamMoments(self.step[index], self.exp_avg[index], self.exp_avg_sq[index], self.max_exp_avg_sq[index])

    def put(self, index: torch.Tensor, rows: "AdamMoments") -> None:
        for name in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            getattr(self, name).index_copy_(0, index, getattr(rows, name))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"step": self.step, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "max_exp_avg_sq": self.max_exp_avg_sq}


@torch.no_grad()
def adam_step(params: torch.Tensor, grads: torch.Tensor, state: AdamMoments, lr: float) -> None:
    """One amsgrad Adam step of every row of `params` [R, P] in place (rows of `state` too)."""
    state.step += 1
    bias_correction1 = 1 - BETA1 ** state.step
    bias_correction2_sqrt = (1 - BETA2 ** state.step).sqrt()
    state.exp_avg.lerp_(grads, 1 - BETA1)
    state.exp_avg_sq.mul_(BETA2).addcmul_(grads, grads, value=1 - BETA2)
    torch.maximum(state.max_exp_avg_sq, state.exp_avg_sq, out=state.max_exp_avg_sq)
    denom = (state.max_exp_avg_sq.sqrt() / bias_correction2_sqrt[:, None].to(params.dtype)).add_(EPS)
    step_size = (lr / bias_correction1)[:, None].to(params.dtype)
    params.sub_(state.exp_avg / denom * step_size)


def nadam_momentum(step: torch.Tensor) -> torch.Tensor:
    """NAdam's momentum coefficient mu_t = beta1 (1 - 0.5 * 0.96^(t * psi)) at step t."""
    return BETA1 * (1 - 0.5 * 0.96 ** (step * MOMENTUM_DECAY))


def nadam_momentum_product(step: torch.Tensor) -> torch.Tensor:
    """mu_1 * ... * mu_t for each step count t in `step` (rounded: a re-split averages step
    counts), float64 on its device; computed afresh (O(max t)), no state to keep in step."""
    t = step.round().long()
    top = int(t.max()) if t.numel() else 0
    steps = torch.arange(1, top + 1, dtype=torch.float64, device=step.device)
    products = torch.cat([torch.ones(1, dtype=torch.float64, device=step.device),
                          torch.cumprod(nadam_momentum(steps), 0)])
    return products[t]


@torch.no_grad()
def nadam_step(params: torch.Tensor, grads: torch.Tensor, state: AdamMoments, lr: float) -> None:
    """One NAdam step of every row of `params` [R, P] in place, as torch.optim.NAdam
    (no weight decay): a Nesterov-style mix of the gradient and the first moment."""
    state.step += 1
    mu, mu_next = nadam_momentum(state.step), nadam_momentum(state.step + 1)
    mu_product = nadam_momentum_product(state.step)
    state.exp_avg.lerp_(grads, 1 - BETA1)
    state.exp_avg_sq.mul_(BETA2).addcmul_(grads, grads, value=1 - BETA2)
    denom = (state.exp_avg_sq / (1 - BETA2 ** state.step)[:, None].to(params.dtype)).sqrt_().add_(EPS)
    grad_size = (lr * (1 - mu) / (1 - mu_product))[:, None].to(params.dtype)
    moment_size = (lr * mu_next / (1 - mu_product * mu_next))[:, None].to(params.dtype)
    params.sub_(grads / denom * grad_size + state.exp_avg / denom * moment_size)


@torch.no_grad()
def sgd_step(params: torch.Tensor, grads: torch.Tensor, state: AdamMoments, lr: float) -> None:
    """One plain SGD step (FedAvg's local solver, McMahan et al. 2017): params -= lr * grad.
    The moments stay zero; the step count still counts."""
    state.step += 1
    params.sub_(grads, alpha=lr)


LOCAL_STEPS = {"adam": adam_step, "nadam": nadam_step, "sgd": sgd_step}


class SubclientMoments:
    """Every sub-client's Adam state, stacked in (hospital, sub-client) order."""

    def __init__(self, counts: list[int], state: AdamMoments):
        self.counts = list(counts)
        self.offsets = [sum(counts[:h]) for h in range(len(counts))]
        self.state = state

    @staticmethod
    def fresh(counts: list[int], numel: int, *, dtype: torch.dtype, device: torch.device) -> "SubclientMoments":
        return SubclientMoments(counts, AdamMoments.zeros(sum(counts), numel, dtype=dtype, device=device))

    def row(self, hospital: int, subclient: int) -> int:
        return self.offsets[hospital] + subclient

    def of(self, hospital: int, subclient: int) -> AdamMoments:
        """One sub-client's state as [1, P] views (updated in place by adam_step)."""
        r = self.row(hospital, subclient)
        return self.state.rows(slice(r, r + 1))

    def resplit(self, counts: list[int]) -> "SubclientMoments":
        """New sub-clients per hospital, each starting from the mean state of its hospital's
        sub-clients that have taken a step (fresh where none has), as the paper's code."""
        old = self.state
        new = AdamMoments.zeros(sum(counts), old.exp_avg.shape[1], dtype=old.exp_avg.dtype,
                                device=old.exp_avg.device)
        offset = 0
        for h, k in enumerate(counts):
            rows = torch.arange(self.offsets[h], self.offsets[h] + self.counts[h], device=old.step.device)
            rows = rows[old.step[rows] > 0]
            if len(rows) and k:
                for name, tensor in old.tensors().items():
                    mean = tensor[rows].mean(0)
                    getattr(new, name)[offset:offset + k] = mean
            offset += k
        return SubclientMoments(counts, new)

    def state_dict(self) -> dict:
        return {"counts": self.counts, **{k: v.cpu() for k, v in self.state.tensors().items()}}

    @staticmethod
    def from_state_dict(state: dict, device: torch.device) -> "SubclientMoments":
        return SubclientMoments(state["counts"], AdamMoments(*(state[k].to(device) for k in
                                                               ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"))))
