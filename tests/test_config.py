import pytest

import fed_train
from federated.config import PRESETS, build_parser, parse_config


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
    (["--mode", "fedsgd"], "--mode 'fedsgd' is unknown"),
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
    for group in ("data:", "federation:", "model:", "logging and checkpoints:"):
        assert group in text
    assert "(default: 1)" in text  # -VN


def test_config_is_frozen():
    cfg = parse_config([])
    with pytest.raises(Exception):
        cfg.rounds = 5
