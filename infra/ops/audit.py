"""The operations audit trail: every operator action and every view of personal data, append-only.

Entries live in SQLite (`synchronous=FULL`, so an acknowledged entry survives a power cut) and
form a hash chain: each one carries the SHA-256 of the previous entry and its own, computed over
its content. Editing, deleting or reordering rows breaks the chain, which `verify` reports at the
first entry that no longer fits. Triggers also refuse UPDATE and DELETE, so only someone who
bypasses the application can try, and the chain shows it.

Entries hold ids, states and the operator's identity, never a resident's data: the free-text
reason is passed through the log redaction before it is stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from infra.redaction import redact_text

GENESIS = "0" * 64
"""The `prev_hash` of the first entry."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    entry TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


class Outcome(StrEnum):
    """How an audited request ended."""

    ACCEPTED = "accepted"
    DENIED = "denied"
    FAILED = "failed"


class AuditRecord(BaseModel):
    """What one audit entry says (its chain position and hashes are added when it is stored)."""

    at: datetime
    subject: str = Field(description="Who: the operator's token subject (`anonymous` when no token).")
    role: str | None = Field(description="The operator's role, if their token was valid.")
    action: str = Field(description="What: `retry`, `bulk.retry`, `pause`, `view.personal_data`, …")
    outcome: Outcome
    bundle: str | None = None
    step: str | None = None
    system: str | None = None
    reason: str | None = Field(default=None, description="Why, as typed by the operator (redacted).")
    before: dict[str, Any] | None = Field(default=None, description="States before (ids and states only).")
    after: dict[str, Any] | None = Field(default=None, description="States after (ids and states only).")
    detail: str | None = Field(default=None, description="Why it was denied or failed, or what it covered.")


class AuditEntry(AuditRecord):
    """A stored audit entry with its place in the chain."""

    seq: int
    prev_hash: str
    hash: str


class VerifyReport(BaseModel):
    """The result of checking the chain."""

    ok: bool
    entries: int
    last_hash: str | None = Field(
        default=None,
        description="Hash of the last entry: kept elsewhere, it shows whether entries were cut off the end.",
    )
    first_bad_seq: int | None = None
    problem: str | None = None


def _digest(prev_hash: str, entry_json: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{entry_json}".encode()).hexdigest()


class AuditTrail:
    """The append-only audit trail in one SQLite file (shared safely by several processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: the entry is on disk before the action it records is answered.
        db.execute("PRAGMA synchronous=FULL")
        return db

    def append(self, record: AuditRecord) -> AuditEntry:
        """Store one entry at the end of the chain and return it."""
        stored = record.model_copy(
            update={
                "reason": redact_text(record.reason) if record.reason else record.reason,
                "detail": redact_text(record.detail) if record.detail else record.detail,
                "at": record.at.astimezone(UTC),
            }
        )
        entry_json = stored.model_dump_json()
        db = self._connect()
        try:
            # IMMEDIATE takes the write lock before reading the last hash: two writers cannot
            # both chain onto the same entry.
            db.execute("BEGIN IMMEDIATE")
            last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
            digest = _digest(prev_hash, f"{seq}\n{entry_json}")
            db.execute(
                "INSERT INTO audit (seq, at, entry, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                (seq, stored.at.isoformat(), entry_json, prev_hash, digest),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        return AuditEntry(**stored.model_dump(), seq=seq, prev_hash=prev_hash, hash=digest)

    def entries(self, since: datetime | None = None, limit: int | None = None) -> Iterator[AuditEntry]:
        """Entries in chain order, optionally only those at or after `since`."""
        query = "SELECT seq, entry, prev_hash, hash FROM audit"
        params: list[Any] = []
        if since is not None:
            query += " WHERE at >= ?"
            params.append(since.astimezone(UTC).isoformat())
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        db = self._connect()
        try:
            for seq, entry_json, prev_hash, digest in db.execute(query, params):
                yield AuditEntry(**json.loads(entry_json), seq=seq, prev_hash=prev_hash, hash=digest)
        finally:
            db.close()

    def verify(self) -> VerifyReport:
        """Walk the whole chain; report the first entry whose content or link does not match."""
        expected_prev = GENESIS
        expected_seq = 1
        count = 0
        db = self._connect()
        try:
            for seq, entry_json, prev_hash, digest in db.execute(
                "SELECT seq, entry, prev_hash, hash FROM audit ORDER BY seq"
            ):
                count += 1
                if seq != expected_seq:
                    return VerifyReport(
                        ok=False, entries=count, first_bad_seq=seq, problem=f"entry {expected_seq} is missing"
                    )
                if prev_hash != expected_prev:
                    return VerifyReport(
                        ok=False, entries=count, first_bad_seq=seq, problem="not chained to the entry before"
                    )
                if _digest(prev_hash, f"{seq}\n{entry_json}") != digest:
                    return VerifyReport(
                        ok=False, entries=count, first_bad_seq=seq, problem="changed after it was written"
                    )
                expected_prev = digest
                expected_seq += 1
        finally:
            db.close()
        return VerifyReport(ok=True, entries=count, last_hash=None if count == 0 else expected_prev)


def now() -> datetime:
    """The time an entry is written (UTC)."""
    return datetime.now(UTC)
