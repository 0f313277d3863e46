"""U-Net (Ronneberger et al., 2015): conv-norm-ReLU pairs, max-pool down, transposed-conv
up, skip concatenation. `width` is the first level's channels, doubled per level."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

Norm = Callable[[int], nn.Module]


def group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(4, channels)


def batch_norm_no_stats(channels: int) -> nn.Module:
    """BatchNorm that normalises with the batch's statistics, keeps no running ones (nothing
    data-derived in buffers) and has no affine scale and shift, as the paper's code."""
    return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


def conv_pair(cin: int, cout: int, norm: Norm) -> nn.Sequential:
    # ReLU not in place: under DP-SGD, Opacus's per-sample hooks own the norm layer's output
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, *, width: int, depth: int, norm: Norm):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([conv_pair(in_channels, chans[0], norm)] +
                                  [conv_pair(chans[i - 1], chans[i], norm) for i in range(1, depth + 1)])
        ups, merges = [], []
        for i in range(depth, 0, -1):  # built up, merge, up, merge...: fixes the initialisation order
            ups.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2))
            merges.append(conv_pair(2 * chans[i - 1], chans[i - 1], norm))
        self.up = nn.ModuleList(ups)
        self.merge = nn.ModuleList(merges)
        self.out = nn.Conv2d(width, num_outputs, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)
