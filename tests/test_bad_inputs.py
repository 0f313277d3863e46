"""Every bad input and fault a new user meets gets one clear line, the right exit code, and
leaves no half-written result behind (tests/test_faults.py covers kills mid-run).

Each case runs fed_train's main() in-process on a tiny federation. "Leaves nothing behind"
means: the results root holds exactly what it held before (or, for faults after the first
checkpoint, a folder that --resume continues and no summary.json).
"""
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from federated import run as run_module
from federated import runfolder
from federated.cli import main
from tests.conftest import TINY, TINY_SEG
from utils import io

DP = ["--mode", "dpsgd", "--noise_multiplier", "1.0"]


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # tmp_path -> flags (the results root is tmp_path / "runs")
    code: int
    says: str                          # a fragment the error line must contain
    setup: Callable | None = None      # (tmp_path, monkeypatch) -> None


def runs(tmp):
    return ["--save_path", str(tmp / "runs")]


def tiny(tmp, *extra):
    return TINY + runs(tmp) + list(extra)


def npz(tmp, *, channels=(None, None, None), sizes=(28, 28, 28), labels=np.int64, val_class=None, truncate=False,
        name="bloodmnist", classes=8):
    """A tiny MedMNIST file (28 px) under tmp/medmnist; returns the flags that read it."""
    root = tmp / "medmnist"
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n, ch, size in zip(("train", "val", "test"), (32, 16, 16), channels, sizes):
        shape = (n, size, size) if ch is None else (n, size, size, ch)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        y = rng.integers(0, classes, (n, 1)) if not (split == "val" and val_class is not None) else np.full((n, 1), val_class)
        arrays[f"{split}_labels"] = (y + (0.5 if labels is float else 0)).astype(labels)
    np.savez(root / f"{name}.npz", **arrays)
    if truncate:
        data = (root / f"{name}.npz").read_bytes()
        (root / f"{name}.npz").write_bytes(data[: len(data) // 2])
    return ["--data", name, "--data_root", str(root), "-N", "2", "--partition", "iid", "--rounds", "2",
            "--batch", "8", "--no_progress", "--threads", "1"] + runs(tmp)


def png(path: Path, *, mode: str = "RGB", size: int = 20) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def folder_data(tmp, spellings=("normal", "normal")):
    """Two sites of class folders under tmp/d; the first class spelled per site."""
    for site, spelling in zip(("siteA", "siteB"), spellings):
        for c in (spelling, "tumour"):
            for i in range(3):
                png(tmp / "d" / site / c / f"{i}.png")
    return ["--data", "folder", "--data_root", str(tmp / "d"), "-N", "2", "--rounds", "1", "--img_size", "16",
            "--batch", "4", "--no_progress", "--threads", "1"] + runs(tmp)


def rsna_data(tmp, first_id="ID_0.png", bom=False):
    """RSNA-ICH split CSVs under tmp/splits (the first ImageID of train.csv as given)."""
    import csv
    from datasets.rsna_ich import COLUMNS
    (tmp / "splits").mkdir(exist_ok=True)
    for name, n in (("train.csv", 8), ("validate.csv", 4), ("test.csv", 4)):
        with open(tmp / "splits" / name, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for i in range(n):
                image_id = first_id if (name, i) == ("train.csv", 0) else f"ID_{name[:2]}{i}.png"
                png(tmp / "png" / Path(image_id).name)
                w.writerow([image_id, i % 2, 0, 0, 0, 0, 1 - i % 2])
    return ["--data", "RSNA-ICH", "--image_dir", str(tmp / "png"), "--split_dir", str(tmp / "splits"), "-N", "2",
            "--model", "cnn", "--rounds", "1", "--img_size", "16", "--batch", "4", "--no_progress",
            "--threads", "1"] + runs(tmp)


def trained(tmp, extra=()):
    """A finished tiny run; returns its folder."""
    assert main(tiny(tmp, "--rounds", "1", *extra)) == 0
    return next((tmp / "runs").glob("*/seed0/*"))


def write_ckpt(tmp, obj):
    path = tmp / "file.pt"
    torch.save(obj, path)
    return path


class Payload:
    """A pickle that would run code when loaded with weights_only=False."""
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _fail_writes_after(count: int):
    """Make result writes fail with ENOSPC after `count` successful ones."""
    real, calls = io._atomic, {"n": 0}

    def atomic(path, write):
        calls["n"] += 1
        if calls["n"] > count:
            raise io.ResultWriteError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        real(path, write)
    return atomic


def _interrupt_at_round(k: int):
    real = run_module.train.__globals__["evaluate"]
    calls = {"n": 0}

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > k:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    return evaluate


CASES = [
    # flags (rejected before torch loads)
    Case("unknown flag", lambda t: tiny(t, "--modee", "x"), 2, "unrecognized arguments: --modee"),
    Case("unknown mode", lambda t: tiny(t, "--mode", "dpsgdd"), 2, "invalid choice: 'dpsgdd'"),
    Case("infinite lr", lambda t: tiny(t, "--lr", "inf"), 2, "--lr must be a finite number"),
    Case("NaN lr", lambda t: tiny(t, "--lr", "nan"), 2, "--lr must be a finite number"),
    Case("infinite epsilon", lambda t: tiny(t, "--mode", "dpsgd", "--epsilon", "inf"), 2, "non-private --mode"),
    Case("PLD target beyond its range", lambda t: tiny(t, "--mode", "dpsgd", "--epsilon", "1000", "--accountant",
                                                        "pld"), 2, "PLD and PRV give no value beyond epsilon 500"),
    Case("target below PRV's error", lambda t: tiny(t, "--mode", "dpsgd", "--epsilon", "0.001", "--accountant", "prv",
                                                    "--rounds", "3"), 2,
         "--epsilon (--target_unit subclient, 3 rounds) 0.001 is not reachable at any noise level"),
    Case("local target unreachable", lambda t: tiny(t, "--dp_level", "update_local", "--local_epsilon", "1e-9"), 2,
         "--local_epsilon 1e-09 is not reachable at any noise level"),
    Case("target without clipping", lambda t: tiny(t, "--mode", "dpsgd", "--epsilon", "1", "--noclip"), 2,
         "--epsilon cannot be met with --noclip: unclipped updates have no finite epsilon"),
    Case("DP-SGD on BatchNorm", lambda t: TINY_SEG + runs(t) + ["--dp_level", "sample", "--sample_noise", "1",
                                                                "--model", "unet"], 2,
         "--model unet cannot be trained with DP-SGD (BatchNorm2d normalises with batch statistics); per-sample "
         "gradients need layers that do not mix samples: use a GroupNorm model such as dpresnet, resnet9, cnn or "
         "unet_small"),
    Case("ghost clipping on Dice", lambda t: TINY_SEG + runs(t) + ["--dp_level", "sample", "--sample_noise", "1",
                                                                   "--grad_sample_mode", "ghost"], 2,
         "--grad_sample_mode ghost needs a per-sample loss, which the segmentation loss (soft Dice) does not provide "
         "here; use --grad_sample_mode hooks"),
    Case("zero rounds", lambda t: tiny(t, "--rounds", "0"), 2, "--rounds must be >= 1"),
    Case("sample rate above 1", lambda t: tiny(t, "-sr", "1.5"), 2, "-sr/--sample_rate must be in (0, 1]"),
    Case("DP without noise", lambda t: tiny(t, "--mode", "dpsgd"), 2, "needs exactly one of --noise_multiplier"),
    Case("zero threads", lambda t: tiny(t, "--threads", "0"), 2, "--threads must be an integer >= 1 or auto (got '0')"),
    Case("image size", lambda t: tiny(t, "--img_size", "30"), 2, "--img_size must be a multiple of 4"),
    Case("huge image size", lambda t: tiny(t, "--img_size", "100000"), 2,
         "--img_size must be a multiple of 4 in [16, 2048] (got 100000)"),
    Case("delta below the accountants' resolution", lambda t: tiny(t, "--mode", "dpsgd", "--noise_multiplier", "1",
                                                                    "--delta", "1e-300"), 2,
         "--delta must be in [1e-10, 1): a smaller delta is below what the PRV and PLD accountants resolve "
         "(got 1e-300)"),
    Case("local delta below the accountants' resolution",
         lambda t: tiny(t, "--dp_level", "update_local", "--local_noise", "1", "--local_delta", "0"), 2,
         "--local_delta must be in [1e-10, 1)"),
    Case("run name escaping its folder", lambda t: tiny(t, "--exp", "../../escaped"), 2,
         "--exp '../../escaped' must be one folder name (no '/', '\\', '.' or '..')"),
    Case("negative seed", lambda t: tiny(t, "--seed", "-1"), 2, "--seed must be in [0, 2^63) (got -1)"),
    Case("segmentation model on a classification task", lambda t: tiny(t, "--model", "unet_small"), 2,
         "--model unet_small does not fit --data synthetic-ich, a classification task; use one of: cnn, cnn_narrow, "
         "densenet121, dpresnet, dpresnet_small, lenet, resnet9, resnet9_small"),
    Case("classifier on a segmentation task", lambda t: TINY_SEG + runs(t) + ["--model", "cnn"], 2,
         "--model cnn does not fit --data synthetic-prostate, a segmentation task; use one of: unet, unet_small"),
    Case("resume and overwrite", lambda t: tiny(t, "--resume", "--overwrite"), 2, "exclude each other"),
    Case("test without ckpt", lambda t: tiny(t, "--test"), 2, "--test needs --ckpt"),
    Case("unknown dataset", lambda t: tiny(t, "--data", "nosuch"), 2, "--data 'nosuch' is unknown"),
    Case("integer flag", lambda t: tiny(t, "--rounds", "2.5"), 2, "invalid int value: '2.5'"),
    # the results folder
    Case("save_path is a file", lambda t: TINY + ["--save_path", str(t / "afile")], 2, "is a file, not a folder",
         setup=lambda t, m: (t / "afile").write_text("x")),
    Case("save_path through a symlink loop", lambda t: TINY + ["--save_path", str(t / "loop" / "sub")], 2,
         "passes through the symlink", setup=lambda t, m: (t / "loop").symlink_to(t / "loop")),
    Case("save_path below a file", lambda t: TINY + ["--save_path", str(t / "afile" / "sub")], 2,
         "lies below the file",
         setup=lambda t, m: (t / "afile").write_text("x")),
    Case("read-only save_path", lambda t: tiny(t), 2, "cannot be written (Permission denied)",
         # simulated: the suite may run as root, which ignores directory permissions
         setup=lambda t, m: m.setattr(runfolder.tempfile, "TemporaryFile",
                                      lambda **k: (_ for _ in ()).throw(PermissionError(errno.EACCES,
                                                                                        "Permission denied")))),
    Case("full save_path", lambda t: tiny(t), 2, "MB free; a run needs at least",
         setup=lambda t, m: m.setattr(runfolder.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))),
    Case("disk fills before the first checkpoint", lambda t: tiny(t), 1, "No space left on device; nothing was kept",
         setup=lambda t, m: m.setattr(io, "_atomic", _fail_writes_after(1))),
    Case("resume without a run", lambda t: tiny(t, "--resume"), 2, "--resume: no run folder"),
    # checkpoints given to --test
    Case("ckpt missing", lambda t: tiny(t, "--test", "--ckpt", str(t / "nope.pt")), 2, "does not exist"),
    Case("ckpt is a folder", lambda t: tiny(t, "--test", "--ckpt", str(t)), 2, "is a folder"),
    Case("ckpt is text", lambda t: tiny(t, "--test", "--ckpt", str(t / "notes.txt")), 2, "cannot be read as a checkpoint",
         setup=lambda t, m: (t / "notes.txt").write_text("not a checkpoint\n")),
    Case("ckpt is a plain state_dict", lambda t: tiny(t, "--test", "--ckpt", str(t / "file.pt")), 2,
         "a plain state_dict", setup=lambda t, m: write_ckpt(t, {"w": torch.zeros(3)})),
    Case("ckpt runs pickled code", lambda t: tiny(t, "--test", "--ckpt", str(t / "file.pt")), 2,
         "was refused", setup=lambda t, m: write_ckpt(t, {"config": Payload()})),
    # data files
    Case("npz missing", lambda t: ["--data", "bloodmnist", "--data_root", str(t)] + runs(t), 2, "is missing"),
    Case("npz truncated", lambda t: npz(t, truncate=True), 2, "may be truncated"),
    Case("npz splits differ in channels", lambda t: npz(t, channels=(3, None, None)), 2,
         "different channel counts"),
    Case("npz with 4 channels", lambda t: npz(t, channels=(4, 4, 4)), 2, "must be uint8 (N,H,W) or (N,H,W,3)"),
    Case("npz with another image size in one split", lambda t: npz(t, sizes=(28, 32, 28)), 2,
         "val_images are 32x32 px"),
    Case("npz with non-integer labels", lambda t: npz(t, labels=float), 2, "must be integer class indices"),
    # real-format data that used to pass silently
    Case("class folders differing only in case", lambda t: folder_data(t, ("Normal", "normal")), 2,
         "class folders 'Normal' and 'normal' differ only in case; rename them to one spelling"),
    Case("ImageID escaping the image folder", lambda t: rsna_data(t, "../ID_0.png"), 2,
         "line 2: ImageID '../ID_0.png' is not a file name"),
    # training faults
    Case("divergence", lambda t: tiny(t, "--lr", "1e30"), 3, "training diverged in round 0"),
    Case("Ctrl-C before the first checkpoint", lambda t: tiny(t), 130, "interrupted; nothing was kept",
         setup=lambda t, m: m.setitem(run_module.train.__globals__, "evaluate", _interrupt_at_round(0))),
]


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if case.setup:
        case.setup(tmp_path, monkeypatch)
    argv = case.argv(tmp_path)  # may write the input files
    before = tree(tmp_path)
    code, err = run_cli(argv, capsys)
    assert code == case.code, err
    lines = [line for line in err.splitlines() if line.startswith("fed_train.py")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert case.says in lines[0], lines[0]
    assert tree(tmp_path) == before, "files were left behind"
    assert not (tmp_path / "PWNED").exists()


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_ckpt_of_another_dataset_is_refused(tmp_path, capsys):
    folder = trained(tmp_path)
    code, err = run_cli(TINY_SEG_DATA + ["--test", "--ckpt", str(folder / "best.pt")], capsys)
    assert code == 2 and "--data 'synthetic-prostate' (checkpoint: 'synthetic-ich')" in err, err
    assert not (folder / "best_test.json").exists()
    assert main(["--test", "--ckpt", str(folder / "best.pt"), "--threads", "1"]) == 0  # its own flags: fine


def test_test_of_a_checkpoint_in_a_read_only_folder_is_refused_before_evaluating(tmp_path, capsys, monkeypatch):
    folder = trained(tmp_path)
    evaluated = []
    monkeypatch.setattr(run_module, "evaluate", lambda *a, **k: evaluated.append(1))
    # simulated: the suite may run as root, which ignores directory permissions
    monkeypatch.setattr(runfolder.tempfile, "TemporaryFile",
                        lambda **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))
    code, err = run_cli(["--test", "--ckpt", str(folder / "best.pt"), "--threads", "1"], capsys)
    assert code == 2 and err.strip().endswith(
        f"--test writes best_test.json beside --ckpt, but {folder} cannot be written (Permission denied); copy the "
        "checkpoint to a writable folder"), err
    assert not evaluated and not (folder / "best_test.json").exists()


TINY_SEG_DATA = ["--data", "synthetic-prostate"]


def test_truncated_checkpoint_is_refused(tmp_path, capsys):
    folder = trained(tmp_path)
    data = (folder / "best.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    code, err = run_cli(["--test", "--ckpt", str(tmp_path / "half.pt")], capsys)
    assert code == 2 and "cannot be read as a checkpoint" in err, err


def test_existing_run_is_not_touched(tmp_path, capsys):
    folder = trained(tmp_path)
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--rounds", "1"), capsys)
    assert code == 2 and "already exists; pass --resume" in err
    assert tree(tmp_path) == before and folder.exists()


def test_resume_with_other_flags_is_refused(tmp_path, capsys):
    trained(tmp_path)
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--rounds", "1", "--patience", "5", "--resume"), capsys)
    assert code == 2 and "differs in --patience 20 -> 5: rerun with its flags" in err, err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_that_died_before_its_first_checkpoint_does_not_block_the_rerun(tmp_path, resume):
    dead = tmp_path / "runs" / "synthetic-ich" / "seed0" / "dead"
    dead.mkdir(parents=True)  # as a kill before the first checkpoint leaves it
    (dead / "config.json").write_text("{}")
    (dead / ".metrics.csv.123.tmp").write_text("half")
    assert main(tiny(tmp_path, "--exp", "dead", *(["--resume"] if resume else []))) == 0
    assert (dead / "summary.json").exists() and not list(dead.glob(".*.tmp"))


def test_ctrl_c_after_a_checkpoint_says_resume_and_resume_finishes(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(run_module.train.__globals__, "evaluate", _interrupt_at_round(2))
    code, err = run_cli(tiny(tmp_path), capsys)
    assert code == 130 and "rounds 0-1 are kept" in err and "with --resume to continue" in err, err
    folder = next((tmp_path / "runs").glob("*/seed0/*"))
    assert (folder / "last.pt").exists() and not (folder / "summary.json").exists()
    monkeypatch.undo()
    assert main(tiny(tmp_path, "--resume")) == 0 and (folder / "summary.json").exists()


def test_disk_full_after_a_checkpoint_keeps_a_resumable_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(io, "_atomic", _fail_writes_after(6))  # config, then per round: metrics + checkpoint
    code, err = run_cli(tiny(tmp_path), capsys)
    assert code == 1 and "No space left on device; rounds 0-" in err and "--resume" in err, err
    folder = next((tmp_path / "runs").glob("*/seed0/*"))
    assert not (folder / "summary.json").exists() and not list(folder.glob(".*.tmp"))
    monkeypatch.undo()
    assert main(tiny(tmp_path, "--resume")) == 0


def test_divergence_after_a_checkpoint_stops_without_a_summary(tmp_path, capsys):
    code, err = run_cli(tiny(tmp_path, "--lr", "1e6", "--mode", "fedadam", "--adam_lr", "1e30", "--rounds", "3"),
                        capsys)
    assert code == 3 and "training diverged" in err, err
    assert not list((tmp_path / "runs").rglob("summary.json"))


def test_single_class_validation_is_scored_with_the_last_round(tmp_path, capsys):
    assert main(npz(tmp_path, val_class=0, name="pneumoniamnist", classes=2)) == 0
    summary = io.read_json(next((tmp_path / "runs").rglob("summary.json")))
    assert summary["best_round"] == 1 and summary["model_selection"].startswith("last round: validation auc")


def test_results_are_readable_by_colleagues_and_summary_is_standard_json(tmp_path):
    folder = trained(tmp_path, ["--mode", "dpsgd", "--noise_multiplier", "0.01"])
    for path in [folder / n for n in ("config.json", "metrics.csv", "summary.json", "best.pt", "last.pt")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path
    text = (folder / "summary.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    import json
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert io.read_json(folder / "summary.json")["privacy"]["epsilon"]["hospital"]["prv"] == float("inf")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_pickle_payload_would_have_run_without_weights_only(tmp_path):
    """The refusal above is meaningful: the same file executes code under weights_only=False."""
    path = write_ckpt(tmp_path, {"config": Payload()})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with open(path, "rb") as f:
            torch.load(f, weights_only=False)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "PWNED").exists()


def _hold_lock(folder: Path):
    """Take the run folder's lock as another process writing it would (flock on its own open
    file: a second open of the file conflicts with it even in this process)."""
    import fcntl
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_overwrite_of_a_run_another_process_is_writing_is_refused(tmp_path, capsys):
    folder = trained(tmp_path)
    holder = _hold_lock(folder)
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--rounds", "1", "--overwrite"), capsys)
    assert code == 2 and "is being written by another process" in err and "Traceback" not in err, err
    assert tree(tmp_path) == before and (folder / "summary.json").exists()
    holder.close()
    assert main(tiny(tmp_path, "--rounds", "1", "--overwrite")) == 0  # once that process is done


def test_a_run_starting_in_a_folder_another_process_has_just_started_is_refused(tmp_path, capsys):
    folder = tmp_path / "runs" / "synthetic-ich" / "seed0" / "x"
    holder = _hold_lock(folder)  # that process has not written its first checkpoint yet
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--exp", "x"), capsys)
    assert code == 2 and "is being written by another process" in err, err
    assert tree(tmp_path) == before
    holder.close()


def test_a_named_run_folder_holding_another_setting_is_refused(tmp_path, capsys):
    folder = trained(tmp_path, ["--exp", "a"])
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--rounds", "1", "--exp", "a", "--img_size", "32"), capsys)
    assert code == 2 and f"run folder {folder} holds another setting (--img_size 16 -> 32)" in err, err
    assert "--overwrite to replace it" in err and tree(tmp_path) == before


def test_an_rsna_table_saved_with_a_byte_order_mark_trains(tmp_path, capsys):
    """Excel's 'CSV UTF-8' starts the file with a BOM, which was read into the first column's
    name and reported as a missing ImageID column."""
    assert main(rsna_data(tmp_path, bom=True)) == 0, capsys.readouterr().err


def test_rsna_test_split_identical_to_train_is_warned_of(tmp_path, capsys):
    """Train identical to test trains and scores, but says that the scores measure recall."""
    argv = rsna_data(tmp_path)
    shutil.copy(tmp_path / "splits" / "train.csv", tmp_path / "splits" / "test.csv")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "train.csv and" in err and "test.csv share 8 image(s)" in err and "Traceback" not in err, err


def test_resume_of_a_named_run_that_does_not_exist_is_refused(tmp_path, capsys):
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--exp", "nosuch", "--resume"), capsys)
    assert code == 2 and "--resume: no run folder at" in err and "nosuch" in err, err
    assert tree(tmp_path) == before


def test_resume_of_a_run_that_died_before_its_first_checkpoint_starts_it_afresh(tmp_path, capsys):
    """Without --exp too: the folder holds nothing to keep, so --resume starts the run."""
    from federated.config import parse_config
    folder = runfolder.run_dir(parse_config(tiny(tmp_path)))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert main(tiny(tmp_path, "--resume")) == 0, capsys.readouterr().err
    assert (folder / "summary.json").exists()


def test_extending_a_run_another_process_is_writing_is_refused(tmp_path, capsys):
    short = trained(tmp_path, ["--keep_optimizer"])
    holder = _hold_lock(short)
    before = tree(tmp_path)
    code, err = run_cli(tiny(tmp_path, "--rounds", "2", "--keep_optimizer", "--resume"), capsys)
    assert code == 2 and f"run folder {short} is being written by another process" in err, err
    assert tree(tmp_path) == before
    holder.close()
