"""Run a Config end to end: the run folder, fresh start or resume, and --test mode."""
from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from federated.config import RUN_CONTROL_FLAGS, Config, ConfigError
from federated.errors import Diverged, Interrupted, RunError
from federated.evaluate import MEAN, eval_set, evaluate
from federated.journal import JOURNAL, ReleaseJournal
from federated.loop import CHECKPOINT_VERSION, RunState, initial_state, train
from federated.runlock import LOCK_NAME, RunLock
from federated.setup import build_federation
from privacy.accountants import ACCOUNTANTS
from privacy.events import UNITS
from privacy.report import build_report, format_report
from utils import io
from utils.cores import free_cores
from utils.results import RunRecorder

# Flags that may change between a run and its --resume: those that do not alter the result
# (a resumed run with other --threads or --engine is valid, not bit-identical) and --rounds.
RESUMABLE_CHANGES = RUN_CONTROL_FLAGS | {"rounds"}
# Files of a run that an extension with more --rounds does not carry over: they describe the shorter run's end.
NOT_EXTENDED = {"summary.json", "best_test.json", "last_test.json", LOCK_NAME}


def resolve_threads(cfg: Config) -> Config:
    """--threads auto (0): the cores free now, so that a busy core does not slow every step."""
    return cfg if cfg.threads else dataclasses.replace(cfg, threads=free_cores())


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


# Flags that --test may set; every other one comes from the checkpoint.
TEST_FLAGS = {"test", "ckpt", "gpu", "threads", "progress", "save_path", "engine", "engine_chunk"}
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
    last = folder / "last.pt"
    source = None
    if cfg.resume and not last.exists() and not cfg.exp:
        source = shorter_run(cfg, folder)
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
        lock.release()
        raise
    return folder, checkpoint, lock


def differing_setting(folder: Path, cfg: Config) -> str:
    """The result flags in which the folder's stored config differs from cfg ('' if none)."""
    try:
        stored = Config.from_dict(io.read_json(folder / "config.json"))
    except (OSError, ValueError, TypeError):
        return ""
    return _describe(_setting_diff(stored, cfg))


def _stored_runs(folder: Path) -> list[tuple[Path, Config]]:
    """Runs beside `folder` (same data and seed) that hold a checkpoint, with their config."""
    runs = []
    for candidate in sorted(folder.parent.glob("*/config.json")) if folder.parent.is_dir() else []:
        if not (candidate.parent / "last.pt").exists():
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
    return ConfigError(f"--resume: no run folder at {folder} (nor one of this setting with fewer --rounds to "
                       "extend); run without --resume to start it")


def _copy_run(source: Path, folder: Path) -> None:
    for path in source.iterdir():
        if path.name in NOT_EXTENDED:
            continue
        if path.is_dir():
            shutil.copytree(path, folder / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, folder / path.name)


def data_summary(data) -> str:
    """One line: records per hospital for each split (min-max when hospitals differ)."""
    def span(split: str) -> str:
        sizes = [len(getattr(h, split)) for h in data.hospitals]
        return f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
    total = sum(len(h.train) + len(h.val) + len(h.test) for h in data.hospitals)
    return (f"data: {data.name}, {len(data.hospitals)} hospitals, per hospital train {span('train')} / "
            f"val {span('val')} / test {span('test')} ({total} records)")


def run_training(cfg: Config) -> dict:
    """Train, and on any failure leave the folder in a state a rerun can use: removed when
    no round was checkpointed, otherwise resumable with --resume."""
    started = time.perf_counter()
    auto = not cfg.threads
    cfg = resolve_threads(cfg)
    torch.set_num_threads(cfg.threads)
    folder, checkpoint, lock = prepare_run(cfg)
    if auto:
        print(f"threads: {cfg.threads} (--threads auto: the cores free at the start; metrics can depend on the count, "
              "so pass --threads N to rerun bit-identically)", flush=True)
    with lock:
        return _guarded_training(cfg, folder, checkpoint, started, lock)


def _guarded_training(cfg: Config, folder: Path, checkpoint: dict | None, started: float, lock: RunLock) -> dict:
    try:
        return _run_training(cfg, folder, checkpoint, started)
    except BaseException as err:
        saved = _saved_rounds(folder)
        if not (folder / "last.pt").exists():
            clear_uncheckpointed(folder)
            lock.remove_created_folders()
        kept = ("nothing was kept (no round had been checkpointed)" if saved is None else
                f"rounds 0-{saved - 1} are kept in {folder}")
        if saved is None and (folder / JOURNAL).exists():
            kept += f"; {folder / JOURNAL} keeps the releases it made, which a rerun charges (--secure_rng)"
        if isinstance(err, KeyboardInterrupt):
            hint = "; rerun the same command with --resume to continue" if saved is not None else ""
            raise Interrupted(f"interrupted; {kept}{hint}") from None
        if isinstance(err, Diverged):
            raise Diverged(f"{err}; {kept} (no summary); rerun with --overwrite after lowering it") from None
        if isinstance(err, io.ResultWriteError):
            hint = " and rerun with --resume" if saved is not None else " and rerun"
            raise RunError(f"{err.strerror}; {kept}; free space or fix the permissions{hint}") from None
        raise


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


def _saved_rounds(folder: Path) -> int | None:
    """Rounds held by the folder's checkpoint, or None without one."""
    last = folder / "last.pt"
    if not last.exists():
        return None
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["state"]["next_round"])
    except Exception:  # noqa: BLE001 -- reporting only; an unreadable checkpoint is said by --resume
        return None


