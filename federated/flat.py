"""A model's floating state as one flat vector: the unit the server works on.

The vector covers every floating tensor a client would send, parameters and floating
buffers alike, so nothing reaches the server outside it (docs/privacy.md, threat model). Integer
buffers (e.g. BatchNorm's num_batches_tracked) carry no data statistics and are not sent.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class FlatState:
    def __init__(self, model: nn.Module):
        state = model.state_dict(keep_vars=True)
        self.names = [k for k, t in state.items() if t.is_floating_point()]
        self.tensors = [state[k] for k in self.names]
        self.numel = sum(t.numel() for t in self.tensors)

    def get(self) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1) for t in self.tensors])

    @torch.no_grad()
    def set(self, vector: torch.Tensor) -> None:
        offset = 0
        for t in self.tensors:
            t.copy_(vector[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
