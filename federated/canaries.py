"""Audit canaries (--audit_canaries K): extra units whose updates the auditor chose.

Each canary is a unit of the audited kind (--audit_unit): a sub-client, or a hospital of v
sub-clients. Its update is a fixed random direction of the whole model, sent at a norm far
above any clip bound, so the release pipeline's own clip brings it to exactly C (a broken
clip would show in the audit). Each canary has a secret bit: included canaries take part
through the run's sampling rule (every round at q = 1; with probability q a round
otherwise, from a draw keyed by the canary), the others never send. The canaries are
members of the planned federation: the fixed denominators and the noise shares count them,
so the audited mechanism is the one the code runs with N v + (canary sub-clients) senders.
They hold no data: no utility number (losses, validation, test) ever includes them.

The auditor's record (audit.pt: the bits, the seed of the directions, the parameters at
the start) is read by `python -m attacks.audit RUN_DIR`, which training never imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from federated.config import Config
from utils.seeding import make_generator, stream_seed

AUDIT_RECORD = "audit.pt"
# Canary updates are sent at this multiple of the largest clip bound: every clip in the
# pipeline then scales them to exactly its bound.
OVERSIZE = 1e3
# Directions are kept between rounds while they fit in this many floats (256 MB); beyond,
# each round draws them again (the same vectors, from their seeds).
CACHE_FLOATS = 1 << 26


def planned_subclients(cfg: Config, v: int) -> int:
    """The planned federation's sub-clients: N v, plus the canaries' (their bits are secret,
    so every canary counts)."""
    return cfg.clients * v + cfg.audit_subclients


@dataclass(frozen=True)
class Canaries:
    count: int
    unit: str              # "subclient" or "hospital"
    per_canary: int        # sub-clients of one canary: 1, or v for a canary hospital
    included: torch.Tensor  # [K] bool: the secret bits
    seed: int              # of the directions and the participation draws
    first_key: int         # canary j sends as hospital key first_key + j
    _cache: dict = field(default_factory=dict, compare=False, repr=False)  # j -> direction, within CACHE_FLOATS

    @staticmethod
    def for_run(cfg: Config, hospital_keys: list[int]) -> "Canaries | None":
        if cfg.audit_canaries == 0:
            return None
        seed = stream_seed(cfg.seed, "audit")
        bits = torch.rand(cfg.audit_canaries, generator=make_generator(seed, "bits")) < 0.5
        per = cfg.virtual_clients if cfg.audit_unit == "hospital" else 1
        return Canaries(cfg.audit_canaries, cfg.audit_unit, per, bits, seed, first_key=max(hospital_keys) + 1)

    def direction(self, j: int, numel: int) -> torch.Tensor:
        """Canary j's unit direction, the same every round (drawn once while the cache holds it)."""
        if (j, numel) in self._cache:
            return self._cache[(j, numel)]
        gen = torch.Generator().manual_seed(stream_seed(self.seed, "direction", j))
        d = torch.randn(numel, generator=gen, dtype=torch.float64)
        d = (d / torch.linalg.vector_norm(d)).to(torch.get_default_dtype())
        if (len(self._cache) + 1) * numel <= CACHE_FLOATS:
            self._cache[(j, numel)] = d
        return d

    def senders(self, round_idx: int, rate: float) -> list[int]:
        """The included canaries that take part in `round_idx`: all at q = 1, otherwise each
        with probability q from its own keyed draw (the Poisson rule)."""
        chosen = []
        for j in torch.nonzero(self.included).flatten().tolist():
            if rate >= 1.0 or float(torch.rand(1, generator=torch.Generator().manual_seed(
                    stream_seed(self.seed, "participation", round_idx, j)))) < rate:
                chosen.append(j)
        return chosen

    def round_rows(self, round_idx: int, rate: float, numel: int, bound: float, *,
                   device: torch.device) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """This round's canary messages before the pipeline: (hospital key, sub-client) of
        each, and the rows [R, P], each the canary's direction at OVERSIZE times `bound`."""
        members, rows = [], []
        for j in self.senders(round_idx, rate):
            row = self.direction(j, numel).to(device) * (OVERSIZE * bound)
            for k in range(self.per_canary):
                members.append((self.first_key + j, k))
                rows.append(row)
        stacked = torch.stack(rows) if rows else torch.zeros((0, numel), device=device)
        return members, stacked

    def record(self, initial_params: torch.Tensor) -> dict:
        return {"count": self.count, "unit": self.unit, "per_canary": self.per_canary,
                "included": self.included.clone(), "seed": self.seed, "first_key": self.first_key,
                "initial_params": initial_params.detach().cpu().clone()}

    @staticmethod
    def from_record(record: dict) -> "Canaries":
        return Canaries(record["count"], record["unit"], record["per_canary"], record["included"], record["seed"],
                        record["first_key"])


def canary_bound(cfg: Config) -> float:
    """The largest clip bound a canary meets (client-level --S, local update DP's clip)."""
    bounds = [cfg.S] if cfg.private else []
    if cfg.dp_level == "update_local":
        bounds.append(cfg.local_clip)
    return max(bounds)
