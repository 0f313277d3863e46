"""A model's floating state as one flat vector: the unit the server works on.

The vector covers every floating tensor a client would send, parameters and floating
buffers alike, so nothing reaches the server outside it (docs/privacy.md, threat model). Integer
buffers (e.g. BatchNorm's num_batches_tracked) carry no data statistics and are not sent.

The model's tensors are views into one vector (and their gradients views into a second),
so reading or writing the whole state, or stepping the optimizer over it, is a single
vector operation instead of one per tensor. Four-dimensional tensors (convolution
kernels) are laid out channels-last, (out, height, width, in): the CPU's convolution,
pooling and GroupNorm kernels run 1.2-1.6x faster on channels-last activations, which
channels-last kernels produce (docs/design.md, "The fast engine"). The layout depends
only on the flags (not on the device), so a vector means the same on every machine.
DP-SGD keeps the plain layout: Opacus's per-sample gradients of convolutions assume it
(with channels-last kernels its two clipping modes disagree; tests/test_local_dp.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _view(vector: torch.Tensor, shape: torch.Size, channels_last: bool) -> torch.Tensor:
    """`vector` (one tensor's slice) viewed as `shape`, channels-last for 4-D shapes."""
    if len(shape) == 4 and channels_last:
        out, inp, height, width = shape
        return vector.view(out, height, width, inp).permute(0, 3, 1, 2)
    return vector.view(shape)


class FlatState:
    def __init__(self, model: nn.Module, *, channels_last: bool = True):
        self.channels_last = channels_last
        state = model.state_dict(keep_vars=True)
        self.names = [k for k, t in state.items() if t.is_floating_point()]
        self.tensors = [state[k] for k in self.names]
        self.shapes = [t.shape for t in self.tensors]
        self.numel = sum(t.numel() for t in self.tensors)
        self.vector = torch.cat([t.detach().permute(0, 2, 3, 1).reshape(-1) if t.dim() == 4 and channels_last else
                                 t.detach().reshape(-1) for t in self.tensors])
        self.grad = torch.zeros_like(self.vector)
        for t, data, grad in zip(self.tensors, self.split(self.vector), self.split(self.grad)):
            t.data = data
            if t.requires_grad:
                t.grad = grad  # backward accumulates into the gradient vector in place

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Views of `vector` shaped as the model's tensors; a stacked [R, P] vector gives
        [R, *shape] views (one row per sub-client, for the batched engine)."""
        views, offset = [], 0
        for shape in self.shapes:
            n = shape.numel()
            chunk = vector[..., offset:offset + n]
            views.append(_view(chunk, shape, self.channels_last) if vector.dim() == 1 else
                         _batched_view(chunk, shape, self.channels_last))
            offset += n
        return views

    def get(self) -> torch.Tensor:
        return self.vector.detach().clone()

    @torch.no_grad()
    def set(self, vector: torch.Tensor) -> None:
        self.vector.copy_(vector)

    def zero_grad(self) -> None:
        self.grad.zero_()

    def to_state_dict(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: tensor} of `vector` in the model's own shapes (contiguous copies)."""
        return {name: view.contiguous() for name, view in zip(self.names, self.split(vector))}


def _batched_view(chunk: torch.Tensor, shape: torch.Size, channels_last: bool) -> torch.Tensor:
    """[R, n] -> [R, *shape] view, channels-last for 4-D shapes."""
    rows = chunk.shape[0]
    if len(shape) == 4 and channels_last:
        out, inp, height, width = shape
        return chunk.view(rows, out, height, width, inp).permute(0, 1, 4, 2, 3)
    return chunk.view(rows, *shape)
