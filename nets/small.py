"""Small CPU-sized models for the embedded synthetic tasks."""
from __future__ import annotations

import torch
import torch.nn as nn

from nets import register
from nets.unet import UNet, group_norm


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    # ReLU not in place: under DP-SGD, Opacus's per-sample hooks own the norm layer's output
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.GroupNorm(4, cout), nn.ReLU())


class SmallCNN(nn.Module):
    """Four conv-GroupNorm-ReLU stages with pooling, then global average and max pooling
    concatenated (max pooling keeps a small lesion's response from being averaged away)."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width), nn.MaxPool2d(2),
            _conv_block(width, 2 * width), nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width), nn.MaxPool2d(2),
            _conv_block(4 * width, 4 * width))
        self.head = nn.Linear(8 * width, num_outputs)

    def forward(self, x):
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


@register("cnn")
def small_cnn(in_channels: int, num_outputs: int) -> nn.Module:
    return SmallCNN(in_channels, num_outputs)


@register("cnn_narrow")
def narrow_cnn(in_channels: int, num_outputs: int) -> nn.Module:
    """The small CNN at half width (8/16/32/32 channels, 15k parameters at one output pair):
    the paper-regime runs (--scale paper), where a CPU trains 100 rounds of 20 hospitals."""
    return SmallCNN(in_channels, num_outputs, width=8)


@register("unet_small")
def small_unet(in_channels: int, num_outputs: int) -> nn.Module:
    """Two levels of 8/16 channels (32 at the bottleneck), GroupNorm: sized for 32-64 px on a CPU."""
    return UNet(in_channels, num_outputs, width=8, depth=2, norm=group_norm)


class LeNet(nn.Module):
    """The LeNet of Zhao, Mopuri and Bilen (iDLG, 2020) and Zhu et al. (DLG, 2019): three 5x5
    convolutions of 12 channels with sigmoid activations (stride 2, 2, 1), then one linear
    layer; an adaptive pooling to 8 x 8 makes it fit any image size. Smooth and small: the
    model on which gradient inversion is known to succeed (attacks/)."""

    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
            nn.AdaptiveAvgPool2d(8))
        self.head = nn.Linear(12 * 8 * 8, num_outputs)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


@register("lenet")
def lenet(in_channels: int, num_outputs: int) -> nn.Module:
    return LeNet(in_channels, num_outputs)
