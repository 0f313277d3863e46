"""How close a reconstruction is to the images it came from: MSE, PSNR, SSIM (MONAI's).

Both batches are scaled to [0, 1] by the data's box first, so PSNR and SSIM have a data
range of 1. A batch reconstruction comes in no particular order: each reconstructed image
is matched to one original by the assignment with the smallest total MSE (scipy's
Hungarian solver), the usual reading of batch attacks.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def match_order(originals: torch.Tensor, recovered: torch.Tensor) -> torch.Tensor:
    """`recovered` reordered so that image i is the one matched to original i."""
    cost = ((originals[:, None] - recovered[None]) ** 2).flatten(2).mean(2)
    _, columns = linear_sum_assignment(cost.numpy())
    return recovered[torch.as_tensor(columns)]


def image_metrics(originals: torch.Tensor, recovered: torch.Tensor, box: tuple[float, float]) -> dict:
    """Per image and mean MSE, PSNR (dB) and SSIM of `recovered` against `originals`
    ([B, C, H, W] each), after matching the order and scaling by `box`."""
    from monai.metrics import MSEMetric, PSNRMetric, SSIMMetric  # MONAI takes seconds to import

    lo, hi = box
    a = ((originals.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    b = ((match_order(originals.detach().cpu(), recovered.detach().cpu()).float() - lo) / (hi - lo)).clamp(0, 1)
    mse = MSEMetric(reduction="none")(b, a).flatten()
    psnr = PSNRMetric(max_val=1.0, reduction="none")(b, a).flatten()
    kernel = min(11, a.shape[-1] - (1 - a.shape[-1] % 2))  # an odd window no wider than the image
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=kernel, reduction="none")(b, a).flatten()
    per_image = {"mse": mse.tolist(), "psnr": psnr.clamp(max=100.0).tolist(), "ssim": ssim.tolist()}
    return {"per_image": per_image, **{name: float(np.mean(values)) for name, values in per_image.items()}}
