"""Wire a Config into the parts of one simulated federation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from datasets import build_federated_data
from datasets.base import SEGMENTATION, FederatedData
from federated.canaries import Canaries
from federated.config import AUTO_MODEL, Config, ConfigError
from federated.engine import BatchedEngine, LoopEngine, build_engine, default_engine
from federated.local import LocalTrainer
from federated.perfedavg import PerFedAvgSettings
from federated.pipeline import ReleasePipeline
from federated.privacy_setup import (build_client_dp, build_distributed_noise, build_encrypted_aggregation,
                                     build_local_update_dp, build_sample_dp,
                                     build_secure_aggregation, declared_outputs,
                                     planned_shapes)
from federated.server import build_server
from federated.subclients import allocate_subclients, record_keys, split_hospitals
from federated.task import Task, make_task
from nets import MODELS, SEGMENTATION_MODELS, build_model
from privacy.intermediary import max_subclients
from privacy.ledger import PrivacyLedger
from privacy.report import Output
from utils.seeding import make_generator, split_secret, stream_seed


@dataclass
class Federation:
    cfg: Config
    data: FederatedData
    task: Task
    model: nn.Module
    trainer: LocalTrainer
    engine: LoopEngine | BatchedEngine
    engine_note: str               # which engine, and why (printed in the run's first lines)
    pipeline: ReleasePipeline
    ledger: PrivacyLedger
    outputs: list[Output]          # everything the run writes, with what protects it
    device: torch.device
    secret: bytes                  # key of the sub-client assignment hash
    record_keys: list[np.ndarray]  # per hospital: the keyed hash of each training record
    subclient_cap: int             # the largest v the adaptive rule may choose (--max_vn, or from sizes)
    canaries: Canaries | None = None  # --audit_canaries: the audit's canary units

    @property
    def server(self):
        return self.pipeline.server

    @property
    def client_dp(self):
        return self.pipeline.client_dp

    @property
    def local_update_dp(self):
        return self.pipeline.local_dp

    def set_secret(self, secret: bytes) -> None:
        if secret != self.secret:
            self.secret = secret
            self.record_keys = [record_keys(h.train, secret) for h in self.data.hospitals]


def select_device(gpu: str) -> torch.device:
    if gpu != "cpu" and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu.split(',')[0]}")
    return torch.device("cpu")


def check_subclients(cfg: Config, data: FederatedData) -> list[int]:
    """Sub-clients per hospital; refuses a split that would leave a sub-client empty on average."""
    sizes = [len(h.train) for h in data.hospitals]
    counts = allocate_subclients(sizes, cfg.virtual_clients, balance=cfg.balance_split)
    for hospital, n, k in zip(data.hospitals, sizes, counts):
        if k > n:
            raise ConfigError(
                f"-VN/--virtual_clients {cfg.virtual_clients} asks for {k} sub-clients in {hospital.name}, "
                f"which has only {n} training images; use -VN <= {min(sizes)} or a larger --train_size")
    return counts


def subclient_cap(cfg: Config, data: FederatedData) -> int:
    """--max_vn, or the largest v that leaves every sub-client at least one full batch."""
    return cfg.max_vn or max_subclients([len(h.train) for h in data.hospitals], cfg.batch)


def build_global_model(cfg: Config, task: str, in_channels: int, num_outputs: int,
                       device: torch.device) -> tuple[nn.Module, str]:
    """The model every party starts from: the same initialisation (seeded by --seed) at the
    server and at every hospital, so a deployment needs no first broadcast to agree on it."""
    torch.manual_seed(stream_seed(cfg.seed, "model"))  # model initialisation
    model_name = cfg.model
    if model_name == AUTO_MODEL:
        model_name = "unet_small" if task == SEGMENTATION else "cnn"
    segmenting = task == SEGMENTATION
    if (model_name in SEGMENTATION_MODELS) != segmenting:
        fits = sorted(SEGMENTATION_MODELS) if segmenting else sorted(set(MODELS) - SEGMENTATION_MODELS)
        raise ConfigError(f"--model {model_name} does not fit --data {cfg.data}, a {task} task; use one of: "
                          f"{', '.join(fits)}")
    return build_model(model_name, in_channels, num_outputs).to(device), model_name


def build_trainer(cfg: Config, data: FederatedData, model: nn.Module, model_name: str, device: torch.device,
                  sample_settings=None) -> tuple[LocalTrainer, LoopEngine | BatchedEngine, str]:
    """The local trainer and the engine that runs it (with the line that says which and why)."""
    task = make_task(data.task, seg_loss=cfg.seg_loss)
    perfedavg = None if cfg.client_algo == "sgd" else \
        PerFedAvgSettings(cfg.client_algo, cfg.alpha, cfg.beta, hf_delta=cfg.hf_delta)
    trainer = LocalTrainer(model, task.loss_fn, batch=cfg.batch, epochs=cfg.local_epochs, prepare=data.prepare,
                           sample_dp=sample_settings, optimizer=cfg.local_opt, perfedavg=perfedavg)
    engine_name, why = (cfg.engine, "--engine") if cfg.engine != "auto" else \
        default_engine(device, trainer, model_name)
    return trainer, build_engine(engine_name, trainer, chunk=cfg.engine_chunk), f"engine: {engine_name} ({why})"


def build_federation(cfg: Config) -> Federation:
    device = select_device(cfg.gpu)
    data = build_federated_data(cfg, make_generator(cfg.seed, "data"))
    counts = check_subclients(cfg, data)
    cap = subclient_cap(cfg, data)
    secret = split_secret(cfg.seed, secure=cfg.secure_rng)
    keys = [record_keys(h.train, secret) for h in data.hospitals]
    sizes = [[len(idx) for idx in per_h] for per_h in split_hospitals(keys, counts)]
    model, model_name = build_global_model(cfg, data.task, data.in_channels, data.num_outputs, device)
    task = make_task(data.task, seg_loss=cfg.seg_loss)
    ledger = PrivacyLedger()
    sample_settings = build_sample_dp(cfg, data, model, model_name, ledger, sizes)
    local_update_dp = build_local_update_dp(cfg, data, ledger)
    trainer, engine, engine_note = build_trainer(cfg, data, model, model_name, device, sample_settings)
    client_dp = None
    if cfg.private:
        client_dp = build_client_dp(cfg, ledger, planned_shapes(cfg, [len(h.train) for h in data.hospitals], counts,
                                                               cap))
        if not client_dp.within_budget(client_dp.declare(counts)):
            raise ConfigError(f"--epsilon {cfg.epsilon} is spent before the first round ends at "
                              f"--noise_multiplier {cfg.noise_multiplier}; raise --epsilon or the noise")
    server = build_server(cfg.mode, adam_lr=cfg.adam_lr, rmsprop_lr=cfg.rmsprop_lr, dp2_interval=cfg.dp2_interval)
    pipeline = ReleasePipeline(cfg, server, client_dp, local_update_dp, build_secure_aggregation(cfg),
                               build_distributed_noise(cfg, client_dp), trainer.flat.vector.numel(),
                               build_encrypted_aggregation(cfg))
    return Federation(cfg, data.to(device), task, model, trainer, engine, engine_note, pipeline,
                      ledger, declared_outputs(cfg, cap=cap), device, secret, keys, cap,
                      Canaries.for_run(cfg, [h.key for h in data.hospitals]))
