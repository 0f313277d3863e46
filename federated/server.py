"""Server optimizers: turn the round's aggregate update into new global parameters.

Each is explicit state plus `step`, serialisable with `state_dict` / `load_state_dict`
(STYLE.md, habit 3), so the checkpoint captures it and a resumed run continues it.
"""
from __future__ import annotations

import torch


class FedAvgServer:
    """w_{t+1} = w_t + Delta_t with server learning rate 1 (McMahan et al., 2017, Alg. 1)."""

    def step(self, params: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return params + update

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SERVERS = {"fedavg": FedAvgServer}
