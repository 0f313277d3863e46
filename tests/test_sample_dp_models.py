"""DP-SGD (--dp_level sample) on every registered model: it trains, or the run is refused
with one line that names the model and what to use instead."""
import math

import pytest

import fed_train
import nets
from federated.choices import MODELS
from tests.conftest import TINY, TINY_SEG
from tests.test_findings import run

REFUSED = {"densenet121", "unet"}  # BatchNorm: batch statistics mix the samples
DP_SGD = ["--dp_level", "sample", "--sample_noise", "1.0", "--rounds", "1"]


def data_for(model: str) -> list[str]:
    return TINY_SEG if model.startswith("unet") else TINY


def test_every_registered_model_is_covered():
    assert sorted(nets.MODELS) == sorted(MODELS)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_dp_sgd_trains_every_model_or_refuses_it_in_one_line(model, tmp_path, capsys):
    args = data_for(model) + DP_SGD + ["--model", model]
    if model in REFUSED:
        code = fed_train.main(args + ["--save_path", str(tmp_path), "--exp", "r"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].endswith(
            f"--model {model} cannot be trained with DP-SGD (BatchNorm2d normalises with batch statistics); "
            "per-sample gradients need layers that do not mix samples: use a GroupNorm model such as dpresnet, "
            "resnet9, cnn or unet_small")
        assert not list(tmp_path.iterdir())  # nothing half-written
        return
    summary = run(args, tmp_path)
    accounts = {name: a for name, a in summary["privacy_report"]["accounts"].items() if name.startswith("sample/")}
    assert accounts and all(math.isfinite(a["epsilon"]["rdp"]) for a in accounts.values())


@pytest.mark.parametrize("model, extra", [("cnn", ["--grad_sample_mode", "ghost"]),
                                          ("cnn_narrow", ["--grad_sample_mode", "ghost", "--physical_batch", "4"]),
                                          ("cnn", ["--physical_batch", "4"]),
                                          ("unet_small", ["--physical_batch", "2"])])
def test_dp_sgd_trains_the_small_models_in_ghost_mode_and_in_physical_batches(model, extra, tmp_path):
    summary = run(data_for(model) + DP_SGD + ["--model", model] + extra, tmp_path)
    assert summary["rounds_run"] == 1
