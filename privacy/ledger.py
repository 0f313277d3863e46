"""The privacy ledger: one record of every release, for every unit and every level.

An account is one protected unit at one level of DP, with its sampling scheme, neighbouring
relation and delta, and the events charged to it: dp-accounting `DpEvent`s with their
sampling (privacy/declared.py), which the accountants read as Gaussian releases
(privacy/accountants.py, `Release`):

- client level: "client/hospital", "client/subclient", "client/patient" (privacy/events.py)
- sample level (DP-SGD inside each hospital): "sample/<hospital>", one record added or removed
- local update DP: "local/<hospital>/subclient" and "local/<hospital>/hospital"

Every epsilon the run reports is read back from here (never from a target), and the
privacy report's accounting part is generated from the accounts. The ledger is saved in
every checkpoint, so a resumed run continues the same histories.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import dp_accounting

from privacy.accountants import ACCOUNTANTS, Release, Sampling, epsilon, history_notes, limit_note
from privacy.declared import describe, event_of, from_plain, parts_of, releases_of, to_plain, zcdp_of


@dataclass
class Account:
    level: str        # "client", "sample" or "local"
    unit: str         # "hospital", "subclient", "patient" or "record"
    adjacency: str    # in words, for the report
    relation: str     # "add_remove" or "replace"
    sampling: Sampling
    delta: float
    events: list[dp_accounting.DpEvent] = field(default_factory=list)

    @property
    def history(self) -> list[Release]:
        """The Gaussian releases the events compose, one per release, in order."""
        return [r for e in self.events for r in releases_of(e)]

    @property
    def zcdp(self) -> list[dp_accounting.ZCDpEvent]:
        """The zCDP releases (distributed Skellam noise), one per release."""
        return [z for e in self.events for z in zcdp_of(e)]


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
        if count < 1:
            return
        account = self.accounts[name]
        q = account.sampling.rate if rate is None else rate
        event = event_of(Release(float(multiplier), float(q), kind), account.sampling)
        self.declare(name, event if count == 1 else dp_accounting.SelfComposedDpEvent(event, count))

    def declare(self, name: str, event: dp_accounting.DpEvent) -> None:
        """Record `event` (one the accountants read: privacy/declared.py) on account `name`."""
        parts_of(event)  # refuses, before recording, an event no accountant here can read
        self.accounts[name].events.append(event)

    def mark(self) -> dict[str, int]:
        """Where every account's events end now (for `since`)."""
        return {name: len(a.events) for name, a in self.accounts.items()}

    def since(self, mark: dict[str, int]) -> list[tuple[str, dp_accounting.DpEvent]]:
        """The events charged after `mark`, in order."""
        return [(name, e) for name, a in self.accounts.items() for e in a.events[mark[name]:]]

    def releases(self, name: str) -> int:
        return sum(len(parts_of(e)) for e in self.accounts[name].events)

    def epsilon(self, name: str, accountant: str = "rdp", *, extra: list[dp_accounting.DpEvent] | None = None) -> float:
        """Epsilon spent so far by account `name`; with `extra` events, as if they were
        charged too."""
        a = self.accounts[name]
        history = a.history + [r for e in extra or [] for r in releases_of(e)]
        zcdp = a.zcdp + [z for e in extra or [] for z in zcdp_of(e)]
        return epsilon(history, delta=a.delta, accountant=accountant, sampling=a.sampling, relation=a.relation,
                       zcdp=zcdp)

    def max_epsilon(self, level: str, unit: str, accountant: str = "rdp") -> float:
        """The largest epsilon among the accounts of (level, unit), e.g. over hospitals."""
        return max(self.epsilon(n, accountant) for n, a in self.accounts.items() if (a.level, a.unit) == (level, unit))

    def report(self, accountants=ACCOUNTANTS) -> dict:
        """Every account: unit, adjacency, sampling, releases and epsilon under each accountant."""
        out = {}
        for name, a in self.accounts.items():
            history = a.history
            notes = [n for acc in accountants
                     for n in history_notes(history, sampling=a.sampling, relation=a.relation, accountant=acc)]
            notes += [n for acc in accountants if (n := limit_note(history, delta=a.delta, accountant=acc,
                                                                   sampling=a.sampling, relation=a.relation))]
            if a.zcdp:
                notes += [f"{acc}: no analysis of a zCDP (Skellam) release; its epsilon is RDP's (reported as inf "
                          "here)" for acc in accountants if acc != "rdp"]
            out[name] = {"level": a.level, "unit": a.unit, "adjacency": a.adjacency, "relation": a.relation,
                         "sampling": a.sampling.kind, "sample_rate": a.sampling.rate, "delta": a.delta,
                         "releases": self.releases(name), "events": describe(a.events),
                         "epsilon": {acc: self.epsilon(name, acc) for acc in accountants}, "notes": notes}
        return out

    def state_dict(self) -> dict:
        # plain dicts: checkpoints are loaded with weights_only, which admits no custom types
        return {name: {"level": a.level, "unit": a.unit, "adjacency": a.adjacency, "relation": a.relation,
                       "sampling": asdict(a.sampling), "delta": a.delta, "events": [to_plain(e) for e in a.events]}
                for name, a in self.accounts.items()}

    def load_state_dict(self, state: dict) -> None:
        saved = {}
        for name, a in state.items():
            sampling = Sampling(**a["sampling"])
            if "events" in a:
                events = [from_plain(e) for e in a["events"]]
            else:  # a checkpoint from before events: one (multiplier, rate, kind) per release
                events = [event_of(Release(*r), sampling) for r in a["history"]]
            saved[name] = Account(a["level"], a["unit"], a["adjacency"], a["relation"], sampling, a["delta"], events)
        if set(saved) != set(self.accounts):
            raise ValueError(f"checkpoint ledger has accounts {sorted(saved)}, this run {sorted(self.accounts)}")
        self.accounts = saved
