import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)  # tests compare exact numbers; one thread keeps reductions ordered
if "MUTANT_UNDER_TEST" in os.environ:
    # mutmut forks each mutant from a process that ran the tests: an OpenMP pool of several
    # threads started there (by a run at --threads 2) deadlocks the forked children
    torch.set_num_threads = lambda n: None

# A federation small enough that a whole run takes about a second on one core.
TINY = ["--data", "synthetic-ich", "-N", "3", "--train_size", "16", "--val_size", "8",
        "--test_size", "8", "--img_size", "16", "--batch", "8", "--rounds", "3", "--no_progress", "--threads", "1",
        "--ckpt_every", "1"]
TINY_SEG = ["--data", "synthetic-prostate", "-N", "2", "--train_size", "8", "--val_size", "4",
            "--test_size", "4", "--img_size", "16", "--batch", "4", "--rounds", "2", "--no_progress", "--threads", "1"]


@pytest.fixture
def tiny_args(tmp_path):
    return TINY + ["--save_path", str(tmp_path)]


@pytest.fixture(autouse=True)
def _fresh_accounting_caches():
    """Under mutation testing every mutant runs in a process forked after the clean run, so
    the cached RDP curves would hide a mutated `dp_event`; start each test with an empty cache."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        from privacy import accountants
        accountants._rdp_curve.cache_clear()
    yield
