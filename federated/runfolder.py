"""The run folder: where a Config's results go, whether they may be written, and what a
start, a resume, an extension or an --overwrite keeps of what is there."""
from __future__ import annotations

import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from federated.config import RUN_CONTROL_FLAGS, Config, ConfigError
from federated.journal import JOURNAL
from federated.loop import CHECKPOINT_VERSION
from federated.runlock import LOCK_NAME, RunLock
from utils import io, runfiles

# Flags that may change between a run and its --resume: those that do not alter the result
# (a resumed run with other --threads or --engine is valid, not bit-identical) and --rounds.
RESUMABLE_CHANGES = RUN_CONTROL_FLAGS | {"rounds"}


# Files of a run that an extension with more --rounds does not carry over: they describe the shorter run's end.
NOT_EXTENDED = {runfiles.SUMMARY, "best_test.json", "last_test.json", LOCK_NAME}


def calibrated_over_rounds(cfg: Config) -> list[str]:
    """Flags whose noise is calibrated over --rounds: changing --rounds on resume would
    change a noise level that earlier rounds already used."""
    flags = []
    if cfg.private and cfg.epsilon is not None and cfg.dp_mode == "overhead":
        flags.append("--epsilon")
    if cfg.sample_epsilon is not None:
        flags.append("--sample_epsilon")
    if cfg.local_epsilon is not None:
        flags.append("--local_epsilon")
    return flags


def run_dir(cfg: Config) -> Path:
    return Path(cfg.save_path) / cfg.data / f"seed{cfg.seed}" / cfg.run_name()


MIN_FREE_MB = 100  # room for a few checkpoints and the logs


def load_checkpoint(path: Path, flag: str) -> dict:
    """A checkpoint written by this repository, loaded without running pickled code
    (weights_only: tensors, numbers, strings and containers only)."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; point it at a run's best.pt or last.pt")
    if not path.is_file():
        raise ConfigError(f"{flag} {path} does not exist; point it at a run's best.pt or last.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = re.search(r"GLOBAL (\S+)", str(err))
        if code:  # a pickle that would import and call Python code
            raise ConfigError(f"{flag} {path} was refused: loading it would run Python code ({code.group(1)}); "
                              "only checkpoints written by fed_train.py are loaded") from None
        raise ConfigError(f"{flag} {path} cannot be read as a checkpoint (not a file written by torch.save)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{flag} {path} cannot be read as a checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'truncated?'})") from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise ConfigError(f"{flag} {path} is not a checkpoint written by fed_train.py (a plain state_dict or "
                          "another program's file); point it at a run's best.pt or last.pt")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{flag} {path} was written by another version of this repository (checkpoint "
                          f"version {checkpoint.get('version')}, now {CHECKPOINT_VERSION}); re-run it")
    return checkpoint


def _check_resumable(saved: dict, cfg: Config, path: Path) -> None:
    current = cfg.to_dict()
    resumable = set(RESUMABLE_CHANGES)
    if calibrated_over_rounds(cfg):
        resumable.discard("rounds")
    changed = sorted(k for k in current if k not in resumable and saved.get(k) != current[k])
    if changed:
        detail = ", ".join(f"--{k} {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        why = ""
        if "rounds" in changed:
            why = (f" ({' and '.join(calibrated_over_rounds(cfg))} calibrated the noise over the original --rounds, "
                   "which the rounds already run have used)")
        raise ConfigError(f"cannot resume {path}: flags differ from the checkpoint ({detail}){why}; "
                          "rerun with the original flags or start a new run with --exp")


def check_writable(root: Path, *, what: str | None = None, fix: str = "choose a writable folder") -> None:
    """--save_path must be (or be creatable as) a folder we can write to, with room for
    results: checked before any data is loaded, without creating anything. `what` names
    the folder in the messages (default: --save_path ROOT), `fix` says what to do instead."""
    what = what or f"--save_path {root}"
    for p in [root, *root.parents]:
        if p.is_symlink() and not p.exists():
            raise ConfigError(f"--save_path {root} passes through the symlink {p}, which leads nowhere (a loop or a "
                              "missing target); point it at a real folder")
    existing = next(p for p in [root, *root.parents] if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == root else f"lies below the file {existing}"
        raise ConfigError(f"--save_path {root} {where}, not a folder; point it at a folder for results")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"0" * 4096)
            probe.flush()
    except OSError as err:
        raise ConfigError(f"{what} cannot be written ({err.strerror or err}); {fix}") from None
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise ConfigError(f"{what} has {free_mb:.0f} MB free; a run needs at least {MIN_FREE_MB} MB: "
                          "free some space or choose another folder")


def prepare_run(cfg: Config) -> tuple[Path, dict | None, RunLock]:
    """Check the run folder, then lock it and clear what is not kept; returns (folder,
    checkpoint to resume, the held lock). Refusals come before anything is written. A
    folder without a checkpoint is a run that stopped before its first round ended: it
    holds nothing to keep, so it is replaced (with or without --resume)."""
    check_writable(Path(cfg.save_path))
    folder = run_dir(cfg)
    last = folder / runfiles.CHECKPOINT
    source = None
    if cfg.resume and not folder.exists():
        source = None if cfg.exp else shorter_run(cfg, folder)
        if source is None:
            raise _no_run_to_resume(cfg, folder)
    checkpoint = None
    if last.exists():
        if cfg.resume:
            checkpoint = load_checkpoint(last, "--resume:")
            _check_resumable(checkpoint["config"], cfg, last)
        elif not cfg.overwrite:
            differ = differing_setting(folder, cfg)
            if differ:
                raise ConfigError(f"run folder {folder} holds another setting ({differ}); choose another --exp, or "
                                  "pass --overwrite to replace it")
            raise ConfigError(f"run folder {folder} already exists; pass --resume to continue it, "
                              "--overwrite to replace it, or --exp NAME for a new one")
    lock = RunLock(folder).acquire()
    try:
        if folder.is_dir():
            io.remove_stale_temporaries(folder)
        if source is not None:
            print(f"extending {source} to {cfg.rounds} rounds in {folder} ({source} is kept as it is)", flush=True)
            with RunLock(source).acquire():  # not while another process writes it
                _copy_run(source, folder)
            checkpoint = load_checkpoint(last, "--resume:")
            _check_resumable(checkpoint["config"], cfg, last)
        elif not last.exists() and any(p.name != LOCK_NAME for p in folder.iterdir()):
            print(f"note: {folder} holds no checkpoint (a run that stopped before its first round ended); "
                  "starting it afresh", flush=True)
            clear_uncheckpointed(folder, keep_lock=True)
        elif last.exists() and not cfg.resume:  # --overwrite
            _clear(folder, keep={LOCK_NAME})
    except BaseException:
        if source is not None and not last.exists():  # the copy failed: leave no half-copied folder
            shutil.rmtree(folder, ignore_errors=True)
            lock.remove_created_folders()
        lock.release()
        raise
    return folder, checkpoint, lock


def differing_setting(folder: Path, cfg: Config) -> str:
    """The result flags in which the folder's stored config differs from cfg ('' if none)."""
    try:
        stored = Config.from_dict(io.read_json(folder / runfiles.CONFIG))
    except (OSError, ValueError, TypeError):
        return ""
    return _describe(_setting_diff(stored, cfg))


