"""Gradient inversion: rebuild a client's images from the update it sent.

Two attacks, written here (the maintained libraries need torchvision, which this torch
build cannot import):

- iDLG (Zhao, Mopuri, Bilen, "iDLG: Improved deep leakage from gradients", 2020): the
  label of a single image from the sign of the last layer's gradient, then L-BFGS on the
  squared distance between the update that dummy data would produce and the observed one.
- Inverting Gradients (Geiping, Bauermeister, Droege, Moeller, NeurIPS 2020): cosine
  distance plus total variation, Adam on the signed gradient, the image kept in the data's
  box, several restarts, the best kept.

Both match whole local updates, not only one gradient: `ClientModel.simulate` replays the
client's known procedure (plain SGD steps at its learning rate on the same batch, then the
clip the client half applies) on the dummy data, differentiably (torch.func). The attacker
knows the architecture, the starting parameters and the procedure, never the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.func import functional_call


@dataclass
class ClientModel:
    """What the attacker knows of how a client turned its data into its update."""
    model: nn.Module
    names: list[str]                 # the model's floating tensors, in the flat vector's order
    split: callable                  # flat vector -> tensors shaped as the model's (FlatState.split)
    start: torch.Tensor              # the global parameters the client started from [P]
    loss_fn: nn.Module
    lr: float
    steps: int = 1                   # local SGD steps on the same batch (epochs of one batch)
    clip: float | None = None        # the L2 bound the client half clips the update to

    def __post_init__(self):
        # float64: with a smooth model at initialisation most of an update does not depend on
        # the image (2e-5 of it did, for LeNet); float32 loses that part in rounding
        self.model = self.model.double()
        self.start = self.start.detach().double()
        trainable = {name for name, _ in self.model.named_parameters()}
        self.trainable = [name for name in self.names if name in trainable]

    def simulate(self, images: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
        """The update (per tensor) these images would produce, differentiable in `images`
        (float64 images)."""
        # the parameters need a gradient of their own: the client's steps are gradients in them
        start = dict(zip(self.names, self.split(self.start.detach().requires_grad_(True))))
        tensors = dict(start)
        self.model.train()
        for _ in range(self.steps):
            loss = self.loss_fn(functional_call(self.model, tensors, (images,)), targets)
            grads = torch.autograd.grad(loss, [tensors[n] for n in self.trainable], create_graph=True)
            for name, grad in zip(self.trainable, grads):
                tensors[name] = tensors[name] - self.lr * grad
        delta = [tensors[name] - start[name] for name in self.trainable]
        if self.clip is not None:
            norm = torch.sqrt(sum((d * d).sum() for d in delta))
            factor = torch.clamp(self.clip / (norm + 1e-12), max=1.0)
            delta = [d * factor for d in delta]
        return delta

    def observed(self, update: torch.Tensor) -> list[torch.Tensor]:
        """The observed flat update [P] as the trainable tensors `simulate` returns."""
        tensors = dict(zip(self.names, self.split(update.detach().double())))
        return [tensors[name].detach() for name in self.trainable]


def infer_label(client: ClientModel, update: torch.Tensor) -> int:
    """iDLG's rule for one image under cross-entropy: the last layer's weight gradient is
    (p_i - y_i) h with h >= 0, so only the true class's row sums below zero. An SGD update
    is minus the gradient: the true class is the row with the largest sum."""
    weight = [t for t in client.observed(update) if t.dim() == 2][-1]
    return int(weight.sum(dim=1).argmax())


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (Geiping et al.'s image prior)."""
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + \
        (images[..., :, 1:] - images[..., :, :-1]).abs().mean()


def idlg(client: ClientModel, update: torch.Tensor, shape: tuple[int, ...], labels: torch.Tensor, *,
         iterations: int = 300, seed: int = 0) -> tuple[torch.Tensor, float]:
    """iDLG: L-BFGS on ||simulate(x) - update||^2 / ||update||^2 from a random start.
    Returns the reconstruction and the final relative distance."""
    target = _flat(client.observed(update))
    scale = max(float((target * target).sum()), 1e-30)
    gen = torch.Generator().manual_seed(seed)
    dummy = torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy], lr=1.0, max_iter=iterations, history_size=100,
                                  tolerance_grad=1e-12, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = ((_flat(client.simulate(dummy, labels)) - target) ** 2).sum() / scale
        loss.backward()
        return loss

    optimizer.step(closure)
    final = float(((_flat(client.simulate(dummy, labels)) - target) ** 2).sum().detach() / scale)
    return dummy.detach(), final


def inverting_gradients(client: ClientModel, update: torch.Tensor, shape: tuple[int, ...], labels: torch.Tensor, *,
                        box: tuple[float, float], iterations: int = 1000, restarts: int = 2, tv: float = 1e-2,
                        lr: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Inverting Gradients: minimise 1 - cos(simulate(x), update) + tv * TV(x) by Adam on the
    gradient's sign, x clamped to `box`, the step size cut by 10 at 3/8, 5/8 and 7/8 of the
    way; the restart with the smallest cosine distance wins."""
    target = _flat(client.observed(update))
    lo, hi = box
    best, best_loss = None, float("inf")
    for restart in range(restarts):
        gen = torch.Generator().manual_seed(seed * 1000 + restart)
        dummy = (lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
        optimizer = torch.optim.Adam([dummy], lr=lr * (hi - lo))
        milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        for _ in range(iterations):
            optimizer.zero_grad()
            simulated = _flat(client.simulate(dummy, labels))
            distance = 1 - torch.nn.functional.cosine_similarity(simulated, target, dim=0, eps=1e-30)
            (distance + tv * total_variation(dummy)).backward()
            dummy.grad.sign_()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                dummy.clamp_(lo, hi)
        final = float(1 - torch.nn.functional.cosine_similarity(_flat(client.simulate(dummy, labels)), target,
                                                                dim=0, eps=1e-30).detach())
        if final < best_loss:
            best, best_loss = dummy.detach().clone(), final
    return best, best_loss
