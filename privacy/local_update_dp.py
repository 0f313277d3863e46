"""Local update DP (`--dp_level update_local`): each sub-client privatises its own update.

Before sending, a sub-client clips its whole update to L2 norm C (`--local_clip`) and adds
N(0, (z * 2C)^2) to every coordinate: the server is not trusted, so the protected unit is
the sub-client's whole dataset against anything it sends, under replace-one adjacency
(two datasets' clipped updates differ by at most 2C). z is either given (`--local_noise`)
or calibrated by the accountant so that all `--rounds` releases together stay within
`--local_epsilon` (not a per-round epsilon, which would compose to rounds x epsilon).
No sampling amplification is claimed: which rounds a hospital joins is not secret from it.
Two units, as the client-level ledger: a sub-client (and so each of its patients) is
charged one release per round it sends; a hospital with v sub-clients sends v releases a
round about its data, and is charged all of them (their composition).
"""
from __future__ import annotations

import torch

from privacy.accountants import ACCOUNTANTS, Sampling, calibrate_noise, epsilon
from privacy.mechanism import clip, gaussian_noise, update_norms

EVERY_ROUND = Sampling("all", 1.0, 1, 1)


def local_noise_multiplier(*, target_epsilon: float, rounds: int, delta: float, accountant: str) -> float:
    return calibrate_noise(target_epsilon, rounds=rounds, delta=delta, accountant=accountant, sampling=EVERY_ROUND)


class LocalUpdateDP:
    def __init__(self, *, noise_multiplier: float, clip_bound: float, delta: float, secure: bool,
                 hospitals: list[str]):
        self.z, self.clip_bound, self.delta, self.secure = noise_multiplier, clip_bound, delta, secure
        self.hospitals = hospitals
        self.rounds = {h: 0 for h in hospitals}    # rounds in which the hospital's sub-clients sent
        self.messages = {h: 0 for h in hospitals}  # noised updates the hospital sent in all

    @property
    def noise_std(self) -> float:
        return self.z * 2 * self.clip_bound

    def privatize(self, deltas: torch.Tensor, senders: list[int], gen: torch.Generator) -> torch.Tensor:
        """Clip each row and add its own Gaussian noise (each row = one sub-client's message)."""
        clipped = clip(deltas, update_norms(deltas), self.clip_bound)
        noise = torch.stack([gaussian_noise(deltas.shape[1], self.noise_std, gen, secure=self.secure,
                                            device=deltas.device) for _ in range(deltas.shape[0])])
        for h in senders:
            self.messages[self.hospitals[h]] += 1
        for h in set(senders):
            self.rounds[self.hospitals[h]] += 1
        return clipped + noise

    def epsilon(self, hospital: str, accountant: str = "rdp", *, unit: str = "subclient") -> float:
        """Epsilon spent by a sub-client of `hospital` (each sends once a round) or by the
        hospital as a whole (all its sub-clients' messages composed)."""
        count = self.rounds[hospital] if unit == "subclient" else self.messages[hospital]
        return epsilon([(self.z, 1.0)] * count, delta=self.delta, accountant=accountant, sampling=EVERY_ROUND)

    def max_epsilon(self, accountant: str = "rdp", *, unit: str = "subclient") -> float:
        return max(self.epsilon(h, accountant, unit=unit) for h in self.hospitals)

    def report(self, accountants=ACCOUNTANTS) -> dict:
        return {"noise_multiplier": self.z, "noise_std": self.noise_std, "clip": self.clip_bound,
                "delta": self.delta, "rounds": dict(self.rounds), "messages": dict(self.messages),
                "epsilon_per_hospital": {h: {a: self.epsilon(h, a, unit="hospital") for a in accountants}
                                         for h in self.hospitals},
                # the sub-client (= patient) unit, and the hospital as a whole
                "epsilon_max": {a: self.max_epsilon(a) for a in accountants},
                "epsilon_hospital_max": {a: self.max_epsilon(a, unit="hospital") for a in accountants}}

    def state_dict(self) -> dict:
        return {"z": self.z, "rounds": dict(self.rounds), "messages": dict(self.messages)}

    def load_state_dict(self, state: dict) -> None:
        self.z, self.rounds, self.messages = state["z"], dict(state["rounds"]), dict(state["messages"])
