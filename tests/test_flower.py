"""deploy/: the same federation on Flower, in its simulation engine and across processes.

The claim is that a result on Flower is fed_train.py's result: the same global parameters
(bitwise with the loop engine), the same metrics and the same epsilon. The localhost
deployment starts a SuperLink and one SuperNode per hospital as separate processes; a
killed SuperNode must stop the run with one line and leave nothing behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deploy.settings import FlowerOptions, check_deployable, parse_flags, run_config_of
from federated.cli import main as fed_train
from federated.config import ConfigError
from federated.runfolder import run_dir
from utils import runfiles

# importing Flower's CLI warns about its click version (third-party, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:'click.utils.get_.*_stream' is deprecated:DeprecationWarning")
REPO = Path(__file__).resolve().parents[1]
SMALL = ["-N", "3", "--threads", "1", "--train_size", "32", "--val_size", "8", "--test_size", "8", "--no_progress"]


def _folder(flags: list[str]) -> Path:
    return run_dir(parse_flags(" ".join(flags)))


def _model(folder: Path, name: str = runfiles.LAST_MODEL) -> dict[str, torch.Tensor]:
    return torch.load(folder / name, weights_only=True)["model"]


def _summary(folder: Path) -> dict:
    return json.loads((folder / runfiles.SUMMARY).read_text())


def _metrics(folder: Path) -> dict[tuple, str]:
    rows = (folder / runfiles.METRICS).read_text().splitlines()
    return {tuple(r.split(",")[:4]): r.split(",")[4] for r in rows[1:]}


def _both(tmp_path: Path, flags: list[str], *flower: str) -> tuple[Path, Path]:
    """The same flags through fed_train.py and through Flower's simulation engine."""
    from deploy.simulate import simulate
    sim = [*SMALL, *flags, "--save_path", str(tmp_path / "sim")]
    assert fed_train(sim) == 0
    on_flower = [*SMALL, *flags, "--save_path", str(tmp_path / "flower")]
    simulate([*on_flower, *flower], workers=2)
    return _folder(sim), _folder(on_flower)


