"""--audit_canaries in a run and `python -m attacks.audit`: the audit catches a mechanism
whose noise is switched off, and with the noise on its lower bound never exceeds the
ledger's epsilon (3 seeds) for each mechanism that protects a unit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fed_train
from attacks import audit
from federated import loop
from federated.canaries import AUDIT_RECORD, OVERSIZE, Canaries
from federated.config import parse_config
from federated.messages import UPDATE
from federated.setup import build_federation
from tests.conftest import TINY
from tests.test_loop import _run

CLIENT_DP = ["--mode", "dpsgd", "--noise_multiplier", "1.0", "-VN", "2"]
SETTINGS = {
    "client DP, q = 1, hash split": CLIENT_DP + ["--subclient_split", "hash"],
    "client DP, Poisson q = 0.5": CLIENT_DP + ["-sr", "0.5", "--client_sampling", "poisson"],
    "client DP, paper split": CLIENT_DP + ["--subclient_split", "paper"],
    "client DP, hospital unit": CLIENT_DP + ["--audit_unit", "hospital"],
    "local update DP": ["--dp_level", "update_local", "--local_noise", "1.0", "--local_clip", "1.0", "-VN", "2"],
    "distributed noise under SecAgg+": ["--mode", "dpsgd", "--strict_dp", "--noise_multiplier", "1.0", "-VN", "2",
                                        "--secure_agg", "secagg+", "--noise_at", "clients", "--secagg_neighbours", "8"],
}


def _audited(tmp_path, flags, *, seed=0, canaries=100) -> dict:
    args = TINY + ["--save_path", str(tmp_path), "--seed", str(seed), "--audit_canaries", str(canaries)] + flags
    out = _run(args)
    assert audit.main([str(out["dir"])]) == 0
    return audit.io.read_json(out["dir"] / "summary.json")["audit"]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_lower_bound_stays_within_the_ledger(tmp_path, name):
    canaries = 40 if "SecAgg" in name else 100  # the protocol's cost grows with its inputs
    for seed in range(3):
        result = _audited(tmp_path / str(seed), SETTINGS[name], seed=seed, canaries=canaries)
        assert result["lower_bound"]["epsilon"] <= result["ledger_epsilon"], (name, seed, result)
        assert result["canaries"] == canaries and 0 < result["inserted"] < canaries
        # a direction the model never saw has the cosine of a random one
        assert result["null_check"]["excluded_std"] == pytest.approx(result["null_check"]["expected_std"], rel=0.35)


def test_the_audit_catches_a_mechanism_with_its_noise_switched_off(tmp_path, monkeypatch):
    """The test-only switch: the central noise is zero while the ledger charges z = 8."""
    flags = ["--mode", "dpsgd", "--noise_multiplier", "8.0", "-VN", "2"]
    honest = _audited(tmp_path / "honest", flags)
    monkeypatch.setattr("privacy.client_dp.gaussian_noise", lambda numel, std, gen, *, secure, device=None:
                        torch.zeros(numel, device=device))
    broken = _audited(tmp_path / "broken", flags)
    assert broken["ledger_epsilon"] == honest["ledger_epsilon"] < 2.0  # the ledger cannot tell
    assert broken["one_shot"]["epsilon"] > 10 * broken["ledger_epsilon"]
    assert broken["lower_bound"]["epsilon"] > broken["ledger_epsilon"]
    # 55 inserted canaries estimate the honest run's epsilon only roughly (the estimator's own
    # tests measure its accuracy with more); the broken run is in another range altogether
    assert honest["one_shot"]["epsilon"] < broken["one_shot"]["epsilon"] / 20
    assert honest["lower_bound"]["epsilon"] <= honest["ledger_epsilon"]


def test_canaries_are_clipped_to_exactly_the_bound_and_keep_their_direction(tmp_path):
    args = TINY + ["--save_path", str(tmp_path), "--audit_canaries", "6"] + CLIENT_DP + ["--S", "2.5"]
    fed = build_federation(parse_config(args))
    sent = []
    fed.pipeline.hooks.append(lambda m: sent.append(m) if m.kind == UPDATE else None)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    canary = [m for m in sent if m.sender[0] >= fed.canaries.first_key]
    inserted = int(fed.canaries.included.sum())
    assert len(canary) == inserted and len(sent) == 6 + inserted  # 3 hospitals x 2 sub-clients, then the canaries
    for m in canary:
        j = m.sender[0] - fed.canaries.first_key
        assert bool(fed.canaries.included[j])
        assert float(torch.linalg.vector_norm(m.payload)) == pytest.approx(2.5, rel=1e-5)
        direction = fed.canaries.direction(j, m.payload.numel())
        assert float(direction @ m.payload) == pytest.approx(2.5, rel=1e-5)
    # the planned federation counts every canary: the fixed weight is 1 / (N v + K)
    assert fed.canaries.count == 6 and OVERSIZE * 2.5 > 2.5


def test_a_canary_hospital_sends_v_copies_and_poisson_draws_are_keyed(tmp_path):
    cfg = parse_config(TINY + ["--save_path", str(tmp_path), "--audit_canaries", "20", "--audit_unit", "hospital"]
                       + CLIENT_DP)
    canaries = Canaries.for_run(cfg, [0, 1, 2])
    members, rows = canaries.round_rows(0, 1.0, 50, 1.0, device=torch.device("cpu"))
    assert len(members) == 2 * int(canaries.included.sum()) and canaries.first_key == 3
    assert torch.equal(rows[0], rows[1]) and members[0][1] == 0 and members[1][1] == 1
    rates = [len(canaries.senders(r, 0.3)) for r in range(200)]
    assert np.mean(rates) == pytest.approx(0.3 * int(canaries.included.sum()), rel=0.1)
    assert canaries.senders(5, 0.3) == canaries.senders(5, 0.3)


def test_no_utility_number_includes_a_canary(tmp_path):
    base = TINY + ["--save_path", str(tmp_path)] + CLIENT_DP
    summary = _run(base + ["--audit_canaries", "10"])["summary"]
    assert set(summary["val_per_hospital"]) == set(summary["test_per_hospital"]) == {"hospital00", "hospital01",
                                                                                       "hospital02"}


@pytest.mark.parametrize("flags, fragment", [
    (["--audit_canaries", "1"] + CLIENT_DP, "at least 2"),
    (["--audit_canaries", "10"], "private --mode"),
    (["--audit_canaries", "10", "--dp_level", "sample", "--sample_noise", "1.0"], "private --mode"),
    (["--audit_canaries", "10", "--adaclip"] + CLIENT_DP, "--adaclip"),
    (["--audit_canaries", "10", "--ada_vn"] + CLIENT_DP, "--ada_vn"),
    (["--audit_canaries", "10", "--weighted_avg"] + CLIENT_DP, "--weighted_avg"),
    (["--audit_canaries", "10", "--balance_split"] + CLIENT_DP, "--balance_split"),
])
def test_bad_audit_flags_are_refused(tmp_path, flags, fragment, capsys):
    with pytest.raises(SystemExit):
        parse_config(TINY + ["--save_path", str(tmp_path)] + flags)
    assert fragment in capsys.readouterr().err


def test_the_audit_command_explains_a_folder_it_cannot_read(tmp_path, capsys):
    out = _run(TINY + ["--save_path", str(tmp_path)] + CLIENT_DP)
    assert audit.main([str(out["dir"])]) == 2
    assert "--audit_canaries" in capsys.readouterr().err
    assert not (out["dir"] / AUDIT_RECORD).exists() and "audit" not in out["summary"]
    assert math.isfinite(out["summary"]["privacy"]["epsilon"]["subclient"]["rdp"])
    assert fed_train is not None


def test_the_audit_table_pools_the_seeds_of_each_setting(tmp_path):
    folders = [_run(TINY + ["--save_path", str(tmp_path), "--seed", str(seed), "--audit_canaries", "30"] + CLIENT_DP)["dir"]
               for seed in (0, 1)]
    out = tmp_path / "table"
    assert audit.main([str(f) for f in folders] + ["--table", str(out)]) == 0
    rows = audit.io.read_csv(tmp_path / "table.csv")
    assert len(rows) == 1 and rows[0]["seeds"] == "2" and rows[0]["bound_within_ledger"] == "True"
    found = [audit.io.read_json(f / "summary.json")["audit"] for f in folders]
    assert float(rows[0]["lower_bound_max"]) == max(r["lower_bound"]["epsilon"] for r in found)
    assert "| subclient | 30 | 2 |" in (tmp_path / "table.md").read_text()


def test_the_canaries_parts_one_by_one(tmp_path):
    from federated.canaries import canary_bound, planned_subclients
    base = TINY + ["--save_path", str(tmp_path)]
    cfg = parse_config(base + ["--audit_canaries", "6"] + CLIENT_DP)
    assert planned_subclients(cfg, 2) == 3 * 2 + 6 and planned_subclients(cfg, 3) == 3 * 3 + 6
    hospitals = parse_config(base + ["--audit_canaries", "6", "--audit_unit", "hospital"] + CLIENT_DP)
    assert planned_subclients(hospitals, 2) == 3 * 2 + 6 * 2
    local = parse_config(base + ["--audit_canaries", "6", "--dp_level", "update_local", "--local_noise", "1.0",
                                 "--local_clip", "0.5"])
    assert canary_bound(local) == 0.5 and canary_bound(cfg) == 10.0
    both = parse_config(base + ["--audit_canaries", "6", "--dp_level", "update_local", "--local_noise", "1.0",
                                "--local_clip", "0.5", "--S", "2.0"] + CLIENT_DP)
    assert canary_bound(both) == 2.0
    canaries = Canaries.for_run(cfg, [0, 1, 2])
    members, rows = canaries.round_rows(0, 1.0, 40, 3.0, device=torch.device("cpu"))
    assert torch.allclose(torch.linalg.vector_norm(rows, dim=1), torch.full((len(members),), OVERSIZE * 3.0))
    assert [key for key, _ in members] == [3 + j for j in torch.nonzero(canaries.included).flatten().tolist()]
    copy = Canaries.from_record(canaries.record(torch.zeros(40)))
    assert (copy.count, copy.unit, copy.per_canary, copy.seed, copy.first_key) == \
        (canaries.count, canaries.unit, canaries.per_canary, canaries.seed, canaries.first_key)
    assert torch.equal(copy.included, canaries.included)
    # a round in which no included canary is drawn sends nothing
    quiet = next(r for r in range(500) if not canaries.senders(r, 0.2))
    members, rows = canaries.round_rows(quiet, 0.2, 40, 3.0, device=torch.device("cpu"))
    assert members == [] and rows.shape == (0, 40)


def test_each_canary_draws_its_own_participation(tmp_path):
    cfg = parse_config(TINY + ["--save_path", str(tmp_path), "--audit_canaries", "40"] + CLIENT_DP)
    canaries = Canaries.for_run(cfg, [0, 1, 2])
    inserted = int(canaries.included.sum())
    counts = [len(canaries.senders(r, 0.5)) for r in range(50)]
    assert all(0 < c < inserted for c in counts)  # neither all nor none: the draws are per canary
    assert canaries.senders(3, 1.0) == torch.nonzero(canaries.included).flatten().tolist()


def test_directions_are_the_same_whether_cached_or_drawn_again(tmp_path, monkeypatch):
    import federated.canaries as canaries_module
    cfg = parse_config(TINY + ["--save_path", str(tmp_path), "--audit_canaries", "4"] + CLIENT_DP)
    cached = Canaries.for_run(cfg, [0, 1, 2])
    first = cached.direction(2, 1000)
    assert cached.direction(2, 1000) is first  # kept between rounds
    monkeypatch.setattr(canaries_module, "CACHE_FLOATS", 10)  # too small: drawn each time
    fresh = Canaries.for_run(cfg, [0, 1, 2])
    again = fresh.direction(2, 1000)
    assert torch.equal(again, first) and not fresh._cache
    assert float(torch.linalg.vector_norm(first)) == pytest.approx(1.0, rel=1e-6)
