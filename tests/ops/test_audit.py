"""The audit trail: append-only, chained, durable across processes, and free of residents' data."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.ops.audit import AuditRecord, AuditTrail, Outcome

ROOT = Path(__file__).resolve().parents[2]


def record(action: str = "retry", **fields: object) -> AuditRecord:
    values: dict[str, object] = {
        "at": datetime.now(UTC),
        "subject": "alice",
        "role": "operator",
        "action": action,
        "outcome": Outcome.ACCEPTED,
        "bundle": "2f1c0e5e-8a7b-4f59-9d1e-2b0f3c4d5e6f",
        "step": "sin",
        "reason": "SIN system back after outage",
        "before": {"state": "needs_attention"},
        "after": {"state": "running"},
        **fields,
    }
    return AuditRecord.model_validate(values)


def test_entries_chain_and_verify(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit.sqlite")
    first = trail.append(record())
    second = trail.append(record("skip", outcome=Outcome.DENIED, role="viewer"))
    assert second.prev_hash == first.hash
    assert [e.action for e in trail.entries()] == ["retry", "skip"]
    report = trail.verify()
    assert report.ok
    assert (report.entries, report.last_hash) == (2, second.hash)


def test_a_reason_typed_with_a_residents_sin_is_stored_redacted(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit.sqlite")
    trail.append(record(reason="parent SIN 046 454 286 was mistyped"))
    raw = (tmp_path / "audit.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("audit.sqlite-*")
    )
    assert b"046 454 286" not in raw
    assert b"046454286" not in raw
    (entry,) = trail.entries()
    assert entry.reason is not None
    assert "[redacted:" in entry.reason


def test_the_trail_refuses_updates_and_deletes(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit.sqlite")
    trail.append(record())
    with (
        sqlite3.connect(tmp_path / "audit.sqlite") as db,
        pytest.raises(sqlite3.DatabaseError, match="append-only"),
    ):
        db.execute("DELETE FROM audit")


def test_verify_finds_the_first_tampered_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    trail = AuditTrail(path)
    for action in ("retry", "skip", "fail", "withdraw"):
        trail.append(record(action))
    with sqlite3.connect(path) as db:
        # Someone with the file bypasses the application: drops the guard and rewrites a reason.
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET entry = replace(entry, 'outage', 'nothing') WHERE seq = 3")
    report = AuditTrail(path).verify()
    assert not report.ok
    assert (report.first_bad_seq, report.problem) == (3, "changed after it was written")


def test_verify_finds_a_removed_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    trail = AuditTrail(path)
    for action in ("retry", "skip", "fail"):
        trail.append(record(action))
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER audit_no_delete")
        db.execute("DELETE FROM audit WHERE seq = 2")
    report = AuditTrail(path).verify()
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_entries_written_by_another_process_survive_and_extend_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    AuditTrail(path).append(record("pause", system="esdc-sin", bundle=None, step=None))
    writer = (
        "import sys; from datetime import UTC, datetime; from pathlib import Path;"
        "from infra.ops.audit import AuditRecord, AuditTrail, Outcome;"
        "AuditTrail(Path(sys.argv[1])).append(AuditRecord(at=datetime.now(UTC), subject='bob',"
        " role='supervisor', action='resume', outcome=Outcome.ACCEPTED, system='esdc-sin'))"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], cwd=ROOT, check=True, timeout=30)
    reopened = AuditTrail(path)
    assert [(e.subject, e.action) for e in reopened.entries()] == [("alice", "pause"), ("bob", "resume")]
    assert reopened.verify().ok
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert list(reopened.entries(since=later)) == []
