"""ResNet-9-style networks with GroupNorm for the two sample-level DP systems.

GroupNorm instead of BatchNorm: per-sample gradients (Opacus DP-SGD) need layers that do
not mix samples, and no running statistics reach the server outside the clipped update.
Both pass Opacus's ModuleValidator (tests/test_nets_dp.py).

- DPResNet (the BloodMNIST federation): no max-pool; a 64 then 128 channel stem, a
  residual 128 block, 256 and 512 stages with stride 2, global average pooling, a linear
  head.
- ResNet-9 (the chest-radiograph study; the common ResNet-9 layout):
  conv 64, conv 128 + pool, residual 128, conv 256 + pool, conv 512 + pool, residual 512,
  global max pooling, linear head.
The `_small` variants divide every width by 4 for the CPU synthetic presets.
"""
from __future__ import annotations

import torch.nn as nn

from nets import register


def conv_gn(cin: int, cout: int, *, stride: int = 1, groups: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(groups, cout), cout), nn.ReLU())


class Residual(nn.Module):
    """x + f(x) with two conv-GN-ReLU layers of constant width."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(conv_gn(width, width), conv_gn(width, width))

    def forward(self, x):
        return x + self.body(x)


class DPResNet(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, width: int = 64):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_gn(in_channels, w), conv_gn(w, 2 * w), Residual(2 * w),
            conv_gn(2 * w, 4 * w, stride=2), conv_gn(4 * w, 8 * w, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * w, num_outputs)

    def forward(self, x):
        return self.head(self.features(x))


class ResNet9(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, width: int = 64):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_gn(in_channels, w), conv_gn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),
            conv_gn(2 * w, 4 * w), nn.MaxPool2d(2), conv_gn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * w, num_outputs)

    def forward(self, x):
        return self.head(self.features(x))


@register("dpresnet")
def dpresnet(in_channels: int, num_outputs: int) -> nn.Module:
    return DPResNet(in_channels, num_outputs)


@register("dpresnet_small")
def dpresnet_small(in_channels: int, num_outputs: int) -> nn.Module:
    return DPResNet(in_channels, num_outputs, width=16)


@register("resnet9")
def resnet9(in_channels: int, num_outputs: int) -> nn.Module:
    return ResNet9(in_channels, num_outputs)


@register("resnet9_small")
def resnet9_small(in_channels: int, num_outputs: int) -> nn.Module:
    return ResNet9(in_channels, num_outputs, width=16)
