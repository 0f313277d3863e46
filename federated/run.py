"""Run a Config end to end: the run folder, fresh start or resume, and --test mode."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from federated.config import Config, ConfigError
from federated.evaluate import MEAN, eval_set, evaluate
from federated.loop import RunState, initial_state, train
from federated.setup import build_federation
from privacy.build import privacy_report
from utils import io
from utils.results import RunRecorder

LOCAL_DP_NOT_COVERED = ("per-hospital training losses and val/test scores are reported without noise "
                        "(the model they score is covered)")
# Flags that may change between a run and its --resume (they do not alter the result).
RESUMABLE_CHANGES = {"rounds", "resume", "overwrite", "progress", "gpu", "ckpt_every", "save_path", "test", "ckpt"}


def run_dir(cfg: Config) -> Path:
    return Path(cfg.save_path) / cfg.data / f"seed{cfg.seed}" / cfg.run_name()


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _check_resumable(saved: dict, cfg: Config, path: Path) -> None:
    current = cfg.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        detail = ", ".join(f"--{k} {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(f"cannot resume {path}: flags differ from the checkpoint ({detail}); "
                          "rerun with the original flags or start a new run with --exp")


def prepare_run(cfg: Config) -> tuple[Path, dict | None]:
    """Check the run folder before anything is written; returns (folder, checkpoint to resume)."""
    folder = run_dir(cfg)
    last = folder / "last.pt"
    if cfg.resume:
        if not last.exists():
            raise ConfigError(f"--resume: no checkpoint at {last}; run without --resume to start it")
        checkpoint = _load(last)
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


def print_privacy_report(report: dict) -> None:
    lines = [f"privacy ({report['mode']}):"]
    lines += [f"  covered: {c}" for c in report["covered"]]
    lines += [f"  NOT covered: {c}" for c in report["not_covered"]]
    lines += [f"  note: {n}" for n in report["notes"]]
    print("\n".join(lines), flush=True)


def run_training(cfg: Config) -> dict:
    folder, checkpoint = prepare_run(cfg)
    started = time.perf_counter()
    fed = build_federation(cfg)
    print(data_summary(fed.data), flush=True)
    report = None
    if cfg.private:
        report = privacy_report(cfg, fed.aggregate.z)
        print_privacy_report(report)
    if fed.sample_ledger is not None:
        print(f"sample-level DP-SGD in every hospital (Opacus): z = {fed.sample_ledger.z:.4g}, per-sample clip "
              f"{cfg.max_grad_norm}, delta = {cfg.sample_delta:g}; epsilon per hospital from its own steps")
    if fed.local_update_dp is not None:
        print(f"local update DP: each sub-client clips its update to {cfg.local_clip} and adds N(0, "
              f"{fed.local_update_dp.noise_std:.4g}^2) per coordinate (z = {fed.local_update_dp.z:.4g}), "
              f"calibrated over all {cfg.rounds} rounds; delta = {cfg.local_delta:g}")
    if cfg.dp_level != "none" and not cfg.private:
        print(f"  not covered: {LOCAL_DP_NOT_COVERED}")
    if checkpoint is None:
        state = initial_state(fed)
        recorder = RunRecorder(folder)
    else:
        state = RunState.from_state_dict(checkpoint["state"], fed.device)
        fed.server.load_state_dict(checkpoint["server"])
        fed.aggregate.load_state_dict(checkpoint["aggregator"])
        if checkpoint.get("local_dp") is not None:
            (fed.sample_ledger or fed.local_update_dp).load_state_dict(checkpoint["local_dp"])
        recorder = RunRecorder(folder, resume_round=state.next_round - 1)
    recorder.write_config(cfg.to_dict())
    try:
        summary = train(fed, recorder, state)
    finally:
        recorder.close()
    if cfg.private:
        summary["privacy"] = {"noise_multiplier": fed.aggregate.z, "accountant": cfg.accountant,
                              "target_unit": cfg.target_unit, "report": report,
                              **fed.aggregate.ledger.report()}
    local_notes = {"not_covered": [] if cfg.private else [LOCAL_DP_NOT_COVERED]}  # else: the privacy report's
    if fed.sample_ledger is not None:
        summary["sample_privacy"] = {**fed.sample_ledger.report(), **local_notes}
    if fed.local_update_dp is not None:
        summary["local_privacy"] = {**fed.local_update_dp.report(), **local_notes}
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
