"""One hospital's data loaded alone (what its own process, e.g. a Flower ClientApp, loads)
equals that hospital in the whole federation, key included."""
import json

import pytest
import torch

from datasets import build_centre, build_federated_data, prostate
from federated.config import parse_config
from tests.conftest import TINY
from tests.test_real_data import _png, _prostate_args
from utils.seeding import make_generator


def _same(a, b) -> bool:
    return a.name == b.name and a.key == b.key and all(
        torch.equal(getattr(a, s).images, getattr(b, s).images) and torch.equal(getattr(a, s).targets, getattr(b, s).targets)
        for s in ("train", "val", "test"))


def test_a_synthetic_centre_is_its_hospital_of_the_federation():
    cfg = parse_config(TINY)
    whole = build_federated_data(cfg, make_generator(cfg.seed, "data"))
    for index in range(cfg.clients):
        alone = build_centre(cfg, make_generator(cfg.seed, "data"), index)
        assert len(alone.hospitals) == 1 and _same(alone.hospitals[0], whole.hospitals[index])
        assert (alone.task, alone.in_channels, alone.num_outputs) == (whole.task, whole.in_channels, whole.num_outputs)
    with pytest.raises(ValueError, match="not in a federation of -N 3"):
        build_centre(cfg, make_generator(cfg.seed, "data"), 3)


def test_a_prostate_centre_reads_its_own_site_only(tmp_path):
    prostate_root = tmp_path / "prostate"
    for site in prostate.SITES:
        for case in range(3):
            for s in range(2):
                _png(prostate_root / site / "Image" / f"case{case}" / f"{s}.png", size=(24, 24))
                _png(prostate_root / site / "Mask" / f"case{case}" / f"{s}.png", size=(24, 24), mode="L", value=255)
    prostate.build_split_json(prostate_root, tmp_path / "json", seed=0)
    cfg = parse_config(_prostate_args(tmp_path, prostate_root, tmp_path / "json"))
    whole = build_federated_data(cfg, make_generator(cfg.seed, "data"))
    chosen = whole.hospitals[1]
    # every other site's images are gone: loading this centre must not need them
    for site in prostate.SITES:
        if site == chosen.name:
            continue
        spec = json.loads((tmp_path / "json" / f"{site}.json").read_text())
        for entry in spec["training"] + spec["validation"] + spec["testing"]:
            (prostate_root / entry["image"]).unlink(missing_ok=True)
    alone = build_centre(cfg, make_generator(cfg.seed, "data"), 1)
    assert _same(alone.hospitals[0], chosen) and alone.hospitals[0].key == 1
