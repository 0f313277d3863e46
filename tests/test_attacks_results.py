"""The committed audit table (experiments/attacks/results/audit.md) is what its run records
give: rebuilt from them here, and no lower bound in it exceeds the ledger."""
from __future__ import annotations

from pathlib import Path

from attacks.audit import audit_table
from utils import io

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "attacks" / "results"


def test_the_audit_table_is_rebuilt_from_its_run_records():
    records = sorted((RESULTS / "audit_records").rglob("*.run.json"))
    assert len(records) == 21  # 7 settings x 3 seeds
    results = {Path(p.name.removesuffix(".run.json")): io.read_json(p)["summary"]["audit"] for p in records}
    rows, markdown = audit_table(results)
    assert markdown == (RESULTS / "audit.md").read_text()
    assert all(r["bound_within_ledger"] and r["seeds"] == 3 for r in rows)
