"""The privacy ledger: every release, per protected unit (DESIGN.md, invariants 2-4).

Two units are tracked:
- "subclient": one sub-client (intermediary). Each patient belongs to exactly one
  sub-client, so this is also the patient-level guarantee. A release with noise
  multiplier z protects it with multiplier z.
- "hospital": a hospital contributes v_t sub-clients, i.e. v_t clipped updates, so its
  sensitivity is v_t times larger and the same release protects it with z / v_t
  (Jiang et al., MICCAI 2023, Sec. 2.2). The largest v_t among hospitals is charged.
The epsilon reported is read back from this ledger, never from a target.
"""
from __future__ import annotations

from privacy.accountants import ACCOUNTANTS, Sampling, epsilon, sampling_note

UNITS = ("subclient", "hospital")


class PrivacyLedger:
    def __init__(self, *, delta: float, sampling: Sampling):
        self.delta = delta
        self.sampling = sampling
        self.history: dict[str, list[tuple[float, float]]] = {u: [] for u in UNITS}
        self.rounds_charged = 0

    def releases_for(self, multiplier: float, subclients_per_hospital: int) -> dict[str, tuple[float, float]]:
        """One Gaussian release seen from each unit: (noise multiplier, sample rate)."""
        q = self.sampling.rate
        return {"subclient": (multiplier, q), "hospital": (multiplier / subclients_per_hospital, q)}

    def charge(self, releases: list[dict[str, tuple[float, float]]]) -> None:
        """Record one round's releases (the update, and in strict mode the clip count and norm sum)."""
        for release in releases:
            for unit in UNITS:
                self.history[unit].append(release[unit])
        self.rounds_charged += 1

    def epsilon(self, unit: str, accountant: str = "rdp", extra: list[dict] | None = None) -> float:
        """Epsilon spent so far by `unit`; with `extra`, as if those releases were added."""
        history = self.history[unit] + [r[unit] for r in extra or []]
        return epsilon(history, delta=self.delta, accountant=accountant, sampling=self.sampling)

    def report(self, accountants=ACCOUNTANTS) -> dict:
        """Final epsilon of both units under each accountant, with delta, q and rounds."""
        return {
            "delta": self.delta, "sample_rate": self.sampling.rate, "sampling": self.sampling.kind,
            "rounds_charged": self.rounds_charged,
            "epsilon": {u: {a: self.epsilon(u, a) for a in accountants} for u in UNITS},
            "notes": [n for a in accountants if (n := sampling_note(self.sampling, a))],
        }

    def state_dict(self) -> dict:
        return {"delta": self.delta, "sampling": vars(self.sampling), "rounds_charged": self.rounds_charged,
                "history": {u: list(h) for u, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.delta = state["delta"]
        self.sampling = Sampling(**state["sampling"])
        self.rounds_charged = state["rounds_charged"]
        self.history = {u: [tuple(e) for e in h] for u, h in state["history"].items()}
