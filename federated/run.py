"""Run a Config end to end: train (fresh, resumed or extended) or, with --test, evaluate a checkpoint."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from federated.canaries import AUDIT_RECORD
from federated.config import Config, ConfigError
from federated.errors import Diverged, Interrupted, RunError
from federated.evaluate import MEAN, eval_set, evaluate
from federated.journal import JOURNAL, ReleaseJournal
from federated.loop import RunState, initial_state, train
from federated.runfolder import check_writable, clear_uncheckpointed, load_checkpoint, prepare_run
from federated.runlock import RunLock
from federated.privacy_setup import threat_model
from federated.setup import build_federation
from privacy.accountants import ACCOUNTANTS
from privacy.events import UNITS
from privacy.report import build_report, format_report
from utils import io, runfiles
from utils.cores import free_cores
from utils.results import RunRecorder

def resolve_threads(cfg: Config) -> Config:
    """--threads auto (0): the cores free now, so that a busy core does not slow every step."""
    return cfg if cfg.threads else dataclasses.replace(cfg, threads=free_cores())


# Flags that --test may set; every other one comes from the checkpoint.
TEST_FLAGS = {"test", "ckpt", "gpu", "threads", "progress", "save_path", "engine", "engine_chunk"}


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
        if not runfiles.has_checkpoint(folder):
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


def _saved_rounds(folder: Path) -> int | None:
    """Rounds held by the folder's checkpoint, or None without one."""
    last = folder / runfiles.CHECKPOINT
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
    report = build_report(mode=mode, accounts=fed.ledger.report(accountants=()), outputs=fed.outputs,
                          threat_model=threat_model(cfg))
    print(format_report(report), flush=True)
    # Under --secure_rng a repeated round draws new noise: both releases are charged.
    journal = ReleaseJournal(folder) if cfg.secure_rng or (folder / JOURNAL).exists() else None
    if checkpoint is None:
        state = initial_state(fed)
        if fed.canaries is not None:  # the auditor's record: the secret bits and where the model started
            io.torch_save(fed.canaries.record(state.params), folder / AUDIT_RECORD)
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
    summary["privacy_report"] = build_report(mode=mode, accounts=fed.ledger.report(), outputs=fed.outputs,
                                            threat_model=threat_model(cfg))
    if fed.client_dp is not None:
        summary["privacy"] = client_privacy(cfg, fed.client_dp, fed.ledger, summary["privacy_report"])
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
    if fed.pipeline.secure is not None:
        summary["secure_aggregation"] = {**fed.pipeline.secure.summary(), "noise_at": cfg.noise_at}
    if fed.pipeline.encrypted is not None:
        summary["encrypted_aggregation"] = {**fed.pipeline.encrypted.summary(), "noise_at": cfg.noise_at}
    summary["wall_s"] = summary["timing"]["wall_s"]  # all processes of the run, resumes included
    summary["run_dir"] = str(folder)
    recorder.write_summary(summary)
    return summary


def client_privacy(cfg: Config, client_dp, ledger, report: dict) -> dict:
    """The summary's client-level privacy block: the epsilon spent per unit, and how."""
    accounts = report["accounts"]
    return {"noise_multiplier": client_dp.z, "accountant": cfg.accountant, "target_unit": cfg.target_unit,
            "delta": cfg.delta, "sample_rate": client_dp.sampling.rate, "sampling": client_dp.sampling.kind,
            "rounds_charged": ledger.releases("client/subclient"),
            "epsilon": {u: accounts[f"client/{u}"]["epsilon"] for u in UNITS}}


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
