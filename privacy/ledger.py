"""The privacy ledger: one record of every release, for every unit and every level.

An account is one protected unit at one level of DP, with its own history of Gaussian
releases (noise multiplier, sample rate and kind: privacy/accountants.py, `Release`),
sampling scheme, neighbouring relation and delta:

- client level: "client/hospital", "client/subclient", "client/patient" (privacy/events.py)
- sample level (DP-SGD inside each hospital): "sample/<hospital>", one record added or removed
- local update DP: "local/<hospital>/subclient" and "local/<hospital>/hospital"

Every epsilon the run reports is read back from here (never from a target), and the
privacy report's accounting part is generated from the accounts. The ledger is saved in
every checkpoint, so a resumed run continues the same histories.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from privacy.accountants import ACCOUNTANTS, Release, Sampling, epsilon, history_notes, limit_note


@dataclass
class Account:
    level: str        # "client", "sample" or "local"
    unit: str         # "hospital", "subclient", "patient" or "record"
    adjacency: str    # in words, for the report
    relation: str     # "add_remove" or "replace"
    sampling: Sampling
    delta: float
    history: list[Release] = field(default_factory=list)


class PrivacyLedger:
    def __init__(self):
        self.accounts: dict[str, Account] = {}

    def open(self, name: str, *, level: str, unit: str, adjacency: str, relation: str, sampling: Sampling,
             delta: float) -> None:
        if name in self.accounts:
            raise ValueError(f"privacy account {name!r} is opened twice")
        self.accounts[name] = Account(level, unit, adjacency, relation, sampling, delta)

    def charge(self, name: str, multiplier: float, *, rate: float | None = None, count: int = 1,
               kind: str = "sampled") -> None:
        """Record `count` releases with noise `multiplier` (std / neighbouring distance),
        involving the unit with probability `rate` (the account's sampling rate by default)."""
        account = self.accounts[name]
        q = account.sampling.rate if rate is None else rate
        account.history.extend([Release(float(multiplier), float(q), kind)] * count)

    def mark(self) -> dict[str, int]:
        """Where every history ends now (for `since`)."""
        return {name: len(a.history) for name, a in self.accounts.items()}

    def since(self, mark: dict[str, int]) -> list[tuple[str, Release]]:
        """The releases charged after `mark`, in order."""
        return [(name, r) for name, a in self.accounts.items() for r in a.history[mark[name]:]]

    def releases(self, name: str) -> int:
        return len(self.accounts[name].history)

    def epsilon(self, name: str, accountant: str = "rdp", *, extra: list[Release] | None = None) -> float:
        """Epsilon spent so far by account `name`; with `extra` releases, as if they were
        charged too."""
        a = self.accounts[name]
        history = a.history + list(extra or [])
        return epsilon(history, delta=a.delta, accountant=accountant, sampling=a.sampling, relation=a.relation)

    def max_epsilon(self, level: str, unit: str, accountant: str = "rdp") -> float:
        """The largest epsilon among the accounts of (level, unit), e.g. over hospitals."""
        return max(self.epsilon(n, accountant) for n, a in self.accounts.items() if (a.level, a.unit) == (level, unit))

    def report(self, accountants=ACCOUNTANTS) -> dict:
        """Every account: unit, adjacency, sampling, releases and epsilon under each accountant."""
        out = {}
        for name, a in self.accounts.items():
            notes = [n for acc in accountants
                     for n in history_notes(a.history, sampling=a.sampling, relation=a.relation, accountant=acc)]
            notes += [n for acc in accountants if (n := limit_note(a.history, delta=a.delta, accountant=acc,
                                                                   sampling=a.sampling, relation=a.relation))]
            out[name] = {"level": a.level, "unit": a.unit, "adjacency": a.adjacency, "relation": a.relation,
                         "sampling": a.sampling.kind, "sample_rate": a.sampling.rate, "delta": a.delta,
                         "releases": len(a.history),
                         "epsilon": {acc: self.epsilon(name, acc) for acc in accountants}, "notes": notes}
        return out

    def state_dict(self) -> dict:
        # plain tuples: checkpoints are loaded with weights_only, which admits no custom types
        return {name: {**asdict(a), "history": [tuple(r) for r in a.history]} for name, a in self.accounts.items()}

    def load_state_dict(self, state: dict) -> None:
        saved = {}
        for name, a in state.items():
            saved[name] = Account(a["level"], a["unit"], a["adjacency"], a["relation"], Sampling(**a["sampling"]),
                                  a["delta"], [Release(*e) for e in a["history"]])
        if set(saved) != set(self.accounts):
            raise ValueError(f"checkpoint ledger has accounts {sorted(saved)}, this run {sorted(self.accounts)}")
        self.accounts = saved
