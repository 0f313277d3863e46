"""The releases a --secure_rng run has made, journaled before each round's outputs are written.

A resumed run repeats the rounds after its last checkpoint. With seeded noise the repeat
releases exactly what the first attempt did; under --secure_rng it draws fresh noise, so
what the first attempt released after that checkpoint (TensorBoard, the progress bar, the
printed lines) was a release of its own. Each round's charges are journaled (atomically)
before any of its outputs is written, and every checkpoint records how long the journal was;
a resume charges the ledger again with every journaled release after that length, so a
round that was released twice is charged twice.
"""
from __future__ import annotations

from pathlib import Path

import dp_accounting

from federated.config import ConfigError
from privacy.accountants import Release
from privacy.declared import event_of, from_plain, to_plain
from privacy.ledger import PrivacyLedger
from utils import io, runfiles

JOURNAL = runfiles.JOURNAL


class ReleaseJournal:
    def __init__(self, folder: Path):
        self.path = Path(folder) / JOURNAL
        self.entries: list[dict] = io.read_json(self.path) if self.path.exists() else []

    def __len__(self) -> int:
        return len(self.entries)

    def record(self, round_idx: int, charges: list[tuple[str, dp_accounting.DpEvent]]) -> None:
        """Append one round's charges to the ledger (`PrivacyLedger.since`) and write them."""
        self.entries.append({"round": round_idx, "charges": [[name, to_plain(event)] for name, event in charges]})
        io.write_json(self.path, self.entries)

    def charge_after(self, length: int, ledger: PrivacyLedger) -> int:
        """Charge `ledger` with the releases journaled after the first `length` entries (those
        a checkpoint's ledger does not hold); returns how many rounds they were."""
        for entry in self.entries[length:]:
            for name, *charge in entry["charges"]:
                if name not in ledger.accounts:
                    raise ConfigError(f"{self.path} records releases of privacy account {name!r}, which this run "
                                      "does not have (another configuration ran in this folder); use --overwrite "
                                      "or another --exp")
                ledger.declare(name, from_plain(charge[0]) if len(charge) == 1 else  # earlier journals:
                               event_of(Release(*charge), ledger.accounts[name].sampling))  # multiplier, rate, kind
        return len(self.entries) - length
