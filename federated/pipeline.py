"""One round's release pipeline: local deltas in, new global parameters out.

Client side, each sub-client turns its delta into the message it sends:
    precondition (server optimizer: FedNova, DP2-RMSProp) -> local noise (--dp_level
    update_local: its own clip and noise) -> clip (client-level DP) -> encode (plain).
Server side:
    combine (the weighted sum of the messages; secure aggregation or encryption would
    return the same sum) -> finalize (central noise, fixed denominators) -> server step.

Each step works row by row on the stacked [K, P] deltas, so a row depends only on its own
sub-client. The round loop calls `ReleasePipeline.round` and holds no privacy policy: which
weights, which noise std and which releases to charge are decided here and in privacy/.
Under client-level DP a round with no participant (K = 0) still releases its noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from federated.config import Config
from federated.server import FedAvgServer, ServerRound
from privacy.client_dp import ClientLevelDP, RoundPlan
from privacy.local_update_dp import LocalUpdateDP


@dataclass
class Participants:
    """Who sent an update this round, and the public facts about the whole federation."""
    members: list[tuple[int, int]]   # (hospital, sub-client) of each row
    num_samples: list[int]           # records of each member sub-client
    local_steps: list[int]           # local optimizer steps of each member
    all_sizes: list[list[int]]       # records of every sub-client of every hospital (sampled or not)
    generators: list[torch.Generator]  # each member's own generator (local update DP noise)
    planned_subclients: int          # sub-clients of the planned federation (-N times v): public


def round_weights(num_samples: list[int], *, weighted: bool) -> torch.Tensor:
    """Non-private aggregation weights for K updates: 1/K each (the paper's default), or
    n_k / sum n with --weighted_avg (McMahan et al., 2017, Alg. 1)."""
    counts = torch.tensor(num_samples, dtype=torch.float32)
    if weighted:
        return counts / counts.sum()
    return torch.full_like(counts, 1.0 / len(num_samples))


def private_weights(cfg: Config, part: Participants) -> tuple[torch.Tensor, float]:
    """Weights with fixed denominators: they, and the largest weight that sets the noise
    std, depend on the planned federation and the sampling rate, never on who was sampled
    (nor on whether one hospital is there at all). Uniform: 1 / (q * planned sub-clients).
    --weighted_avg (q = 1 only; declared not covered): n_k / all records."""
    if cfg.weighted_avg:
        total = sum(sum(sizes) for sizes in part.all_sizes)
        largest = max(max(sizes) for sizes in part.all_sizes)
        return torch.tensor(part.num_samples, dtype=torch.float32) / total, largest / total
    denominator = cfg.sample_rate * part.planned_subclients
    return torch.full((len(part.members),), 1.0 / denominator), 1.0 / denominator


class ReleasePipeline:
    def __init__(self, cfg: Config, server: FedAvgServer, client_dp: ClientLevelDP | None,
                 local_dp: LocalUpdateDP | None):
        self.cfg, self.server, self.client_dp, self.local_dp = cfg, server, client_dp, local_dp

    def charge_round(self, counts: list[int]) -> None:
        """Charge the round's declared releases (every round, sampled-out ones included);
        `counts`: each hospital's sub-clients this round."""
        if self.client_dp is not None:
            self.client_dp.charge_round(counts)

    def within_budget(self, counts: list[int]) -> bool:
        return self.client_dp is None or self.client_dp.within_budget(counts)

    def round(self, params: torch.Tensor, deltas: torch.Tensor, part: Participants, round_idx: int,
              noise_gen: torch.Generator, *, step: bool = True) -> tuple[torch.Tensor, dict]:
        """Messages -> released aggregate -> server step. With `step` False (the probe round)
        the server optimizer still takes the aggregate into its state (FedAdam's moments,
        DP2-RMSProp's accumulator) but the parameters are kept, as the paper's code restores
        only the model. Returns the new parameters and the round's statistics."""
        if self.client_dp is not None:
            weights, max_weight = private_weights(self.cfg, part)
        else:
            weights = round_weights(part.num_samples, weighted=self.cfg.weighted_avg)
        rnd = ServerRound(round_idx, weights, torch.tensor(part.local_steps, dtype=torch.float32))
        messages = self.server.precondition(deltas, rnd)
        if self.local_dp is not None and part.members:
            messages = self.local_dp.privatize(messages, [h for h, _ in part.members], part.generators)
        if self.client_dp is not None:
            plan = RoundPlan(max_weight, noise_gen, self.cfg.sample_rate * part.planned_subclients)
            result = self.client_dp.release(messages, weights, plan)
            update, stats = result.update, result.stats
        else:
            update = weights.to(messages) @ messages
            stats = {"norm_sum": float(torch.linalg.vector_norm(messages, dim=1).sum()),
                     "aggregate_norm": float(torch.linalg.vector_norm(update))}
        stepped = self.server.step(params, update, rnd)
        if step:
            params = stepped
        return params, self.server.rule_stats(stats, rnd)
