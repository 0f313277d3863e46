"""Server optimizers: turn the round's aggregate update into new global parameters.

Each optimizer has up to three hooks, all plain calls made by the round loop for every
optimizer alike (no special cases in the loop):

- `precondition(deltas, rnd)`: what a sub-client does to its delta before sending it, so
  before clipping and noise (FedNova's step normalisation, DP2-RMSProp's preconditioner);
- `step(params, update, rnd)`: the server's move from the (noisy) aggregate;
- `rule_stats(stats, rnd)`: the statistics the intermediary rule reads, so its phi uses
  this optimizer's own update norms, as in the paper's code.

State is explicit and serialisable (`state_dict` / `load_state_dict`),
so a checkpoint captures it and a resumed run continues it. Hyper-parameters follow the
paper's code (med-air/Client-DP-FL, federated_dp/*_trainer.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ServerRound:
    """What the server knows about one round's participants."""
    index: int
    weights: torch.Tensor      # [K] aggregation weights
    local_steps: torch.Tensor  # [K] local optimizer steps each participant took


class FedAvgServer:
    """w_{t+1} = w_t + Delta_t, server learning rate 1 (McMahan et al., 2017, Alg. 1)."""

    def precondition(self, deltas: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        return deltas

    def step(self, params: torch.Tensor, update: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        return params + update

    def rule_stats(self, stats: dict, rnd: ServerRound) -> dict:
        return stats

    def precondition_state(self) -> dict[str, torch.Tensor]:
        """What `precondition` reads of the server's state: a deployment sends it to the
        hospitals with the global parameters (it is computed from released aggregates)."""
        return {}

    def load_precondition_state(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FedAdamServer(FedAvgServer):
    """Server Adam on the aggregate (Reddi et al., ICLR 2021, Alg. 2, FedAdam):
        m = b1 m + (1 - b1) Delta,  v = b2 v + (1 - b2) Delta^2,
        w = w + lr * m / (sqrt(v) + tau),
    without bias correction, b1 = 0.9, b2 = 0.99, tau = 1e-9, as the paper's code."""

    def __init__(self, lr: float, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-9):
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def step(self, params: torch.Tensor, update: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        if self.m is None:
            self.m, self.v = torch.zeros_like(update), torch.zeros_like(update)
        self.m = self.beta1 * self.m + (1 - self.beta1) * update
        self.v = self.beta2 * self.v + (1 - self.beta2) * update.square()
        return params + self.lr * self.m / (self.v.sqrt() + self.tau)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v = state["m"], state["v"]


class FedNovaServer(FedAvgServer):
    """Normalised averaging (Wang et al., NeurIPS 2020, Eq. 6, with plain local steps,
    so a_i = tau_i): each sub-client sends Delta_i / tau_i (tau_i = its local steps); the
    server moves by tau_eff * (weighted mean), tau_eff = sum_i w_i tau_i.

    Under DP the normalised deltas are what gets clipped and noised; scaling the noisy
    mean by tau_eff afterwards equals the paper's code, which multiplies the weights and
    the noise std by tau_eff."""

    def precondition(self, deltas: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        return deltas / rnd.local_steps.clamp(min=1).to(deltas)[:, None]

    def step(self, params: torch.Tensor, update: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        tau_eff = float((rnd.weights * rnd.local_steps).sum())
        return params + tau_eff * update


class DP2RMSPropServer(FedAvgServer):
    """DP2-RMSProp, RMSProp with a delayed preconditioner (Li et al., ICLR 2023, Alg. 1),
    as the paper's code runs it at the server.

    Rounds alternate in blocks of `interval`: in an accumulation block the server takes
    plain steps (lr 1) and sums the aggregates into G; at the block's last round
    A = (G / count)^2 (the first time) or A = gamma A + (1 - gamma) (G / count)^2. In the
    following adaptive block each sub-client divides its delta by sqrt(A) + eps before
    sending (so before clipping) and the server steps by rmsprop_lr times the aggregate.
    A comes from noisy aggregates only, so preconditioning is post-processing."""

    def __init__(self, lr: float, *, interval: int, gamma: float = 0.9, eps: float = 1e-7):
        self.lr, self.interval, self.gamma, self.eps = lr, interval, gamma, eps
        self.G: torch.Tensor | None = None
        self.count = 0
        self.A: torch.Tensor | None = None

    def adaptive(self, round_idx: int) -> bool:
        # Until a first preconditioner exists (e.g. the probe round of --ada_vn took the
        # only accumulation round of interval 1), rounds accumulate.
        return (round_idx // self.interval) % 2 == 1 and self.A is not None

    def closes_block(self, round_idx: int) -> bool:
        return (round_idx + 1) % self.interval == 0

    def precondition(self, deltas: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        if not self.adaptive(rnd.index):
            return deltas
        return deltas / (self.A.sqrt() + self.eps)

    def step(self, params: torch.Tensor, update: torch.Tensor, rnd: ServerRound) -> torch.Tensor:
        if self.adaptive(rnd.index):
            return params + self.lr * update
        self.G = update.clone() if self.G is None else self.G + update
        self.count += 1
        if self.closes_block(rnd.index):
            mean_sq = (self.G / self.count).square()
            self.A = mean_sq if self.A is None else self.gamma * self.A + (1 - self.gamma) * mean_sq
            self.G, self.count = None, 0
        return params + update

    def precondition_state(self) -> dict[str, torch.Tensor]:
        return {} if self.A is None else {"A": self.A}

    def load_precondition_state(self, state: dict[str, torch.Tensor]) -> None:
        self.A = state.get("A")

    def rule_stats(self, stats: dict, rnd: ServerRound) -> dict:
        # The paper's code feeds the rule the sum of the clipped, preconditioned norms in
        # adaptive rounds (in --strict_dp the released norm sum is already of clipped norms).
        if self.adaptive(rnd.index) and "clipped_norm_sum" in stats:
            return {**stats, "norm_sum": stats["clipped_norm_sum"]}
        return stats

    def state_dict(self) -> dict:
        return {"G": self.G, "count": self.count, "A": self.A}

    def load_state_dict(self, state: dict) -> None:
        self.G, self.count, self.A = state["G"], state["count"], state["A"]


# Mode -> server optimizer; the private modes differ only in the aggregator.
SERVER_OF_MODE = {"fedavg": "fedavg", "dpsgd": "fedavg", "fedadam": "fedadam", "dpadam": "fedadam",
                  "fednova": "fednova", "dpnova": "fednova", "fed2rmsprop": "dp2rmsprop",
                  "dp2rmsprop": "dp2rmsprop"}


def build_server(mode: str, *, adam_lr: float, rmsprop_lr: float, dp2_interval: int) -> FedAvgServer:
    kind = SERVER_OF_MODE[mode]
    if kind == "fedadam":
        return FedAdamServer(adam_lr)
    if kind == "fednova":
        return FedNovaServer()
    if kind == "dp2rmsprop":
        return DP2RMSPropServer(rmsprop_lr, interval=dp2_interval)
    return FedAvgServer()
