"""Secure aggregation as the release pipeline's `encode` and `combine`.

Each sub-client weights its own (clipped) update, appends its side values (under
client-level DP its clipped norm and whether its norm was within the bound; else its
norm, clipped to the ring's bound) and encodes the vector into the ring
(privacy/secagg/ring.py). The round's inputs are summed by SecAgg+
(privacy/secagg/protocol.py); the server decodes the sum only. The ring's step is public:
set each round from the clip bound, the round's weights, the number of inputs and the
bits. Drop-outs are drawn from the run's seeded generator (or listed by stage), so a
rerun drops the same inputs; the keys, seeds and shares come from the OS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from privacy.secagg.protocol import STAGES, SecAggAbort, SecAggParams, SecAggResult, secure_sum
from privacy.secagg.ring import RingCode

SIDES = 2  # side values that ride with each update: (clipped) norm, within-bound bit


@dataclass(frozen=True)
class RingRound:
    """What every input of a round is told: the ring code and, with the noise at the
    clients (privacy/secagg/distributed.py), the rounding bound, the noise share and the
    norm side's scale."""
    code: RingCode
    input_bound: float | None = None  # ring units; None: plain stochastic rounding
    noise_mu: float = 0.0             # each input's Skellam variance, ring units
    side_scale: float | None = None   # w a for the clipped norm; None: the side values as they are
    input_norm: float | None = None   # real units: each input is clipped to it again in float64


@dataclass(frozen=True)
class SecAggSettings:
    neighbours: int = 0      # k per client; 0: every other client (the original SecAgg)
    threshold: int = 0       # t; 0: a majority of each client's k + 1 holders, plus one
    bits: int = 32
    dropout_rate: float = 0.0
    drops: dict[str, tuple[int, ...]] = field(default_factory=dict)  # stage -> input positions, every round

    def params(self, clients: int) -> SecAggParams:
        """The protocol's parameters for a round of `clients` inputs; aborts a round whose
        inputs are too few for the threshold (their sum would not be hidden)."""
        k = clients - 1 if self.neighbours == 0 else min(self.neighbours, clients - 1)
        t = self.threshold or max(2, (k + 1) // 2 + 1)
        if t > k + 1:
            raise SecAggAbort("advertise", f"{clients} input(s) this round, each with {k + 1} share holder(s), fewer "
                                           f"than the threshold {t}")
        return SecAggParams(clients, k, t, self.bits)


@dataclass
class SecureSum:
    total: torch.Tensor        # the decoded sum of the weighted updates [P] (float64)
    sides: torch.Tensor        # the decoded sum of the side values [SIDES]
    included: list[int]        # the inputs in the sum
    protocol: SecAggResult


class SecureAggregation:
    def __init__(self, settings: SecAggSettings, *, seed: int):
        self.settings, self.seed = settings, seed
        self.last: SecureSum | None = None  # the latest round's sum (for the simulation's diagnostics)
        self.rounds: list[dict] = []         # each round's protocol cost, for the summary

    def code(self, round_idx: int, numel: int, *, update_norm: float, side_norm: float,
             clients: int, noise_std: float = 0.0) -> RingCode:
        """The round's ring code: its range holds a sum of `clients` inputs whose weighted
        updates sum to norm <= `update_norm`, each with side values of norm <= `side_norm`,
        plus noise of `noise_std` per coordinate."""
        bound = update_norm + clients * side_norm
        return RingCode.for_sum(bits=self.settings.bits, dim=numel + SIDES, norm_bound=bound, noise_std=noise_std,
                                rotation_seed=self._round_seed(round_idx, 1))

    @staticmethod
    def encode(ring: RingRound, weighted: torch.Tensor, sides: tuple[float, float], gen: torch.Generator) -> np.ndarray:
        """One sub-client's ring input: its weighted update and side values (and its noise share)."""
        vector = torch.cat([weighted.detach().to(torch.float64).cpu(), torch.tensor(sides, dtype=torch.float64)])
        if ring.input_norm is not None:
            # a float32 clip can leave the norm ~1e-5 above C on millions of coordinates, far more
            # than the conditional rounding's slack: clip again where the bound is charged
            norm = float(torch.linalg.vector_norm(vector))
            if norm > ring.input_norm:
                vector = vector * (ring.input_norm / norm)
        return ring.code.encode(vector, gen, bound=ring.input_bound, noise_mu=ring.noise_mu)

    def combine(self, inputs: list[np.ndarray], code: RingCode, round_idx: int) -> SecureSum:
        """Run SecAgg+ on the round's inputs; the decoded sum over those it included."""
        params = self.settings.params(len(inputs))
        rng = np.random.default_rng(self._round_seed(round_idx, 2))
        result = secure_sum(inputs, params, rng, self._drops(len(inputs), rng))
        decoded = code.decode(result.total)
        self.last = SecureSum(decoded[:-SIDES], decoded[-SIDES:], result.included, result)
        self.rounds.append({"inputs": len(inputs), "included": len(result.included),
                            "bytes_sent": float(np.mean(result.sent)), "bytes_received": float(np.mean(result.received)),
                            "client_s": result.client_seconds / len(inputs), "server_s": result.server_seconds})
        return self.last

    def summary(self) -> dict:
        """The protocol's cost per round, averaged over the rounds this process ran (per
        client: bytes sent and received, protocol seconds; the server's seconds)."""
        if not self.rounds:
            return {"rounds": 0}
        keys = self.rounds[0].keys()
        return {"rounds": len(self.rounds), "bits": self.settings.bits,
                **{f"mean_{k}": float(np.mean([r[k] for r in self.rounds])) for k in keys}}


    def _drops(self, clients: int, rng: np.random.Generator) -> dict[str, set[int]]:
        drops = {stage: {p for p in self.settings.drops.get(stage, ()) if p < clients} for stage in STAGES}
        if self.settings.dropout_rate > 0:
            leaving = rng.random(clients) < self.settings.dropout_rate
            stages = rng.integers(0, len(STAGES), clients)
            for u in np.flatnonzero(leaving):
                drops[STAGES[stages[u]]].add(int(u))
        return drops

    def _round_seed(self, round_idx: int, purpose: int, *more: int) -> int:
        return int(np.random.SeedSequence([self.seed, round_idx, purpose, *more]).generate_state(1)[0])


def side_norm(bound: float) -> float:
    """The norm of one input's side values: a (clipped) norm <= bound and a bit."""
    return math.sqrt(bound ** 2 + 1)