def _stored_runs(folder: Path) -> list[tuple[Path, Config]]:
    """Runs beside `folder` (same data and seed) that hold a checkpoint, with their config."""
    runs = []
    for candidate in sorted(folder.parent.glob("*/config.json")) if folder.parent.is_dir() else []:
        if not runfiles.has_checkpoint(candidate.parent):
            continue
        try:
            runs.append((candidate.parent, Config.from_dict(io.read_json(candidate))))
        except (OSError, ValueError, TypeError):
            continue
    return runs


def _setting_diff(stored: Config, cfg: Config, ignore: frozenset = frozenset()) -> dict[str, tuple]:
    """Result flags whose values differ: name -> (stored, current)."""
    a, b, default = stored.identity(), cfg.identity(), Config()
    return {k: (a.get(k, getattr(default, k)), b.get(k, getattr(default, k)))
            for k in sorted((set(a) | set(b)) - ignore)
            if a.get(k, getattr(default, k)) != b.get(k, getattr(default, k))}


def _describe(diff: dict[str, tuple]) -> str:
    return ", ".join(f"--{k} {old!r} -> {new!r}" for k, (old, new) in diff.items())


def shorter_run(cfg: Config, folder: Path) -> Path | None:
    """The longest run of cfg's setting with fewer --rounds beside `folder`: what
    --resume --rounds MORE extends."""
    fitting = [(stored.rounds, path) for path, stored in _stored_runs(folder)
               if not stored.exp and stored.rounds < cfg.rounds and not _setting_diff(stored, cfg, {"rounds"})]
    return max(fitting)[1] if fitting else None


def _no_run_to_resume(cfg: Config, folder: Path) -> ConfigError:
    """--resume without a run of these flags: name the closest run there and how it differs."""
    near = sorted((len(diff), str(path), diff) for path, stored in _stored_runs(folder)
                  if (diff := _setting_diff(stored, cfg)))
    if near and near[0][0] <= 3:
        _, path, diff = near[0]
        return ConfigError(f"--resume: no run with these flags at {folder}; the closest run there, {path}, differs "
                           f"in {_describe(diff)}: rerun with its flags, or without --resume to start this one")
    extend = "" if cfg.exp else " (nor one of this setting with fewer --rounds to extend)"
    return ConfigError(f"--resume: no run folder at {folder}{extend}; run without --resume to start it")


def _copy_run(source: Path, folder: Path) -> None:
    for path in source.iterdir():
        if path.name in NOT_EXTENDED:
            continue
        if path.is_dir():
            shutil.copytree(path, folder / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, folder / path.name)


def clear_uncheckpointed(folder: Path, *, keep_lock: bool = False) -> None:
    """Remove a run folder that holds no checkpoint, except its release journal: what a
    --secure_rng attempt released stays charged to the run that starts afresh there.
    `keep_lock`: the folder is about to be written by the lock's holder."""
    if not (folder / JOURNAL).exists() and not keep_lock:
        shutil.rmtree(folder, ignore_errors=True)
        return
    _clear(folder, keep={JOURNAL} | ({LOCK_NAME} if keep_lock else set()))


def _clear(folder: Path, keep: set[str]) -> None:
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
