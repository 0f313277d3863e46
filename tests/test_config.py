import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fed_train
from federated import choices
from federated.config import PRESETS, build_parser, parse_config

ROOT = Path(__file__).resolve().parents[1]


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["-N", "0"], "-N/--clients must be >= 1"),
    (["-VN", "0"], "-VN/--virtual_clients must be >= 1"),
    (["-sr", "0"], "-sr/--sample_rate must be in (0, 1]"),
    (["-sr", "1.5"], "-sr/--sample_rate must be in (0, 1]"),
    (["--data", "mnist"], "--data 'mnist' is unknown"),
    (["--model", "resnet999"], "--model 'resnet999' is unknown"),
    (["--mode", "fedsgd"], "argument --mode: invalid choice: 'fedsgd'"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--img_size", "30"], "--img_size must be a multiple of 4"),
    (["--test"], "--test needs --ckpt"),
])
def test_bad_flags_fail_at_once_naming_the_flag(argv, expected, capsys):
    assert expected in _error(argv, capsys)


def test_more_subclients_than_samples_fails_before_writing(tmp_path, capsys):
    code = fed_train.main(["-N", "2", "--train_size", "5", "-VN", "6", "--save_path", str(tmp_path), "--no_progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "-VN/--virtual_clients 6 asks for 6 sub-clients" in err and "only 5 training images" in err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_presets_fill_unset_flags_and_explicit_flags_win():
    cfg = parse_config(["--data", "synthetic-prostate"])
    assert cfg.clients == PRESETS["synthetic-prostate"]["clients"] == 6
    assert cfg.model == "unet_small"
    assert parse_config(["--data", "synthetic-prostate", "-N", "3"]).clients == 3


def test_paper_sweep_flags_parse():
    cfg = parse_config("--mode fedavg --data synthetic-ich --batch 16 -N 20 -VN 1 --rounds 100 "
                       "--lr 3e-4 --seed 2".split())
    assert (cfg.batch, cfg.clients, cfg.virtual_clients, cfg.rounds, cfg.lr, cfg.seed) == (16, 20, 1, 100, 3e-4, 2)


def test_help_is_grouped_and_shows_defaults():
    text = build_parser().format_help()
    for group in ("data:", "federation:", "model:", "logging, checkpoints and engine:"):
        assert group in text
    assert "(default: 1)" in text  # -VN


def test_help_shows_only_meaningful_defaults():
    text = build_parser().format_help()
    for noise in ("(default: None)", "(default: True)", "(default: False)", "preset) (default"):
        assert noise not in text
    for noise in ("(default: )",):
        assert noise not in text
    # a few screens: each system's flags in one group (secure aggregation adds 9 lines, the audit 8, Per-FedAvg 8, the chest datasets and their site shift 7)
    assert len(text.splitlines()) < 285 and text.startswith("usage: fed_train.py [flags]")


def test_flag_errors_are_one_line_and_come_before_torch_loads():
    code = ("import sys, time; start = time.perf_counter(); sys.path.insert(0, '.')\n"
            "from federated.cli import main\n"
            "try:\n    main(['--modee', 'x'])\nexcept SystemExit as e:\n    assert e.code == 2\n"
            "assert 'torch' not in sys.modules, 'torch was imported before the flags were checked'\n"
            "print(time.perf_counter() - start)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "fed_train.py: error: unrecognized arguments: --modee x (see --help)"
    assert float(done.stdout) < 2.0


def test_flag_choices_match_the_registries():
    from datasets import DATASETS, SYNTHETIC
    from datasets.medmnist import NUM_CLASSES, PARTITIONS
    from nets import MODELS
    assert set(choices.DATASETS) == set(DATASETS) and choices.SYNTHETIC == SYNTHETIC
    assert set(choices.MEDMNIST) == set(NUM_CLASSES) and choices.PARTITIONS == PARTITIONS
    assert set(choices.MODELS) == set(MODELS)
    from datasets.chest_xray import UNCERTAIN_POLICIES
    from federated.adam import LOCAL_OPTIMIZERS
    from federated.config import LOCAL_OPTIMIZERS as LOCAL_OPTIMIZER_CHOICES
    assert set(choices.UNCERTAIN_POLICIES) == set(UNCERTAIN_POLICIES)
    assert LOCAL_OPTIMIZER_CHOICES == LOCAL_OPTIMIZERS


def test_targets_beyond_the_numerical_accountants_are_refused(capsys):
    from federated.config import NUMERIC_EPSILON_LIMIT
    from privacy.accountants import NUMERIC_LIMIT
    assert NUMERIC_EPSILON_LIMIT == NUMERIC_LIMIT
    assert "PLD and PRV give no value beyond epsilon 500" in _error(
        ["--mode", "dpsgd", "--epsilon", "1000", "--accountant", "pld"], capsys)
    assert parse_config(["--mode", "dpsgd", "--epsilon", "1000"]).epsilon == 1000  # RDP answers


def test_config_is_frozen():
    cfg = parse_config([])
    with pytest.raises(Exception):
        cfg.rounds = 5


def test_subclient_split_defaults_to_the_papers_on_its_datasets_and_refuses_local_dp(capsys):
    assert parse_config([]).subclient_split == "hash"
    assert parse_config(["--data", "RSNA-ICH"]).subclient_split == "paper"
    assert parse_config(["--data", "prostate"]).subclient_split == "paper"
    for level in ("sample", "update_local"):
        err = _error(["--subclient_split", "paper", "--dp_level", level], capsys)
        assert "--subclient_split paper" in err and "use --subclient_split hash" in err


def test_scale_paper_gives_the_papers_hospitals_at_one_tenth():
    """--scale paper: the paper's hospital sizes divided by 10 (RSNA-ICH: 20 x 750/250/250;
    prostate: the six sites' slice counts), its 100 rounds, its split and selection."""
    from datasets import build_federated_data
    cfg = parse_config(["--scale", "paper"])
    assert (cfg.clients, cfg.rounds, cfg.model, cfg.img_size, cfg.subclient_split, cfg.select_metric) == \
        (20, 100, "cnn_narrow", 16, "paper", "acc")
    ich = build_federated_data(cfg, torch.Generator().manual_seed(0))
    assert [(len(h.train), len(h.val), len(h.test)) for h in ich.hospitals] == [(75, 25, 25)] * 20
    cfg = parse_config(["--scale", "paper", "--data", "synthetic-prostate", "--img_size", "16"])
    assert (cfg.clients, cfg.rounds, cfg.subclient_split) == (6, 100, "paper")
    prostate = build_federated_data(cfg, torch.Generator().manual_seed(0))
    assert [len(h.train) for h in prostate.hospitals] == [46, 28, 33, 29, 47, 98]  # 457, 285, 333, 290, 467, 976
    assert [len(h.test) for h in prostate.hospitals] == [15, 10, 11, 10, 16, 33]


def test_scale_paper_constants_match_the_generators():
    from datasets.synthetic import PAPER_SITE_SIZES, PAPER_SIZE_DIVISOR
    from federated import config
    assert config.PAPER_SIZE_DIVISOR == PAPER_SIZE_DIVISOR
    assert config.PAPER_SITES == {name: len(sites) for name, sites in PAPER_SITE_SIZES.items()}
    assert set(config.PAPER_PRESETS) == set(PAPER_SITE_SIZES)


def test_scale_paper_refuses_what_it_fixes(capsys):
    assert "--scale paper" in _error(["--scale", "paper", "--train_size", "50"], capsys)
    assert "--scale paper" in _error(["--scale", "paper", "--data", "synthetic-blood"], capsys)
    assert "at most 6" in _error(["--scale", "paper", "--data", "synthetic-prostate", "-N", "7"], capsys)


def test_run_names_keep_the_label_ablations_apart():
    """A run folder is found by its name: flags that change the labels or the optimizer must
    change it, or a sweep would take the second ablation for the finished first one."""
    tables = ["--data", "chest-xray", "-N", "1"]
    names = {parse_config(tables + extra).run_name() for extra in (
        [], ["--uncertain", "ones"], ["--findings", "Edema,Cardiomegaly"], ["--local_opt", "nadam"])}
    assert len(names) == 4


# Flags that change what a run computes, each with a non-default value (issue 26: these were
# left out of the folder's name, so a sweep took the second setting for the finished first).
RESULT_FLAGS = [["--img_size", "64"], ["--model", "cnn_narrow"], ["--train_size", "50"], ["--partition", "iid"],
                ["--dirichlet_alpha", "0.3"], ["--client_sampling", "poisson"], ["--size_skew", "0.5"],
                ["--val_size", "10"], ["--patience", "5"], ["--bootstrap", "10"], ["--select_metric", "auc"]]
# Flags that change how a run is carried out, not its result.
CONTROL_FLAGS = [["--threads", "1"], ["--no_progress"], ["--gpu", "cpu"], ["--ckpt_every", "3"],
                 ["--keep_optimizer"], ["--engine", "loop"], ["--save_path", "elsewhere"], ["--overwrite"]]


def test_every_flag_that_changes_the_result_changes_the_run_folder():
    base = parse_config([])
    names = {base.run_name()} | {parse_config(flags).run_name() for flags in RESULT_FLAGS}
    assert len(names) == len(RESULT_FLAGS) + 1, sorted(names)
    assert all(parse_config(flags).run_name() == base.run_name() for flags in CONTROL_FLAGS)
    # the readable part stays in the paper's pattern; the identity is a hash of the result flags
    assert re.fullmatch(r"fedavg_rounds40_.*_PureAvg_[0-9a-f]{8}", base.run_name()), base.run_name()


def test_threads_default_to_the_cores_free_when_the_run_starts(monkeypatch):
    from federated.run import resolve_threads
    from utils import cores
    assert parse_config([]).threads == 0 == parse_config(["--threads", "auto"]).threads  # auto: chosen at the start
    monkeypatch.setattr(cores, "_runnable_now", lambda: 1)  # only this process
    monkeypatch.setattr(cores, "_usable_cores", lambda: 2)
    assert resolve_threads(parse_config([])).threads == 2
    monkeypatch.setattr(cores, "_runnable_now", lambda: 2)  # another process holds a core
    assert resolve_threads(parse_config([])).threads == 1
    monkeypatch.setattr(cores, "_runnable_now", lambda: 9)
    assert resolve_threads(parse_config([])).threads == 1
    assert resolve_threads(parse_config(["--threads", "2"])).threads == 2  # given: kept
