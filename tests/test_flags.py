"""Each flag has the effect it claims, in a tiny end-to-end run."""
import math

import pytest

from federated.config import parse_config
from federated.loop import local_lr
from tests.test_loop import _run

DP = ["--mode", "dpsgd", "--noise_multiplier", "1.0", "--delta", "0.01"]


def test_merge_scores_one_pooled_split(tiny_args):
    out = _run(tiny_args + ["--merge"])
    assert list(out["summary"]["test_per_hospital"]) == ["merged"]
    assert ",merged,val,auc," in out["metrics"] and ",hospital00,val," not in out["metrics"]


def test_lr_decay_multiplies_the_local_rate_every_round():
    cfg = parse_config(["--lr", "0.01", "--lr_decay", "0.5"])
    assert [local_lr(cfg, r) for r in range(3)] == [0.01, 0.005, 0.0025]
    assert local_lr(parse_config(["--lr", "0.01"]), 7) == 0.01  # off by default, as the paper


def test_debug_shrinks_the_data_to_four_batches():
    cfg = parse_config(["--debug", "--batch", "4"])
    assert (cfg.train_size, cfg.val_size, cfg.test_size) == (16, 8, 8)


def test_weighted_average_and_balanced_split_run(tiny_args):
    out = _run(tiny_args + ["--weighted_avg", "--balance_split", "-VN", "2", "--size_skew", "0.8"])
    counts = out["summary"]["subclients_per_hospital"]
    assert sum(counts) == 2 * 3 and len(set(counts)) > 1  # larger hospitals got more sub-clients


def test_noclip_has_no_finite_guarantee(tiny_args):
    s = _run(tiny_args + DP + ["--noclip"])["summary"]
    assert all(math.isinf(e) for unit in s["privacy"]["epsilon"].values() for e in unit.values())
    assert any("--noclip" in item for item in s["privacy_report"]["not_covered"])


def test_target_unit_hospital_calibrates_for_the_hospital(tiny_args):
    p = _run(tiny_args + ["--mode", "dpsgd", "--epsilon", "6.0", "--target_unit", "hospital", "-VN", "2"])[
        "summary"]["privacy"]
    assert 5.5 < p["epsilon"]["hospital"]["rdp"] <= 6.0
    assert p["epsilon"]["subclient"]["rdp"] < p["epsilon"]["hospital"]["rdp"]


@pytest.mark.parametrize("flag", ["--init_vn", "--ada_vn"])
def test_probe_round_flags_charge_every_round(tiny_args, flag):
    s = _run(tiny_args + DP + ["--adaclip", flag, "--ada_prog"])["summary"]
    assert s["privacy"]["rounds_charged"] == 3 and s["final_v"] >= 1


def test_per_round_accountant_is_the_chosen_one(tiny_args):
    out = _run(tiny_args + DP + ["--accountant", "pld"])
    last = [r.split(",") for r in out["metrics"].splitlines() if r.startswith("2,server,privacy,epsilon_subclient")]
    assert float(last[0][4]) == pytest.approx(out["summary"]["privacy"]["epsilon"]["subclient"]["pld"])


def test_secure_noise_runs_are_not_reproducible(tiny_args):
    a = _run(tiny_args + DP + ["--secure_rng", "--exp", "a"])
    b = _run(tiny_args + DP + ["--secure_rng", "--exp", "b"])
    assert a["metrics"] != b["metrics"]
    assert not any(i.startswith("randomness") for i in a["summary"]["privacy_report"]["not_covered"])


def test_local_epochs_repeat_the_local_pass(tiny_args):
    from federated import loop
    from federated.setup import build_federation
    steps = {}
    for epochs in (1, 2):
        fed = build_federation(parse_config(tiny_args + ["--local_epochs", str(epochs)]))
        state = loop.initial_state(fed)
        loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
        steps[epochs] = float(state.moments.of(0, 0).step[0])
    assert steps[2] == 2 * steps[1] > 0


def test_gpu_cpu_forces_the_cpu():
    import torch
    from federated.setup import select_device
    assert select_device("cpu") == torch.device("cpu")


def test_subclient_shards_index_the_hospital_data_without_copies(tiny_args):
    from federated import loop
    from federated.setup import build_federation
    fed = build_federation(parse_config(tiny_args + ["-VN", "2"]))
    state = loop.initial_state(fed)
    shards = loop.subclient_data(fed, state)
    assert all(s.parent is h.train for h, per_h in zip(fed.data.hospitals, shards) for s in per_h)
    assert sum(len(s) for s in shards[0]) == len(fed.data.hospitals[0].train)


def test_progress_bars_are_drawn_on_a_terminal_only(tmp_path, capsys):
    """A redirected log gets no progress bar (it used to get one 30 KB line of redraws)."""
    import fed_train
    from tests.conftest import TINY
    args = [a for a in TINY if a != "--no_progress"] + ["--save_path", str(tmp_path)]
    assert fed_train.main(args) == 0
    err = capsys.readouterr().err
    assert "round/s" not in err and "s/round" not in err and "\r" not in err
