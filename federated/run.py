"""Run a Config end to end: the run folder, fresh start or resume, and --test mode."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from federated.config import Config, ConfigError
from federated.evaluate import MEAN, eval_set, evaluate
from federated.loop import CHECKPOINT_VERSION, RunState, initial_state, train
from federated.setup import build_federation
from privacy.accountants import ACCOUNTANTS
from privacy.events import UNITS
from privacy.report import build_report, format_report
from utils import io
from utils.results import RunRecorder

# Flags that may change between a run and its --resume (they do not alter the result).
RESUMABLE_CHANGES = {"rounds", "resume", "overwrite", "progress", "gpu", "ckpt_every", "save_path", "test", "ckpt"}


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


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


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


def prepare_run(cfg: Config) -> tuple[Path, dict | None]:
    """Check the run folder before anything is written; returns (folder, checkpoint to resume)."""
    folder = run_dir(cfg)
    last = folder / "last.pt"
    if cfg.resume:
        if not last.exists():
            raise ConfigError(f"--resume: no checkpoint at {last}; run without --resume to start it")
        checkpoint = _load(last)
        if checkpoint.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(f"--resume: {last} was written by an older version of this repository (checkpoint "
                              f"version {checkpoint.get('version')}, now {CHECKPOINT_VERSION}); start a new run")
        _check_resumable(checkpoint["config"], cfg, last)
        return folder, checkpoint
    if (folder / "config.json").exists():
        if not cfg.overwrite:
            raise ConfigError(f"run folder {folder} already exists; pass --resume to continue it, "
                              "--overwrite to replace it, or --exp NAME for a new one")
        shutil.rmtree(folder)
    return folder, None


def data_summary(data) -> str:
    """One line: records per hospital for each split (min-max when hospitals differ)."""
    def span(split: str) -> str:
        sizes = [len(getattr(h, split)) for h in data.hospitals]
        return f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
    total = sum(len(h.train) + len(h.val) + len(h.test) for h in data.hospitals)
    return (f"data: {data.name}, {len(data.hospitals)} hospitals, per hospital train {span('train')} / "
            f"val {span('val')} / test {span('test')} ({total} records)")


def run_training(cfg: Config) -> dict:
    folder, checkpoint = prepare_run(cfg)
    started = time.perf_counter()
    fed = build_federation(cfg)
    print(data_summary(fed.data), flush=True)
    mode = "strict" if cfg.strict_dp else "faithful (paper's code)"
    print(format_report(build_report(mode=mode, accounts=fed.ledger.report(accountants=()), outputs=fed.outputs)),
          flush=True)
    if checkpoint is None:
        state = initial_state(fed)
        recorder = RunRecorder(folder, outputs=fed.outputs)
    else:
        state = RunState.from_state_dict(checkpoint["state"], fed.device)
        fed.set_secret(state.secret)
        fed.server.load_state_dict(checkpoint["server"])
        if fed.client_dp is not None:
            fed.client_dp.load_state_dict(checkpoint["client_dp"])
        fed.ledger.load_state_dict(checkpoint["ledger"])
        recorder = RunRecorder(folder, resume_round=state.next_round - 1, outputs=fed.outputs)
    recorder.write_config(cfg.to_dict())
    try:
        summary = train(fed, recorder, state)
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
    summary["wall_s"] = time.perf_counter() - started
    summary["run_dir"] = str(folder)
    recorder.write_summary(summary)
    return summary


def run_test(cfg: Config) -> dict:
    """Evaluate a saved checkpoint on every hospital's test split (data flags from the checkpoint)."""
    path = Path(cfg.ckpt)
    if not path.exists():
        raise ConfigError(f"--ckpt {path} does not exist; point it at a run's best.pt or last.pt")
    checkpoint = _load(path)
    saved = Config.from_dict({**checkpoint["config"], "gpu": cfg.gpu, "test": True, "ckpt": str(path)})
    fed = build_federation(saved)
    if "model" in checkpoint:
        fed.model.load_state_dict(checkpoint["model"])
        params = fed.trainer.flat.get()
    else:
        params = checkpoint["state"]["params"].to(fed.device)
    results = evaluate(fed.model, fed.trainer.flat, params, eval_set(fed.data, "test", merge=saved.merge), fed.task)
    report = {"checkpoint": str(path), "round": checkpoint.get("round"), "test": results[MEAN],
              "test_per_hospital": {k: v for k, v in results.items() if k != MEAN},
              "primary_metric": fed.task.primary_metric}
    io.write_json(path.with_name(f"{path.stem}_test.json"), report)
    return report
