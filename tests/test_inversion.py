"""Gradient inversion against what the pipeline releases: iDLG rebuilds one image from an
unprotected update and fails under client-level DP at the paper's noise levels; the
attacker's model of the client reproduces the real message; the metrics are MONAI's."""
from __future__ import annotations

import math

import pytest
import torch

from attacks.inversion import _flat, idlg, infer_label, inverting_gradients, total_variation
from attacks.metrics import image_metrics, match_order
from attacks.scenarios import SCENARIOS, observe, round_flags


def _observe(scenario: str, **kwargs) -> object:
    settings = dict(model="lenet", batch=1, steps=1, img_size=32, lr=0.1, seed=0) | kwargs
    return observe(round_flags(**settings) + SCENARIOS[scenario])


@pytest.fixture(scope="module")
def unprotected():
    return _observe("none")


def test_the_attacker_s_model_of_the_client_gives_the_real_message(unprotected):
    """Same data through the simulated procedure: the message the hook saw, to float32."""
    obs = unprotected
    simulated = _flat(obs.client.simulate(obs.images.double(), obs.labels)).detach()
    observed = _flat(obs.client.observed(obs.true_update))
    assert float(torch.linalg.vector_norm(simulated - observed) / torch.linalg.vector_norm(observed)) < 1e-5
    assert torch.equal(obs.view, obs.true_update)  # no protection: the server reads the message itself
    assert math.isinf(obs.epsilon)


def test_multi_step_updates_are_simulated_too():
    obs = _observe("none", batch=4, steps=3)
    simulated = _flat(obs.client.simulate(obs.images.double(), obs.labels)).detach()
    observed = _flat(obs.client.observed(obs.true_update))
    assert float(torch.linalg.vector_norm(simulated - observed) / torch.linalg.vector_norm(observed)) < 1e-5


def test_idlg_rebuilds_one_image_from_an_unprotected_update(unprotected):
    obs = unprotected
    label = infer_label(obs.client, obs.view)
    assert label == int(obs.labels[0])
    recovered, distance = idlg(obs.client, obs.view, tuple(obs.images.shape), torch.tensor([label]), iterations=300)
    scores = image_metrics(obs.images, recovered, obs.box)
    assert distance < 1e-8
    assert scores["psnr"] > 30 and scores["ssim"] > 0.9


@pytest.mark.parametrize("scenario", ["client DP z=0.5", "client DP z=1.0", "client DP z=1.5"])
def test_idlg_fails_under_client_level_dp_at_the_paper_s_noise(scenario):
    obs = _observe(scenario)
    assert math.isfinite(obs.epsilon)
    # the view is the clipped update plus noise of std z C per coordinate (the others removed)
    noise = obs.view - obs.true_update
    z = float(SCENARIOS[scenario][SCENARIOS[scenario].index("--noise_multiplier") + 1])
    assert float(noise.std()) == pytest.approx(z * 10.0, rel=0.05)  # --S 10, the default
    recovered, _ = idlg(obs.client, obs.view, tuple(obs.images.shape), torch.tensor([infer_label(obs.client, obs.view)]),
                        iterations=300)
    scores = image_metrics(obs.images, recovered, obs.box)
    assert scores["psnr"] < 15 and scores["ssim"] < 0.2


def test_the_server_under_secure_aggregation_reads_only_masked_values(unprotected):
    obs = _observe("SecAgg+")  # the same round: the message is the ring encoding of the same update
    assert obs.view.shape == unprotected.true_update.shape
    cosine = torch.nn.functional.cosine_similarity(obs.view.double(), unprotected.true_update.double(), dim=0)
    assert abs(float(cosine)) < 0.05  # the masked input says nothing of the update


def test_inverting_gradients_runs_in_the_box_and_improves_on_its_start(unprotected):
    obs = unprotected
    recovered, distance = inverting_gradients(obs.client, obs.view, tuple(obs.images.shape), obs.labels, box=obs.box,
                                              iterations=200, restarts=1)
    assert obs.box[0] <= float(recovered.min()) and float(recovered.max()) <= obs.box[1]
    assert distance < 1e-3
    assert image_metrics(obs.images, recovered, obs.box)["psnr"] > 15


def test_metrics_are_the_textbook_ones_and_batches_are_matched():
    gen = torch.Generator().manual_seed(0)
    originals = torch.rand(3, 1, 16, 16, generator=gen)
    noisy = (originals + 0.05 * torch.randn(3, 1, 16, 16, generator=gen)).clamp(0, 1)
    scores = image_metrics(originals, noisy.flip(0), (0.0, 1.0))  # given in the wrong order
    mse = ((noisy - originals) ** 2).flatten(1).mean(1)
    assert scores["per_image"]["mse"] == pytest.approx(mse.tolist(), rel=1e-5)
    assert scores["per_image"]["psnr"] == pytest.approx((10 * torch.log10(1 / mse)).tolist(), rel=1e-5)
    assert image_metrics(originals, originals, (0.0, 1.0))["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(match_order(originals, originals.flip(0)), originals)
    assert float(total_variation(torch.ones(1, 1, 4, 4))) == 0.0


def test_the_command_writes_its_table_rows_and_figure(tmp_path):
    from attacks import invert
    from utils import io

    out = tmp_path / "out"
    assert invert.main(["--out", str(out), "--scenarios", "none,client DP z=1.0", "--methods", "idlg",
                        "--idlg_iterations", "5", "--img_size", "16", "--batches", "1,2", "--threads", "1"]) == 0
    rows = io.read_csv(out / "results.csv")
    assert [(r["batch"], r["scenario"]) for r in rows] == [("1", "none"), ("1", "client DP z=1.0"),
                                                            ("2", "none"), ("2", "client DP z=1.0")]
    assert rows[0]["labels"].startswith("inferred") and rows[2]["labels"] == "given"
    assert float(rows[1]["epsilon"]) > 0 and rows[0]["epsilon"] == "inf"
    assert len(eval(rows[2]["per_image"])["psnr"]) == 2  # noqa: S307 -- our own JSON of floats
    assert (out / "lenet_batch1_steps1.png").stat().st_size > 0 and (out / "lenet_batch2_steps1.png").exists()
    assert "| lenet | 2 | 1 | client DP z=1.0 |" in (out / "attacks.md").read_text()


def test_the_command_refuses_an_unknown_scenario(tmp_path, capsys):
    from attacks import invert
    with pytest.raises(SystemExit):
        invert.main(["--out", str(tmp_path), "--scenarios", "client DP z=9"])
    assert "unknown scenario or method 'client DP z=9'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
