"""The paper's full-size models (Jiang et al., MICCAI 2023): DenseNet-121 for RSNA-ICH and
a 32-feature U-Net for prostate, both with BatchNorm that keeps no running statistics."""
from __future__ import annotations

import torch.nn as nn

from nets import register
from nets.unet import UNet, batch_norm_no_stats


@register("densenet121")
def densenet121(in_channels: int, num_outputs: int) -> nn.Module:
    from monai.networks.nets import DenseNet121  # MONAI takes seconds to import; only this model needs it

    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_outputs,
                       norm=("batch", {"track_running_stats": False}))


@register("unet")
def unet(in_channels: int, num_outputs: int) -> nn.Module:
    return UNet(in_channels, num_outputs, width=32, depth=4, norm=batch_norm_no_stats)