def test_simulation_engine_gives_fed_train_result_bitwise(tmp_path):
    simulated, flower = _both(tmp_path, ["--rounds", "3"])
    for name in (runfiles.LAST_MODEL, runfiles.BEST_MODEL):
        a, b = _model(simulated, name), _model(flower, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _metrics(simulated) == _metrics(flower)  # every train, val, privacy and test row
    s, f = _summary(simulated), _summary(flower)
    assert (s["test"], s["best_round"], s["rounds_run"]) == (f["test"], f["best_round"], 3)
    assert f["flower"]["engine"] == "simulation" and len(f["timing"]["round_s"]) == 3
    initial = _initial_model(flower)
    assert any(not torch.equal(initial[k], b[k]) for k in initial)  # it trained
    # the report tools read the Flower run folder as they read fed_train.py's
    from tools.summarize import load_summaries, summarize
    assert summarize(load_summaries([str(flower)]))


@pytest.mark.parametrize("flags", [
    # faithful: the median clip reads the norms first (two messages a round); the rule
    # re-splits the hospitals at the server from released quantities, each hospital itself
    ["--mode", "dpsgd", "--adaclip", "--ada_vn"],
    # strict: the bound goes out with the parameters (one message); the hospitals
    # precondition with the server's released DP2-RMSProp preconditioner
    ["--mode", "dp2rmsprop", "--strict_dp", "--adaclip", "--dp2_interval", "1", "-VN", "2"],
    # Poisson sampling and the paper's split: a hospital that was not sampled when the rule
    # re-split replays the re-splits it missed (its Adam states averaged each time)
    ["--mode", "dpsgd", "-N", "4", "--rounds", "5", "-sr", "0.5", "--client_sampling", "poisson",
     "--subclient_split", "paper", "--ada_vn", "--train_size", "64"],
], ids=["faithful", "strict", "sampled"])
def test_private_run_on_flower_spends_the_same_epsilon(tmp_path, flags):
    simulated, flower = _both(tmp_path, ["--rounds", "3", "--noise_multiplier", "0.5", *flags])
    s, f = _summary(simulated), _summary(flower)
    assert f["privacy"]["epsilon"] == s["privacy"]["epsilon"]
    assert f["privacy"]["rounds_charged"] == s["privacy"]["rounds_charged"] == s["rounds_run"]
    assert f["final_v"] == s["final_v"] > 1 and f["subclients_per_hospital"] == s["subclients_per_hospital"]
    a, b = _model(simulated), _model(flower)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(simulated) == _metrics(flower)


def test_flower_secagg_sum_is_the_simulation_sum_within_its_quantisation(tmp_path):
    """Flower's SecAgg+ quantises each hospital's input to 2^22 levels over [-span, span]
    (span = C times a hospital's summed weights): round 0's released statistics are within
    one level per input of fed_train.py's, the clip count that --adaclip reads crosses the
    sum as well (round 1's bound), and the epsilon is the same."""
    flags = ["--rounds", "2", "--mode", "dpsgd", "--noise_multiplier", "0.5", "--strict_dp", "--adaclip"]
    simulated, flower = _both(tmp_path, flags, "--flower_secagg")
    span = 1.0 * 10.0 / 3  # max(C, 1) times three hospitals' weight 1/3 each (--S 10)
    level = 2 * span / 2 ** 22
    sim_rows, flower_rows = _metrics(simulated), _metrics(flower)
    numel = sum(t.numel() for t in _model(simulated).values() if t.is_floating_point())
    # the aggregate's norm moves by at most the sum's error (3 levels a coordinate); the norm
    # sum is a side value weighted by 1/3, so its error is three times its levels
    for metric, tolerance in (("aggregate_norm", 3 * level * numel ** 0.5), ("norm_sum", 3 * level * 3)):
        key = ("0", "server", "privacy", metric)
        assert abs(float(sim_rows[key]) - float(flower_rows[key])) <= tolerance + 1e-6, metric
    key = ("1", "server", "privacy", "clip_bound")
    assert float(flower_rows[key]) == pytest.approx(float(sim_rows[key]), rel=1e-6)
    assert float(sim_rows[key]) != float(sim_rows[("0", "server", "privacy", "clip_bound")])  # it moved
    a, b = _model(simulated), _model(flower)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert _summary(flower)["privacy"]["epsilon"] == _summary(simulated)["privacy"]["epsilon"]
    assert _summary(flower)["flower"]["secagg_inputs"] == [3, 3]


def test_flower_secagg_completes_with_a_dropped_hospital_and_fails_loudly_below_threshold(tmp_path, capfd):
    from deploy.simulate import simulate
    flags = [*SMALL, "--rounds", "1", "--mode", "dpsgd", "--noise_multiplier", "0.5", "--strict_dp",
             "--flower_secagg", "--save_path", str(tmp_path)]
    summary = simulate([*flags, "--drop_hospitals", "1"], workers=2)
    assert summary["flower"]["secagg_inputs"] == [2]  # hospital 1's masks were removed from the others' shares
    folder = Path(summary["run_dir"])
    initial = _initial_model(folder)
    assert any(not torch.equal(initial[k], _model(folder)[k]) for k in initial)
    with pytest.raises(RuntimeError, match="SecAgg\\+ halted"):
        simulate([*flags, "--drop_hospitals", "1,2", "--exp", "below"], workers=2)  # threshold 2 of 3
    assert not (tmp_path / "synthetic-ich" / "seed0" / "below").exists()  # nothing half-written
    # but the round was charged before it stopped, and what that cost is said
    err = capfd.readouterr().err
    eps = summary["privacy"]["epsilon"]
    assert (f"1 round(s) were charged before the stop (the last may not have been released): epsilon "
            f"{eps['hospital']['rdp']:.3f} per hospital, {eps['subclient']['rdp']:.3f} per sub-client") in err


@pytest.mark.parametrize("argv, message", [
    (["--resume"], "--resume is not served on Flower"),
    (["--dp_level", "sample", "--sample_noise", "1", "--mode", "dpsgd", "--noise_multiplier", "1"],
     "--dp_level sample is not served on Flower"),
    (["--secure_agg", "secagg+", "--S", "1"], "Flower's SecAgg\\+"),
    (["--flower_secagg"], "needs client-level DP"),
    (["--flower_secagg", "--mode", "dpsgd", "--noise_multiplier", "1"], "needs --strict_dp"),
    (["--flower_secagg", "--mode", "dpsgd", "--noise_multiplier", "1", "--strict_dp", "--num_shares", "4"],
     "num-shares=4 is even"),
    (["--drop_hospitals", "1"], "add --flower_secagg"),
    (["--drop_hospitals", "x"], "partition ids"),
])
def test_what_flower_does_not_run_is_refused_before_anything_starts(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        run_config_of([*SMALL, "--save_path", str(tmp_path), *argv], engine="simulation")


def test_a_finished_flower_run_is_not_replaced_without_overwrite(tmp_path):
    flags = [*SMALL, "--save_path", str(tmp_path)]
    folder = _folder(flags)
    folder.mkdir(parents=True)
    (folder / runfiles.SUMMARY).write_text("{}")
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run_config_of(flags, engine="deployment")
    assert run_config_of([*flags, "--overwrite"], engine="deployment")["flags"].endswith("--overwrite")


def test_flower_options_round_trip_through_the_run_config():
    config = run_config_of([*SMALL, "--flower_secagg", "--mode", "dpsgd", "--noise_multiplier", "1", "--strict_dp",
                            "--num_shares", "3", "--drop_hospitals", "2,0", "--save_path", "/tmp/x"],
                           engine="simulation")
    options = FlowerOptions.from_run_config(config)
    assert options == FlowerOptions(True, 3, 0, 600.0, 120.0, (0, 2))
    check_deployable(parse_flags(config["flags"]), options)


def _initial_model(folder: Path) -> dict[str, torch.Tensor]:
    """The model every party starts from (seeded by --seed), from the run's own config."""
    from federated.config import Config
    from federated.setup import build_global_model
    cfg = Config.from_dict(json.loads((folder / runfiles.CONFIG).read_text()))
    model, _ = build_global_model(cfg, "classification", 1, 2, torch.device("cpu"))
    return model.state_dict()


# -- the deployment on this machine ------------------------------------------------------

def _flower_processes() -> list[str]:
    """Flower processes still running. A zombie (state Z) has exited: it waits only for its
    parent to read its status, which, once the SuperLink is stopped, is the machine's init."""
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if ("flower-super" in line or "flwr-" in line) and line.split()[1][0] != "Z"]


def _run_local(tmp_path: Path, nodes: int, flags: list[str], logs: Path) -> subprocess.Popen:
    env = {**os.environ, "RUN_LOCAL_LOGS": str(logs), "PYTHON": sys.executable}
    return subprocess.Popen(["bash", str(REPO / "deploy" / "run_local.sh"), str(nodes), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


@pytest.mark.skipif(sys.platform != "linux", reason="run_local.sh uses setsid and /dev/tcp (Linux)")
def test_localhost_deployment_runs_the_federation_across_processes(tmp_path):
    """SuperLink + 3 SuperNodes on 127.0.0.1, 2 rounds: the run folder is complete, the
    model changed and equals fed_train.py's, and every process is gone afterwards."""
    flags = ["--rounds", "2", "--threads", "1", "--train_size", "32", "--val_size", "8", "--test_size", "8",
             "--save_path", str(tmp_path / "deployed")]
    start = time.perf_counter()
    proc = _run_local(tmp_path, 3, flags, tmp_path / "logs")
    out, _ = proc.communicate(timeout=170)
    assert proc.returncode == 0, out[-3000:]
    assert time.perf_counter() - start < 180
    folder = _folder(["-N", "3", *flags])
    for name in (runfiles.CONFIG, runfiles.METRICS, runfiles.SUMMARY, runfiles.BEST_MODEL, runfiles.LAST_MODEL):
        assert (folder / name).exists(), name
    assert any(p.name.startswith("events") for p in folder.rglob("*"))  # TensorBoard
    summary = _summary(folder)
    assert summary["rounds_run"] == 2 and summary["flower"]["engine"] == "deployment"
    assert len(set(summary["flower"]["nodes"])) == 3
    initial, deployed = _initial_model(folder), _model(folder)
    assert any(not torch.equal(initial[k], deployed[k]) for k in initial)
    simulated = [*SMALL, "--rounds", "2", "--save_path", str(tmp_path / "sim")]
    assert fed_train(simulated) == 0
    assert all(torch.equal(_model(_folder(simulated))[k], deployed[k]) for k in deployed)
    pids = (tmp_path / "logs" / "pids").read_text().split()
    assert len(pids) == 4 and not any(_alive(p) for p in pids) and not _flower_processes()
    # every API listened on the loopback interface only
    listening = [line for log in (tmp_path / "logs").glob("*.log") for line in log.read_text().splitlines()
                 if " API on " in line or "running on" in line.lower()]
    assert listening and all("127.0.0.1:" in line and "0.0.0.0" not in line for line in listening), listening


@pytest.mark.skipif(sys.platform != "linux", reason="run_local.sh uses setsid and /dev/tcp (Linux)")
def test_a_supernode_killed_mid_run_stops_it_with_one_line(tmp_path):
    logs = tmp_path / "logs"
    flags = ["--rounds", "4", "--threads", "1", "--train_size", "32", "--val_size", "8", "--test_size", "8",
             "--save_path", str(tmp_path / "deployed"), "--reply_timeout", "15"]
    proc = _run_local(tmp_path, 3, flags, logs)
    node_log = logs / "supernode1.log"
    deadline = time.time() + 150
    while time.time() < deadline:  # hospital 1 has answered round 0: kill it before round 1 is in
        if node_log.exists() and node_log.read_text().count("train.step") >= 2:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("supernode 1 never received round 0")
    pids = (logs / "pids").read_text().split()
    os.killpg(int(pids[2]), signal.SIGKILL)  # SuperNode of partition 1, with its ClientApp processes
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    stopped = [line for line in out.splitlines() if line.startswith("flower server: stopped:")]
    assert len(stopped) >= 1 and "no reply from hospital01" in stopped[0], out[-3000:]
    assert not _folder(["-N", "3", *flags[:-2]]).exists()  # no half-written run
    assert not any(_alive(p) for p in pids) and not _flower_processes()


def _alive(pgid: str) -> bool:
    """Whether a process of the group `pgid` still runs (zombies have exited)."""
    out = subprocess.run(["ps", "-eo", "pgid,stat"], capture_output=True, text=True).stdout
    return any(fields[0] == pgid and fields[1][0] != "Z" for fields in map(str.split, out.splitlines()[1:]))


@pytest.mark.parametrize("flags, sent", [
    ([], {"losses", "num_samples", "local_steps", "norms"}),
    (["--mode", "dpsgd", "--noise_multiplier", "1"], {"losses", "local_steps", "norms"}),
    (["--mode", "dpsgd", "--noise_multiplier", "1", "--strict_dp"], set()),
    (["--mode", "dpnova", "--noise_multiplier", "1", "--strict_dp", "--weighted_avg"],
     {"local_steps", "num_samples", "sizes"}),
])
def test_a_hospital_sends_only_what_the_server_side_reads(flags, sent):
    """Under --strict_dp a hospital sends the server nothing but its clipped update (and
    what FedNova's step or --weighted_avg's weights read), as fed_train.py's server-side
    pipeline reads nothing else; outside it, the losses and norms the report declares."""
    from deploy.hospital import HospitalSite, SiteState
    site = HospitalSite(parse_flags(" ".join([*SMALL, "-VN", "2", *flags])), 1, 3)
    state = site.start(SiteState(), [(0, 2)])
    params = site.trainer.flat.get().clone()
    reply, state = site.train(state, params, 0, 1e-3, {})
    assert set(reply) == sent
    assert state.prepared.shape == (2, params.numel()) and state.round == 0
    bound = 1e-4 if "--mode" in flags else None  # far below any update's norm
    messages = site.send(state, 0, bound)
    assert [m.sender for m in messages] == [(1, 0), (1, 1)]
    if bound is not None:  # clipped at the hospital, before anything leaves it
        assert all(float(m.payload.norm()) == pytest.approx(bound, rel=1e-4) for m in messages)
        assert all(float(m.shares["within_bound"]) == 0.0 for m in messages)
    else:
        assert all(torch.equal(m.payload, row) for m, row in zip(messages, state.prepared))
    with pytest.raises(RuntimeError, match="holds the rows of round 0"):
        site.send(state, 1, None)
