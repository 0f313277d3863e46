"""Wire a Config into the parts of one simulated federation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from datasets import build_federated_data
from datasets.base import FederatedData
from federated.aggregate import MeanAggregator
from federated.config import AUTO_MODEL, Config, ConfigError
from datasets.base import SEGMENTATION
from federated.local import LocalTrainer
from federated.server import FedAvgServer, build_server
from federated.subclients import allocate_subclients
from federated.task import Task, make_task
from nets import build_model
from privacy.build import build_client_dp, build_local_update_dp, build_sample_dp
from privacy.local_update_dp import LocalUpdateDP
from privacy.sample_dp import SampleLevelLedger
from utils.seeding import make_generator, stream_seed


@dataclass
class Federation:
    cfg: Config
    data: FederatedData
    task: Task
    model: nn.Module
    trainer: LocalTrainer
    server: FedAvgServer  # or a subclass: FedAdam, FedNova, DP2-RMSProp
    aggregate: object  # MeanAggregator or privacy.client_dp.ClientLevelDP
    device: torch.device
    sample_ledger: SampleLevelLedger | None = None  # --dp_level sample
    local_update_dp: LocalUpdateDP | None = None    # --dp_level update_local


def select_device(gpu: str) -> torch.device:
    if gpu != "cpu" and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu.split(',')[0]}")
    return torch.device("cpu")


def check_subclients(cfg: Config, data: FederatedData) -> list[int]:
    """Sub-clients per hospital; refuses a split that would leave a sub-client empty."""
    sizes = [len(h.train) for h in data.hospitals]
    counts = allocate_subclients(sizes, cfg.virtual_clients, balance=cfg.balance_split)
    for hospital, n, k in zip(data.hospitals, sizes, counts):
        if k > n:
            raise ConfigError(
                f"-VN/--virtual_clients {cfg.virtual_clients} asks for {k} sub-clients in {hospital.name}, "
                f"which has only {n} training images; use -VN <= {min(sizes)} or a larger --train_size")
    return counts


def build_federation(cfg: Config) -> Federation:
    device = select_device(cfg.gpu)
    data = build_federated_data(cfg, make_generator(cfg.seed, "data"))
    check_subclients(cfg, data)
    torch.manual_seed(stream_seed(cfg.seed, "model"))  # model initialisation
    model_name = cfg.model
    if model_name == AUTO_MODEL:
        model_name = "unet_small" if data.task == SEGMENTATION else "cnn"
    model = build_model(model_name, data.in_channels, data.num_outputs).to(device)
    task = make_task(data.task)
    sample_settings, sample_ledger = build_sample_dp(cfg, data, model, model_name)
    local_update_dp = build_local_update_dp(cfg, data)
    trainer = LocalTrainer(model, task.loss_fn, batch=cfg.batch, epochs=cfg.local_epochs, prepare=data.prepare,
                           sample_dp=sample_settings)
    aggregate = MeanAggregator()
    if cfg.private:
        aggregate = build_client_dp(cfg)
        if not aggregate.within_budget(max(check_subclients(cfg, data))):
            raise ConfigError(f"--epsilon {cfg.epsilon} is spent before the first round ends at "
                              f"--noise_multiplier {cfg.noise_multiplier}; raise --epsilon or the noise")
    server = build_server(cfg.mode, adam_lr=cfg.adam_lr, rmsprop_lr=cfg.rmsprop_lr, dp2_interval=cfg.dp2_interval)
    return Federation(cfg, data.to(device), task, model, trainer, server, aggregate, device,
                      sample_ledger, local_update_dp)

