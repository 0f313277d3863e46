"""One test per finding of the privacy review (docs/privacy.md, "Changelog"). Each failed
on the code before the privacy rework. Epsilons are checked against dp-accounting (or the
closed form) called directly here, not through the repository's accountant wrapper."""
import csv
import json
import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

import fed_train
from datasets.base import Split
from federated.config import parse_config
from federated.setup import build_federation
from tests.conftest import TINY
from utils import io

DP = ["--mode", "dpsgd", "--S", "1.0"]
# DP-SGD needs a model without in-place activations or BatchNorm
CXR = ["--data", "synthetic-cxr", "--train_size", "48", "--val_size", "16", "--test_size", "16",
       "--img_size", "16", "--batch", "8", "--rounds", "3", "--model", "resnet9_small", "--no_progress"]


def run(args, tmp_path, name="run"):
    assert fed_train.main(args + ["--save_path", str(tmp_path), "--exp", name]) == 0
    return io.read_json(next(Path(tmp_path).rglob(f"{name}/summary.json")))


def metrics(summary):
    with open(Path(summary["run_dir"]) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def rdp(event, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, delta=1e-3):
    acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=relation)
    return acc.compose(event).get_epsilon(delta)


def pld(event, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, delta=1e-3):
    acc = pld_privacy_accountant.PLDAccountant(neighboring_relation=relation, value_discretization_interval=1e-3)
    return acc.compose(event).get_epsilon(delta)


def poisson_rounds(q, z, rounds):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)


# 1. strict mode with q < 1: one subsampled Gaussian per round, z_eff from all three releases
def test_1_strict_releases_compose_before_subsampling(tmp_path):
    args = TINY + DP + ["-N", "4", "--rounds", "4", "--noise_multiplier", "1.0", "--strict_dp", "--adaclip",
                        "--norm_sum_noise", "1.0", "--clip_count_noise", "1.0", "-sr", "0.5",
                        "--client_sampling", "poisson", "--delta", "1e-3"]
    summary = run(args, tmp_path)
    z_eff = (1 + 1 + 1) ** -0.5
    expected = pld(poisson_rounds(0.5, z_eff, 4))
    assert summary["privacy"]["epsilon"]["subclient"]["pld"] == pytest.approx(expected, rel=1e-6)


def test_1_the_reviews_example_value():
    z_eff = (1 + 1 + 1) ** -0.5
    assert pld(poisson_rounds(0.2, z_eff, 100)) == pytest.approx(32.05, abs=0.02)


def test_1_calibration_under_strict_poisson_does_not_overshoot(tmp_path):
    args = TINY + DP + ["-N", "4", "--rounds", "4", "--epsilon", "8", "--strict_dp", "--norm_sum_noise", "2.0",
                        "-sr", "0.5", "--client_sampling", "poisson", "--delta", "1e-3"]
    summary = run(args, tmp_path)
    z = summary["privacy"]["noise_multiplier"]
    spent = rdp(poisson_rounds(0.5, (z ** -2 + 0.25) ** -0.5, 4))
    assert 0.97 * 8 <= spent <= 8
    assert summary["privacy"]["epsilon"]["subclient"]["rdp"] == pytest.approx(spent, rel=1e-9)


def test_1_bounded_mode_stops_within_budget(tmp_path):
    args = TINY + DP + ["-N", "4", "--rounds", "30", "--noise_multiplier", "2.0", "--epsilon", "6",
                        "--dp_mode", "bounded", "--strict_dp", "--norm_sum_noise", "1.0", "-sr", "0.5",
                        "--client_sampling", "poisson"]
    summary = run(args, tmp_path)
    assert summary["stopped_by_budget"]
    z_eff = (0.25 + 1) ** -0.5
    assert rdp(poisson_rounds(0.5, z_eff, summary["privacy"]["rounds_charged"])) <= 6


# 2. the realised noise is never logged; the rule reads the expected noise norm
def test_2_noise_norm_is_never_logged(tmp_path):
    summary = run(TINY + DP + ["--noise_multiplier", "1.0", "--ada_vn", "--adaclip"], tmp_path)
    names = {r["metric"] for r in metrics(summary)}
    assert "noise_norm" not in names
    assert "expected_noise_norm" in names
    rows = [r for r in metrics(summary) if r["metric"] in ("expected_noise_norm", "noise_std")]
    by_round = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["metric"]] = float(r["value"])
    numel = sum(p.numel() for p in build_federation(parse_config(TINY)).model.state_dict().values()
                if p.is_floating_point())
    for values in by_round.values():  # std * sqrt(P): public, not the noise drawn
        assert values["expected_noise_norm"] == pytest.approx(values["noise_std"] * math.sqrt(numel), rel=1e-6)


