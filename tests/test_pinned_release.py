"""The release's results and epsilons, pinned: refactoring the client and server halves of
the release must change no bit. Recorded by this test's own runs before the split
(tests/pins/release_pins.json): the default job and tiny strict, Poisson, local-DP and
DP-SGD runs, each on one thread.

The final parameters are compared bit for bit on the CPU model the pins were recorded on.
Another CPU sums floats in another order, so there the test compares the epsilons exactly
(they depend on no float sum of data) and the test metrics to 0.05, and says so."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

import fed_train
from federated.config import parse_config
from federated.runfolder import run_dir
from tests.conftest import TINY
from utils import io

PINS = json.loads((Path(__file__).with_name("pins") / "release_pins.json").read_text())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


SAME_CPU = _cpu_model() == PINS["cpu"]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isinf(a) and math.isinf(b):
        return True
    return a == b


@pytest.mark.parametrize("name", list(PINS["runs"]))
def test_results_and_epsilons_equal_the_pins(name, tmp_path):
    pin = PINS["runs"][name]
    base = TINY[:TINY.index("--ckpt_every")] if pin["tiny"] else ["--no_progress"]
    argv = base + pin["flags"] + ["--threads", "1", "--save_path", str(tmp_path)]
    assert fed_train.main(argv) == 0
    folder = run_dir(parse_config(argv))
    summary = io.read_json(folder / "summary.json")
    for key in ("privacy", "sample_privacy", "local_privacy"):
        assert _same(summary.get(key), pin[key]), key
    if SAME_CPU:
        params = torch.load(folder / "last.pt", weights_only=True)["state"]["params"]
        assert hashlib.sha256(params.numpy().tobytes()).hexdigest() == pin["params_sha256"]
        assert summary["test"] == pin["test"]
    else:  # stated above: another CPU's float sums
        assert all(abs(summary["test"][k] - v) < 0.05 for k, v in pin["test"].items())
