"""What the attacker observes in one real round of the repository, for each protection.

A scenario is a set of fed_train flags. `observe` builds that federation, runs its first
round through the real release pipeline and reads what an attacker at the server reads of
the target, sub-client 0 of hospital 0:

- no protection, local update DP, sample-level DP-SGD: the target's message, as the
  pipeline's hook sees it leave the client (any noise the client adds is in it);
- client-level DP (central noise): the server is trusted, so the attacker is the one who
  sees what the server releases, the new global model. Given every other participant's
  message (the strongest adversary DP allows for), it subtracts them from the released
  sum and divides by the target's weight: the target's clipped update plus noise;
- secure aggregation: the masked vector the server received from the target (from the
  protocol's record of every byte), read with the round's public ring code.

The attacker knows the architecture, the starting parameters, the learning rate, the
local steps and the clip bound, never the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attacks.inversion import ClientModel
from federated.canaries import planned_subclients
from federated.config import Config, parse_config
from federated.loop import initial_state, run_round, subclient_data
from federated.messages import UPDATE, Message
from federated.pipeline import Participants, private_weights, round_weights
from federated.setup import Federation, build_federation
from nets import build_model

TARGET = (0, 0)  # hospital 0, sub-client 0

# Table 1's noise multipliers for RSNA-ICH (0.5, 1.0, 1.5), and the other protections.
SCENARIOS: dict[str, list[str]] = {
    "none": [],
    "client DP z=0.5": ["--mode", "dpsgd", "--noise_multiplier", "0.5"],
    "client DP z=1.0": ["--mode", "dpsgd", "--noise_multiplier", "1.0"],
    "client DP z=1.5": ["--mode", "dpsgd", "--noise_multiplier", "1.5"],
    "local update DP z=1.0": ["--dp_level", "update_local", "--local_noise", "1.0", "--local_clip", "1.0"],
    "sample DP-SGD z=1.0": ["--dp_level", "sample", "--sample_noise", "1.0", "--max_grad_norm", "1.0"],
    "SecAgg+": ["--secure_agg", "secagg+"],
}


def round_flags(*, model: str, batch: int, steps: int, img_size: int, lr: float, seed: int) -> list[str]:
    """One round of a 3-hospital synthetic-ICH federation in which each hospital holds one
    batch of `batch` images and trains `steps` SGD steps on it."""
    return ["--data", "synthetic-ich", "-N", "3", "--train_size", str(batch), "--val_size", "2", "--test_size", "2",
            "--img_size", str(img_size), "--batch", str(batch), "--local_epochs", str(steps), "--local_opt", "sgd",
            "--lr", str(lr), "--rounds", "1", "--model", model, "--seed", str(seed), "--engine", "loop",
            "--no_progress", "--save_path", "unused"]


@dataclass
class Observation:
    view: torch.Tensor            # what the attacker reads of the target's update [P]
    images: torch.Tensor          # the target's training images [B, C, H, W] (for scoring only)
    labels: torch.Tensor          # their labels
    client: ClientModel           # the attacker's model of the client's procedure
    box: tuple[float, float]      # the data's public range
    epsilon: float                # the ledger's epsilon for the target's protection (inf: none)
    true_update: torch.Tensor     # the target's message before any server-side step (for checks)


def observe(flags: list[str]) -> Observation:
    cfg = parse_config(flags)
    fed = build_federation(cfg)
    if fed.trainer.prepare is not None:
        raise ValueError(f"--data {cfg.data} transforms its images in training; the attacks need raw images")
    state = initial_state(fed)
    start = state.params.clone()
    sent: list[Message] = []
    fed.pipeline.hooks.append(lambda m: sent.append(m) if m.kind == UPDATE else None)
    shards = subclient_data(fed, state)
    run_round(fed, state, shards, 0)
    target = next(i for i, m in enumerate(sent) if m.sender == TARGET)
    shard = shards[TARGET[0]][TARGET[1]]
    images, labels = shard.batch(torch.arange(len(shard)))
    return Observation(_attacker_view(fed, cfg, sent, target, start, state.params), images, labels,
                       _client_model(fed, cfg, start), _box(fed), _epsilon(fed, cfg), sent[target].payload)


def _attacker_view(fed: Federation, cfg: Config, sent: list[Message], target: int, start: torch.Tensor,
                   released_params: torch.Tensor) -> torch.Tensor:
    if fed.pipeline.secure is not None:
        return _masked_view(fed, cfg, sent, target)
    if fed.client_dp is None:
        return sent[target].payload
    weights, _ = private_weights(cfg, _participants(fed, sent))  # the pipeline's own fixed weights
    weight = float(weights[target])
    released = released_params - start  # FedAvg's server step is the released update itself
    others = sum(float(w) * m.payload for i, (m, w) in enumerate(zip(sent, weights)) if i != target)
    return (released - others) / weight


def _masked_view(fed: Federation, cfg: Config, sent: list[Message], target: int) -> torch.Tensor:
    """The target's masked input as the server received it, decoded with the public code."""
    numel = fed.trainer.flat.numel  # the model's size (the message holds the ring encoding)
    if fed.client_dp is not None:
        weights, max_weight = private_weights(cfg, _participants(fed, sent))
    else:
        weights, max_weight = round_weights([1] * len(sent), weighted=False), None
    ring = fed.pipeline.secure_release.ring_round(0, weights, cfg.S, max_weight, None,
                                                  planned_subclients(cfg, cfg.virtual_clients))
    received = fed.pipeline.secure.last.protocol.server.received
    payload = next(p for stage, sender, p in received if stage == "mask" and sender == target)
    masked = np.frombuffer(payload, f"<u{ring.code.bits // 8}").astype(np.uint64)
    return ring.code.decode(masked)[:numel].float() / float(weights[target])  # the side values follow


def _participants(fed: Federation, sent: list[Message]) -> Participants:
    return Participants([m.sender for m in sent], [1] * len(sent), [1] * len(sent), [], [],
                        planned_subclients=planned_subclients(fed.cfg, fed.cfg.virtual_clients))


def _client_model(fed: Federation, cfg: Config, start: torch.Tensor) -> ClientModel:
    """A clean copy of the architecture (no Opacus hooks) and the client's known procedure."""
    model = build_model(cfg.model, fed.data.in_channels, fed.data.num_outputs)
    clip = cfg.S if cfg.private else cfg.local_clip if cfg.dp_level == "update_local" else \
        cfg.max_grad_norm if cfg.dp_level == "sample" else None
    return ClientModel(model, fed.trainer.flat.names, fed.trainer.flat.split, start, fed.task.loss_fn, cfg.lr,
                       steps=cfg.local_epochs, clip=clip)


def _box(fed: Federation) -> tuple[float, float]:
    """The data's range, from every hospital's validation and test images (public format
    knowledge; the target's training images are not read)."""
    held_out = torch.cat([torch.cat([h.val.images, h.test.images]).flatten() for h in fed.data.hospitals])
    lo, hi = float(held_out.min()), float(held_out.max())
    margin = 0.1 * (hi - lo)
    return lo - margin, hi + margin


def _epsilon(fed: Federation, cfg: Config) -> float:
    if fed.client_dp is not None:
        return fed.ledger.epsilon("client/subclient", "rdp")
    if cfg.dp_level == "update_local":
        return fed.ledger.max_epsilon("local", "subclient", "rdp")
    if cfg.dp_level == "sample":
        return fed.ledger.max_epsilon("sample", "record", "rdp")
    return float("inf")