# 3. the noise std does not depend on who was sampled
def test_3_fixed_size_sampling_with_unequal_counts_has_a_fixed_noise_std(tmp_path):
    args = TINY + DP + ["-N", "6", "--train_size", "24", "--size_skew", "1.0", "--balance_split", "-VN", "2",
                        "--rounds", "8", "--noise_multiplier", "1.0", "-sr", "0.5"]
    summary = run(args, tmp_path)
    assert min(summary["subclients_per_hospital"]) < max(summary["subclients_per_hospital"])
    stds = {float(r["value"]) for r in metrics(summary) if r["metric"] == "noise_std"}
    assert len(stds) == 1


@pytest.mark.parametrize("flags", [["--weighted_avg", "--client_sampling", "poisson"],
                                   ["--mode", "dpnova", "--client_sampling", "poisson"]])
def test_3_sample_dependent_denominators_are_refused(flags, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + DP + ["--noise_multiplier", "1.0", "-sr", "0.5"] + flags)
    assert "-sr" in capsys.readouterr().err


# 4. three units; the patient's sensitivity is 2C; membership is stable per record
def test_4_patient_unit_has_twice_the_sensitivity(tmp_path):
    summary = run(TINY + DP + ["--noise_multiplier", "2.0", "-VN", "2", "--delta", "1e-3"], tmp_path)
    eps = summary["privacy"]["epsilon"]
    gaussian = lambda z: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 3)  # noqa: E731
    assert eps["subclient"]["pld"] == pytest.approx(pld(gaussian(2.0)), rel=1e-6)
    assert eps["patient"]["pld"] == pytest.approx(pld(gaussian(1.0)), rel=1e-6)
    assert eps["hospital"]["pld"] == pytest.approx(pld(gaussian(1.0)), rel=1e-6)  # v = 2


def test_4_adding_a_record_moves_no_other_record():
    from federated.subclients import assign, record_keys
    from utils.seeding import split_secret
    gen = torch.Generator().manual_seed(0)
    images, targets = torch.randn(40, 1, 4, 4, generator=gen), torch.randint(0, 2, (40,), generator=gen)
    secret = split_secret(0)
    before = assign(record_keys(Split(images[:39], targets[:39]), secret), 4)
    after = assign(record_keys(Split(images, targets), secret), 4)
    changed = [k for k in range(4) if not torch.equal(before[k], after[k])]
    assert len(changed) == 1 and len(after[changed[0]]) == len(before[changed[0]]) + 1
    assert 39 in after[changed[0]]


# 5. fixed-size sampling: replace-one adjacency, multiplier z/2 (z/(2v) for a hospital)
def test_5_fixed_size_sampling_uses_replace_one(tmp_path):
    args = TINY + DP + ["-N", "20", "--train_size", "8", "--batch", "8", "--noise_multiplier", "1.0", "-sr", "0.5",
                        "--rounds", "4", "--delta", "0.01"]
    summary = run(args, tmp_path)
    replace = dp_accounting.NeighboringRelation.REPLACE_ONE
    swor = lambda rounds: dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(  # noqa
        20, 10, dp_accounting.GaussianDpEvent(0.5)), rounds)
    assert rdp(swor(40), replace, delta=0.01) == pytest.approx(136.9, abs=0.1)  # the review's example
    eps = summary["privacy"]["epsilon"]["subclient"]
    assert eps["rdp"] == pytest.approx(rdp(swor(4), replace, delta=0.01), rel=1e-6)
    unsubsampled = pld(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(0.5), 4), delta=0.01)
    assert eps["pld"] >= unsubsampled * (1 - 1e-3)


# 6, 7. resuming with --rounds changed refuses when the noise was calibrated over --rounds
@pytest.mark.parametrize("calibrated, rounds", [
    (CXR + ["--dp_level", "sample", "--sample_epsilon", "4"], "2"),
    (TINY + DP + ["--epsilon", "5"], "6")])
def test_6_7_resume_with_other_rounds_is_refused(calibrated, rounds, tmp_path, capsys):
    args = calibrated + ["--save_path", str(tmp_path), "--exp", "r"]
    assert fed_train.main(args) == 0
    args[args.index("--rounds") + 1] = rounds
    code = fed_train.main(args + ["--resume"])
    assert code == 2
    assert "--rounds" in capsys.readouterr().err


