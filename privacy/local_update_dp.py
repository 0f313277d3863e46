"""Local update DP (`--dp_level update_local`): each sub-client privatises its own update.

Before sending, a sub-client clips its whole update to L2 norm C (`--local_clip`) and adds
N(0, (z * 2C)^2) to every coordinate: the server is not trusted, so the protected unit is
the sub-client's whole dataset against anything it sends, under replace-one adjacency
(two datasets' clipped updates differ by at most 2C). z is either given (`--local_noise`)
or calibrated by the accountant so that all `--rounds` releases together stay within
`--local_epsilon` (not a per-round epsilon, which would compose to rounds x epsilon).
No sampling amplification is claimed: which rounds a hospital joins is not secret from it.
Accounts in the shared ledger, per hospital: "local/<h>/subclient" (one release per round
in which its sub-clients send; a patient is inside one sub-client, so this is also the
patient's) and "local/<h>/hospital" (all v messages of a round composed).
"""
from __future__ import annotations

import torch

from privacy.accountants import EVERY_ROUND, calibrate, epsilon
from privacy.ledger import PrivacyLedger
from privacy.mechanism import clip, gaussian_noise, update_norms

ADJACENCY = {"subclient": "one sub-client's data replaced (also each of its patients); the server is not trusted",
             "hospital": "one hospital's data replaced: all v messages it sends a round, composed"}


def local_noise_multiplier(*, target_epsilon: float, rounds: int, delta: float, accountant: str) -> float:
    def spent(z: float) -> float:  # one unsampled Gaussian a round (the relation plays no part at q = 1)
        return epsilon([(z, 1.0)] * rounds, delta=delta, accountant=accountant, sampling=EVERY_ROUND)
    return calibrate(target_epsilon, spent, what="--local_epsilon")


class LocalUpdateDP:
    def __init__(self, *, noise_multiplier: float, clip_bound: float, delta: float, secure: bool,
                 hospitals: list[str], ledger: PrivacyLedger):
        self.z, self.clip_bound, self.delta, self.secure = noise_multiplier, clip_bound, delta, secure
        self.hospitals, self.ledger = hospitals, ledger
        for h in hospitals:
            for unit in ("subclient", "hospital"):
                ledger.open(f"local/{h}/{unit}", level="local", unit=unit, adjacency=ADJACENCY[unit],
                            relation="replace", sampling=EVERY_ROUND, delta=delta)

    @property
    def noise_std(self) -> float:
        return self.z * 2 * self.clip_bound

    def privatize_row(self, row: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One sub-client's message: its update [P] clipped to C, plus Gaussian noise from its
        own generator. It reads no other row."""
        clipped = clip(row[None], update_norms(row[None]), self.clip_bound)[0]
        return clipped + gaussian_noise(row.numel(), self.noise_std, gen, secure=self.secure, device=row.device)

    def charge_round(self, senders: list[int]) -> None:
        """Charge the round's messages: per hospital that sent, one release per sub-client
        account and one per message to the hospital's (`senders`: each message's hospital)."""
        for h in sorted(set(senders)):
            name = self.hospitals[h]
            self.ledger.charge(f"local/{name}/subclient", self.z)
            self.ledger.charge(f"local/{name}/hospital", self.z, count=senders.count(h))

    def privatize(self, deltas: torch.Tensor, senders: list[int], gens: list[torch.Generator]) -> torch.Tensor:
        """Every row's message and the round's charge (each row = one sub-client's message)."""
        self.charge_round(senders)
        return torch.stack([self.privatize_row(row, gen) for row, gen in zip(deltas, gens)])

    def max_epsilon(self, accountant: str, *, unit: str = "subclient") -> float:
        return self.ledger.max_epsilon("local", unit, accountant)

    def report(self, accountants=("rdp", "prv", "pld")) -> dict:
        return {"noise_multiplier": self.z, "noise_std": self.noise_std, "clip": self.clip_bound,
                "delta": self.delta,
                "epsilon_max": {a: self.max_epsilon(a) for a in accountants},
                "epsilon_hospital_max": {a: self.max_epsilon(a, unit="hospital") for a in accountants}}
