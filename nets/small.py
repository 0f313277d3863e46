"""Small CPU-sized models for the embedded synthetic tasks."""
from __future__ import annotations

import torch
import torch.nn as nn

from nets import register


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


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


class SmallUNet(nn.Module):
    """A two-level U-Net (conv-GroupNorm-ReLU blocks, max-pool down, transposed-conv up,
    skip concatenation) sized for 32-64 px slices on a CPU."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 8):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_conv_block(in_channels, w), _conv_block(w, w))
        self.enc2 = nn.Sequential(_conv_block(w, 2 * w), _conv_block(2 * w, 2 * w))
        self.bottom = nn.Sequential(_conv_block(2 * w, 4 * w), _conv_block(4 * w, 4 * w))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.Sequential(_conv_block(4 * w, 2 * w), _conv_block(2 * w, 2 * w))
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = nn.Sequential(_conv_block(2 * w, w), _conv_block(w, w))
        self.out = nn.Conv2d(w, num_outputs, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


@register("unet_small")
def small_unet(in_channels: int, num_outputs: int) -> nn.Module:
    return SmallUNet(in_channels, num_outputs)