# 8. --epsilon for the hospital unit calibrates with the real sub-client counts
def test_8_hospital_calibration_uses_the_real_counts(tmp_path):
    args = TINY + DP + ["-N", "6", "--train_size", "24", "--size_skew", "1.0", "--balance_split", "-VN", "2",
                        "--epsilon", "10", "--target_unit", "hospital", "--delta", "1e-3"]
    summary = run(args, tmp_path)
    assert max(summary["subclients_per_hospital"]) > 2
    assert summary["privacy"]["epsilon"]["hospital"]["rdp"] <= 10


# 9. --sample_epsilon calibrates on the steps each sub-client really takes
def test_9_sample_epsilon_is_not_exceeded_with_unequal_subclients(tmp_path):
    args = CXR + ["--dp_level", "sample", "--sample_epsilon", "4", "--train_size", "63", "--batch", "16", "-VN", "2"]
    summary = run(args, tmp_path)
    assert summary["sample_privacy"]["epsilon_max"]["rdp"] <= 4


# 10, 12. every logged metric is declared in the report; the report lists what was missing
def test_10_12_every_logged_metric_is_declared(tmp_path):
    summary = run(TINY + DP + ["--noise_multiplier", "1.0"], tmp_path)
    report = summary["privacy_report"]
    not_covered = " ".join(report["not_covered"])
    assert "clipped fraction" in not_covered and "sum of unprotected update norms" in not_covered
    assert "last.pt" in not_covered and "hospital sizes" in not_covered
    strict = run(TINY + DP + ["--noise_multiplier", "1.0", "--strict_dp"], tmp_path, "strict")
    assert any(s.startswith("validation scores") for s in strict["privacy_report"]["not_covered"])


def test_10_an_undeclared_metric_is_refused(tmp_path):
    from federated.privacy_setup import declared_outputs
    from utils.results import RunRecorder
    recorder = RunRecorder(tmp_path, outputs=declared_outputs(parse_config(TINY + DP + ["--noise_multiplier", "1"])))
    with pytest.raises(RuntimeError, match="not declared"):
        recorder.log([{"round": 0, "hospital": "server", "split": "privacy", "metric": "noise_norm", "value": 1.0}])
    recorder.close()


# 11. --secure_rng: client sampling and the sub-client key are not predictable from --seed
def test_11_secure_rng_draws_sampling_and_split_from_the_os():
    from utils.seeding import make_streams, split_secret
    a, b = make_streams(0, secure=True), make_streams(0, secure=True)
    assert not torch.equal(torch.rand(8, generator=a["sampling"]), torch.rand(8, generator=b["sampling"]))
    assert split_secret(0, secure=True) != split_secret(0, secure=True)
    seeded = make_streams(0)
    assert torch.equal(torch.rand(8, generator=seeded["sampling"]), torch.rand(8, generator=make_streams(0)["sampling"]))
    assert split_secret(0) == split_secret(0)


def test_11_secure_runs_differ_in_their_split(tmp_path):
    args = TINY + DP + ["--noise_multiplier", "1.0", "-VN", "2", "--secure_rng", "--rounds", "1"]
    sizes = [run(args, tmp_path, f"s{i}")["subclient_sizes"] for i in range(3)]
    assert len({json.dumps(s) for s in sizes}) > 1
    np.testing.assert_equal([sum(map(sum, s)) for s in sizes], [48] * 3)


def test_4_paper_split_patient_epsilon_is_the_whole_hospitals_replacement(tmp_path):
    """--subclient_split paper: the patient is charged as if all v sub-clients of its
    hospital changed (z / 2v), checked against dp-accounting directly; the report says why."""
    summary = run(TINY + DP + ["--noise_multiplier", "2.0", "-VN", "2", "--delta", "1e-3",
                               "--subclient_split", "paper"], tmp_path)
    eps = summary["privacy"]["epsilon"]
    gaussian = lambda z: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 3)  # noqa: E731
    assert eps["subclient"]["pld"] == pytest.approx(pld(gaussian(2.0)), rel=1e-6)
    assert eps["patient"]["pld"] == pytest.approx(pld(gaussian(0.5)), rel=1e-6)
    assert "drawn at random" in summary["privacy_report"]["accounts"]["client/patient"]["adjacency"]


def test_4_paper_split_calibration_targets_the_patient_it_charges(tmp_path):
    """--epsilon with --target_unit patient under the paper split calibrates z for the
    patient charged with all v sub-clients, so the patient's epsilon ends at the target."""
    summary = run(TINY + DP + ["--epsilon", "30", "--target_unit", "patient", "-VN", "2", "--delta", "1e-3",
                               "--subclient_split", "paper"], tmp_path)
    assert 29.0 < summary["privacy"]["epsilon"]["patient"]["rdp"] <= 30.0