def _run_training(cfg: Config, folder: Path, checkpoint: dict | None, started: float) -> dict:
    fed = build_federation(cfg)
    print(data_summary(fed.data), flush=True)
    print(fed.engine_note, flush=True)
    mode = "strict" if cfg.strict_dp else "faithful (paper's code)"
    print(format_report(build_report(mode=mode, accounts=fed.ledger.report(accountants=()), outputs=fed.outputs)),
          flush=True)
    # Under --secure_rng a repeated round draws new noise: both releases are charged.
    journal = ReleaseJournal(folder) if cfg.secure_rng or (folder / JOURNAL).exists() else None
    if checkpoint is None:
        state = initial_state(fed)
        _charge_journaled(journal, 0, fed)
        recorder = RunRecorder(folder, outputs=fed.outputs)
    else:
        state = RunState.from_state_dict(checkpoint["state"], fed.device)
        if state.moments_dropped and state.next_round < cfg.rounds:
            raise ConfigError(f"--resume: {folder / 'last.pt'} is the final checkpoint of a finished run and holds no "
                              "optimizer state (dropped when the run ended); to extend a run with more --rounds, "
                              "start it with --keep_optimizer")
        fed.set_secret(state.secret)
        fed.server.load_state_dict(checkpoint["server"])
        if fed.client_dp is not None:
            fed.client_dp.load_state_dict(checkpoint["client_dp"])
        fed.ledger.load_state_dict(checkpoint["ledger"])
        print(f"resuming from round {state.next_round} of {cfg.rounds} (the checkpoint holds rounds "
              f"0-{state.next_round - 1})", flush=True)
        _charge_journaled(journal, state.journal_length, fed)
        recorder = RunRecorder(folder, resume_round=state.next_round - 1, outputs=fed.outputs)
    recorder.write_config(cfg.to_dict())
    try:
        summary = train(fed, recorder, state, started=started, journal=journal)
    finally:
        recorder.close()
    summary["privacy_report"] = build_report(mode=mode, accounts=fed.ledger.report(), outputs=fed.outputs)
    if fed.client_dp is not None:
        accounts = summary["privacy_report"]["accounts"]
        summary["privacy"] = {"noise_multiplier": fed.client_dp.z, "accountant": cfg.accountant,
                              "target_unit": cfg.target_unit, "delta": cfg.delta,
                              "sample_rate": fed.client_dp.sampling.rate, "sampling": fed.client_dp.sampling.kind,
                              "rounds_charged": fed.ledger.releases("client/subclient"),
                              "epsilon": {u: accounts[f"client/{u}"]["epsilon"] for u in UNITS}}
    if fed.trainer.sample_dp is not None:
        accounts = {n.split("/", 1)[1]: a for n, a in summary["privacy_report"]["accounts"].items()
                    if a["level"] == "sample"}
        summary["sample_privacy"] = {"noise_multiplier": fed.trainer.sample_dp.noise_multiplier,
                                     "delta": cfg.sample_delta,
                                     "steps": {h: a["releases"] for h, a in accounts.items()},
                                     "epsilon_per_hospital": {h: a["epsilon"] for h, a in accounts.items()},
                                     "epsilon_max": {acc: max(a["epsilon"][acc] for a in accounts.values())
                                                     for acc in ACCOUNTANTS}}
    if fed.local_update_dp is not None:
        summary["local_privacy"] = fed.local_update_dp.report()
    summary["wall_s"] = summary["timing"]["wall_s"]  # all processes of the run, resumes included
    summary["run_dir"] = str(folder)
    recorder.write_summary(summary)
    return summary


def _charge_journaled(journal: ReleaseJournal | None, length: int, fed) -> None:
    """Charge the rounds an earlier attempt released after the checkpoint resumed from."""
    if journal is not None and (repeated := journal.charge_after(length, fed.ledger)):
        print(f"note: {repeated} round(s) were released after the last checkpoint before the run stopped; "
              "repeating them draws new noise (--secure_rng), so both releases are charged", flush=True)


def run_test(cfg: Config, given: set[str] = frozenset()) -> dict:
    """Evaluate a saved checkpoint on every hospital's test split. The data and model flags
    come from the checkpoint; `given` (flags set on the command line) may not contradict them."""
    cfg = resolve_threads(cfg)
    torch.set_num_threads(cfg.threads)
    path = Path(cfg.ckpt)
    out = path.with_name(f"{path.stem}_test.json")
    # before the evaluation, whose results would otherwise be lost
    check_writable(out.parent, what=f"--test writes {out.name} beside --ckpt, but {out.parent}",
                   fix="copy the checkpoint to a writable folder")
    checkpoint = load_checkpoint(path, "--ckpt")
    current = cfg.to_dict()
    differ = sorted(k for k in given - TEST_FLAGS if checkpoint["config"].get(k) != current[k])
    if differ:
        detail = ", ".join(f"--{k} {current[k]!r} (checkpoint: {checkpoint['config'].get(k)!r})" for k in differ)
        raise ConfigError(f"--test takes the data and model flags from the checkpoint, and {detail} "
                          "contradicts it; drop the flag or point --ckpt at a matching run")
    saved = Config.from_dict({**checkpoint["config"], "gpu": cfg.gpu, "test": True, "ckpt": str(path),
                              "threads": cfg.threads})
    fed = build_federation(saved)
    if "model" in checkpoint:
        fed.model.load_state_dict(checkpoint["model"])
        params = fed.trainer.flat.get()
    else:
        params = checkpoint["state"]["params"].to(fed.device)
    results = evaluate(fed.model, fed.trainer.flat, params, eval_set(fed.data, "test", merge=saved.merge, batch=saved.batch), fed.task)
    report = {"checkpoint": str(path), "round": checkpoint.get("round"), "test": results[MEAN],
              "test_per_hospital": {k: v for k, v in results.items() if k != MEAN},
              "primary_metric": fed.task.primary_metric}
    io.write_json(out, report)
    return report
