"""The release pipeline's secure-aggregation path (`--secure_agg secagg+`).

Per round it announces the public ring code (privacy/secagg/ring.py) and, with the noise
at the clients (`--noise_at clients`, privacy/secagg/distributed.py), what each input adds:
its rounding bound, its Skellam share and the scale of its norm side. After the secure sum
it releases the update as it arrived (the shares' noise is in it), and charges the round
with the shares that survived; before the round, it declares the worst case the protocol
lets through for `--dp_mode bounded`. Outside the noise at the clients it also measures
the rounding's error, a simulation diagnostic.
"""
from __future__ import annotations

import math

import torch

from federated.config import Config
from federated.messages import Message
from privacy.client_dp import ClientLevelDP, DeclaredRound, RoundPlan, client_message
from privacy.mechanism import weighted_sum
from privacy.secagg.aggregate import RingRound, SecureAggregation, side_norm
from privacy.secagg.distributed import DistributedNoise


class SecureRelease:
    def __init__(self, cfg: Config, client_dp: ClientLevelDP | None, secure: SecureAggregation,
                 noise: DistributedNoise | None, numel: int):
        self.cfg, self.client_dp, self.secure, self.noise, self.numel = cfg, client_dp, secure, noise, numel

    def ring_round(self, round_idx: int, weights: torch.Tensor, bound: float, max_weight: float | None,
                   expected: float | None, planned: int) -> RingRound:
        """The round's public ring code and, with the noise at the clients, what each input
        adds: its range holds the weighted sum of clipped updates, every input's side values
        and the noise. Under client-level DP it is set from the planned federation
        (`planned` sub-clients at the largest weight), never from who was sampled or is
        there: the neighbouring federation must run the same mechanism."""
        if self.client_dp is None:
            code = self.secure.code(round_idx, self.numel, update_norm=bound * float(weights.sum()),
                                    side_norm=side_norm(bound), clients=len(weights))
            return RingRound(code)
        update_norm = bound * max_weight * planned
        if self.noise is None:
            code = self.secure.code(round_idx, self.numel, update_norm=update_norm, side_norm=side_norm(bound),
                                    clients=planned)
            return RingRound(code)
        scale = max_weight * self.noise.side_scale
        code = self.secure.code(round_idx, self.numel, update_norm=update_norm, side_norm=scale * bound,
                                clients=planned, noise_std=self.noise.central_std(bound, max_weight))
        return RingRound(code, self.noise.input_bound(code, bound, max_weight),
                         self.noise.share_mu(code, bound, max_weight, expected), scale,
                         self.noise.input_norm(bound, max_weight))

    def expected_inputs(self, counts: list[int]) -> float:
        """q times the planned sub-clients (-N times v, and an audit's canaries): the
        denominator of private weights. v is the largest count (a small hospital may have
        fewer), or the mean under --balance_split (which hands out N v by size)."""
        v = sum(counts) // len(counts) if self.cfg.balance_split else max(counts)
        return self.cfg.sample_rate * (self.cfg.clients * v + self.cfg.audit_subclients)

    def worst_case(self, counts: list[int]) -> DeclaredRound:
        """The round's charge if only the threshold's shares survive (the protocol aborts
        below it): what --dp_mode bounded plans for. The round is charged what did survive."""
        inputs, expected = sum(counts), self.expected_inputs(counts)
        weight, bound = 1.0 / expected, self.client_dp.clip_policy.bound
        ring = self.ring_round(0, torch.full((inputs,), weight), bound, weight, expected,
                               round(expected / self.cfg.sample_rate))
        worst = self.secure.settings.params(inputs).threshold if inputs > 1 else inputs
        events = self.noise.events(ring.code, bound, weight, expected, worst, self.client_dp.unit_inputs(counts))
        return DeclaredRound((), {}, events)

    def distributed_release(self, total: torch.Tensor, sides: dict, ring: RingRound, bound: float,
                            plan: RoundPlan, part) -> tuple[torch.Tensor, dict]:
        """--noise_at clients: the decoded sum already holds the surviving shares' noise;
        the round is charged with what survived (`part`: the round's Participants)."""
        survivors = len(self.secure.last.included) if part.members else 0
        expected = plan.expected_participants
        counts = [len(sizes) for sizes in part.all_sizes]
        events = self.noise.events(ring.code, bound, plan.max_weight, expected, survivors,
                                   self.client_dp.unit_inputs(counts)) if survivors else {}
        self.client_dp.charge(DeclaredRound((), {}, events))
        std = self.noise.central_std(bound, plan.max_weight) * math.sqrt(survivors / expected)
        norm_sum = float(sides["clipped_norm"].sum()) / ring.side_scale
        result = self.client_dp.distributed_release(total, bound=bound, noise_std=std, norm_sum=norm_sum)
        result.stats["noise_survived"] = survivors / expected
        return result.update, result.stats

    def quantisation_error(self, total: torch.Tensor, prepared: list[torch.Tensor], weights: torch.Tensor,
                           bound: float, messages: list[Message]) -> dict:
        """A simulation diagnostic (a deployment cannot compute it): how far the decoded sum
        is from the exact weighted sum of the same clipped updates, relative to its norm."""
        if not messages or self.secure.last is None or len(self.secure.last.included) != len(messages):
            return {}
        exact = weighted_sum([client_message(p, bound).update for p in prepared], weights, total.numel(), total.device)
        scale = float(torch.linalg.vector_norm(exact))
        return {"secagg_quantisation_error": float(torch.linalg.vector_norm(total - exact)) / max(scale, 1e-30)}
