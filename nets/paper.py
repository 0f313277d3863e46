"""The paper's full-size models (Jiang et al., MICCAI 2023): DenseNet-121 for RSNA-ICH and
a 32-feature U-Net for prostate, both with BatchNorm that keeps no running statistics."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from nets import register
from nets.unet import UNet, batch_norm_no_stats


@register("densenet121")
def densenet121(in_channels: int, num_outputs: int) -> nn.Module:
    """MONAI's DenseNet-121 made the paper's: BatchNorm without affine parameters or running
    statistics, and a ZeroPad2d(2) after the first dense block (feature maps 60/30/15/7 at
    224 px instead of 56/28/14/7): 6,872,258 parameters, as the paper's code."""
    from monai.networks.nets import DenseNet121  # MONAI takes seconds to import; only this model needs it

    # MONAI's initialisation writes BatchNorm's affine weights, so they are removed afterwards.
    model = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_outputs,
                        norm=("batch", {"track_running_stats": False}))
    _drop_affine(model)
    layers = []
    for name, module in model.features.named_children():
        layers.append((name, module))
        if name == "denseblock1":
            layers.append(("zero_padding", nn.ZeroPad2d(2)))
    model.features = nn.Sequential(OrderedDict(layers))
    return model


@register("unet")
def unet(in_channels: int, num_outputs: int) -> nn.Module:
    return UNet(in_channels, num_outputs, width=32, depth=4, norm=batch_norm_no_stats)


def _drop_affine(module: nn.Module) -> None:
    """Replace every BatchNorm2d below `module` by one without affine parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.BatchNorm2d(child.num_features, eps=child.eps, affine=False,
                                                 track_running_stats=False))
        else:
            _drop_affine(child)
