"""The paper's architectures (Jiang et al.'s code, nets/models.py there): BatchNorm without
affine parameters or running statistics everywhere, and a ZeroPad2d(2) after DenseNet-121's
first dense block."""
import torch

from nets import build_model


def test_paper_densenet121_has_the_papers_parameter_count_and_feature_map_sizes():
    model = build_model("densenet121", 3, 2)
    assert sum(p.numel() for p in model.parameters()) == 6_872_258
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    sizes = []
    for name, module in model.features.named_children():
        if name.startswith("denseblock"):
            module.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
    with torch.no_grad():
        model.eval()(torch.zeros(2, 3, 224, 224))
    assert sizes == [56, 30, 15, 7]  # block 1 at 56, then 60 after the padding: 30, 15, 7


def test_paper_unet_batchnorm_has_no_affine_parameters():
    model = build_model("unet", 1, 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
