"""Non-personal bundle records: what remains of a finished bundle once its personal data is removed.

After the retention period the retention sweep deletes a bundle's Temporal execution (whose
history holds the submission) and keeps this record in its place: ids, states, reason codes and
times, nothing a resident wrote and nothing a legacy system could have put a person's data in.
The store is an interface (`RecordStore`); `SqliteRecordStore` keeps the records in one SQLite
file under the data dir, which serves `tellonce dev` and a single-host deployment.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bundles.models import Level, LocalizedText
from infra.settings import Settings
from workflows.models import FINAL_BUNDLE_STATES, BundleState, BundleStatus, StepState

SAFE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""Shape of a reason code kept as it is: short, lowercase, an identifier rather than a sentence."""

DIGIT_RUN = re.compile(r"\d{3}")
"""Three digits in a row could be part of a number about a person (SIN, health number, date)."""

UNRECOGNISED_CODE = "unrecognised"
"""Recorded in place of a reason code that does not have the safe shape."""

STEP_FINAL_STATES_WITHOUT_REASON = frozenset({StepState.DONE})
"""A step that ended done keeps no reason: its last error, if any, was a retry it got past."""


class RecordStoreUnavailable(Exception):  # noqa: N818 - named for what the caller tells a person
    """The store cannot be read or written right now (try again later)."""


class StepRecord(BaseModel):
    """One step of a removed bundle: where it went and how it ended, in codes."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(description="The step id from the bundle definition.")
    system: str = Field(description="The legacy system (adapter id) the step was sent to.")
    program: LocalizedText = Field(description="The program's name, from the bundle definition.")
    organization: LocalizedText = Field(description="The organization's name, from the bundle definition.")
    level: Level
    state: StepState = Field(description="The step's state when the bundle closed.")
    attempts: int = Field(ge=0)
    reason_code: str | None = Field(
        default=None,
        description=(
            "Why a step did not end done: its last error's code when that code has the safe "
            f"shape, `{UNRECOGNISED_CODE}` otherwise."
        ),
    )
    exception: bool = Field(default=False, description="The bundle counted this step as an exception.")
    finished_at: datetime | None = None


class BundleRecord(BaseModel):
    """What remains of a bundle after the retention period (no personal data in any field).

    Left out on purpose: the submission, every step's payload, the references legacy systems
    issued (a birth registration number or an order number is an identifying number assigned
    to a person), every free-text message (a legacy system's words could quote the resident),
    and operators' names and reasons.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    tracking_id: str
    run_id: str = Field(description="The Temporal run the record was made from (the one deleted).")
    bundle_id: str
    definition_version: int
    jurisdiction: str
    channel: str = Field(description="How the submission arrived: api, kafka or cli.")
    state: BundleState = Field(description="The bundle's final state.")
    closed_as: str = Field(
        description="How the Temporal execution ended: completed, canceled, terminated, failed, timed_out."
    )
    received_at: datetime
    closed_at: datetime
    steps: tuple[StepRecord, ...] = ()
    personal_data_removed_at: datetime | None = Field(
        default=None, description="When the execution holding the personal data was deleted; None until then."
    )
    request_fingerprint: str | None = Field(
        default=None,
        description=(
            "The intake's keyed digest of the request (no personal data can be read from it): a "
            "resend of the same id is a duplicate only if it matches."
        ),
    )


def safe_code(code: str | None) -> str | None:
    """A reason code fit for the record: kept when it has the safe shape, else `unrecognised`."""
    if code is None:
        return None
    if SAFE_CODE.match(code) and not DIGIT_RUN.search(code):
        return code
    return UNRECOGNISED_CODE


def record_from_status(
    status: BundleStatus, *, run_id: str, channel: str, closed_at: datetime, closed_as: str
) -> BundleRecord:
    """The non-personal record of a closed bundle, from its final status.

    A bundle whose execution was ended from outside (terminated, timed out) before it reached
    a final state is recorded `failed`: it will never progress again.
    """
    state = status.state
    if closed_as not in {"completed", "canceled"} and state not in FINAL_BUNDLE_STATES:
        state = BundleState.FAILED
    return BundleRecord(
        tracking_id=status.submission_id,
        run_id=run_id,
        bundle_id=status.bundle_id,
        definition_version=status.definition_version,
        jurisdiction=status.jurisdiction,
        channel=channel,
        state=state,
        closed_as=closed_as,
        received_at=status.received_at,
        closed_at=closed_at,
        steps=tuple(
            StepRecord(
                id=step.id,
                system=step.system,
                program=step.program,
                organization=step.organization,
                level=step.level,
                state=step.state,
                attempts=step.attempts,
                reason_code=(
                    None
                    if step.state in STEP_FINAL_STATES_WITHOUT_REASON or step.last_error is None
                    else safe_code(step.last_error.code)
                ),
                exception=step.exception,
                finished_at=step.finished_at,
            )
            for step in status.steps
        ),
    )


class RecordStore(Protocol):
    """Where bundle records live. Every method is safe to call again with the same arguments."""

    async def upsert(self, record: BundleRecord) -> None:
        """Write a record, replacing the one of the same tracking id.

        The stored `personal_data_removed_at` is kept when the record is of the same run, so a
        second sweep never moves it; a record of another run starts without one.
        """
        ...

    async def get(self, tracking_id: str) -> BundleRecord | None:
        """The record of a tracking id, or None."""
        ...

    async def mark_removed(self, tracking_id: str, run_id: str, at: datetime) -> None:
        """Note that the run's execution was deleted (the first time only)."""
        ...

    async def pending_removal(self, limit: int) -> list[BundleRecord]:
        """Records written whose execution has not been confirmed deleted yet, oldest first."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    tracking_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    bundle_id TEXT NOT NULL,
    definition_version INTEGER NOT NULL,
    jurisdiction TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    closed_as TEXT NOT NULL,
    received_at TEXT NOT NULL,
    closed_at TEXT NOT NULL,
    personal_data_removed_at TEXT,
    recorded_at TEXT NOT NULL,
    request_fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS bundles_pending ON bundles (recorded_at) WHERE personal_data_removed_at IS NULL;
CREATE TABLE IF NOT EXISTS steps (
    tracking_id TEXT NOT NULL REFERENCES bundles (tracking_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    system TEXT NOT NULL,
    program TEXT NOT NULL,
    organization TEXT NOT NULL,
    level TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason_code TEXT,
    exception INTEGER NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (tracking_id, position)
);
"""

_BUNDLE_COLUMNS = (
    "tracking_id, run_id, bundle_id, definition_version, jurisdiction, channel, state, closed_as, "
    "received_at, closed_at, personal_data_removed_at, request_fingerprint"
)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqliteRecordStore:
    """Records in one SQLite file (WAL), shared by the worker, the API and the CLI on one host.

    Every call runs in a worker thread. A write opens its own connection: writes are rare (one
    per bundle swept). A read (`get`) runs once for every submission intake receives, so each
    worker thread keeps one read-only connection open: opening one and setting it up costs
    ~0.3 ms of CPU, the lookup itself ~0.01 ms. In WAL mode every read sees the last committed
    write, whichever process made it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False
        self._readers = threading.local()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(sqlite3.connect(self.path, timeout=10.0)) as db:
                db.execute("PRAGMA foreign_keys = ON")
                if not self._ready:
                    db.execute("PRAGMA journal_mode = WAL")
                    db.executescript(_SCHEMA)
                    columns = {row[1] for row in db.execute("PRAGMA table_info(bundles)")}
                    if "request_fingerprint" not in columns:  # a store written before the column
                        db.execute("ALTER TABLE bundles ADD COLUMN request_fingerprint TEXT")
                    self._ready = True
                # FULL: a record must survive a power cut once its execution has been deleted,
                # or the freed id could run again. One write per bundle makes this cheap.
                db.execute("PRAGMA synchronous = FULL")
                with db:  # one transaction: committed on success, rolled back on error
                    yield db
        except sqlite3.Error as exc:
            raise RecordStoreUnavailable(f"bundle records at {self.path}: {exc}") from exc

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection, opened on first use; dropped after an error."""
        db: sqlite3.Connection | None = getattr(self._readers, "db", None)
        try:
            if db is None:
                db = sqlite3.connect(self.path, timeout=10.0)
                db.execute("PRAGMA query_only = ON")
                self._readers.db = db
            yield db
        except sqlite3.Error as exc:
            self._readers.db = None
            if db is not None:
                db.close()
            raise RecordStoreUnavailable(f"bundle records at {self.path}: {exc}") from exc

    async def upsert(self, record: BundleRecord) -> None:
        """See `RecordStore.upsert`."""
        await asyncio.to_thread(self._upsert, record)

    def _upsert(self, record: BundleRecord) -> None:
        with self._connect() as db:
            db.execute(
                f"INSERT INTO bundles ({_BUNDLE_COLUMNS}, recorded_at) "  # noqa: S608 - column names are ours
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tracking_id) DO UPDATE SET "
                "personal_data_removed_at = CASE WHEN bundles.run_id = excluded.run_id "
                "  THEN coalesce(bundles.personal_data_removed_at, excluded.personal_data_removed_at) "
                "  ELSE excluded.personal_data_removed_at END, "
                "run_id = excluded.run_id, bundle_id = excluded.bundle_id, "
                "definition_version = excluded.definition_version, jurisdiction = excluded.jurisdiction, "
                "channel = excluded.channel, state = excluded.state, closed_as = excluded.closed_as, "
                "received_at = excluded.received_at, closed_at = excluded.closed_at, "
                "request_fingerprint = excluded.request_fingerprint, recorded_at = excluded.recorded_at",
                (
                    record.tracking_id,
                    record.run_id,
                    record.bundle_id,
                    record.definition_version,
                    record.jurisdiction,
                    record.channel,
                    record.state.value,
                    record.closed_as,
                    _time(record.received_at),
                    _time(record.closed_at),
                    _time(record.personal_data_removed_at),
                    record.request_fingerprint,
                    _time(datetime.now(UTC)),
                ),
            )
            db.execute("DELETE FROM steps WHERE tracking_id = ?", (record.tracking_id,))
            db.executemany(
                "INSERT INTO steps (tracking_id, position, step_id, system, program, organization, level, "
                "state, attempts, reason_code, exception, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        record.tracking_id,
                        position,
                        step.id,
                        step.system,
                        step.program.model_dump_json(),
                        step.organization.model_dump_json(),
                        step.level.value,
                        step.state.value,
                        step.attempts,
                        step.reason_code,
                        int(step.exception),
                        _time(step.finished_at),
                    )
                    for position, step in enumerate(record.steps)
                ],
            )

    async def get(self, tracking_id: str) -> BundleRecord | None:
        """See `RecordStore.get`."""
        return await asyncio.to_thread(self._get, tracking_id)

    def _get(self, tracking_id: str) -> BundleRecord | None:
        if not self._ready:
            if not self.path.exists():
                return None  # nothing swept yet: a lookup (e.g. each submission's) creates nothing
            with self._connect():  # creates or upgrades the schema, once
                pass
        with self._reader() as db:
            # fetchall, not fetchone: an unfinished statement keeps its read snapshot, and this
            # connection stays open, so every later read on it would miss newer records.
            rows = db.execute(
                f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE tracking_id = ?",  # noqa: S608 - ours
                (tracking_id,),
            ).fetchall()
            if not rows:
                return None
            steps = db.execute(
                "SELECT step_id, system, program, organization, level, state, attempts, reason_code, "
                "exception, finished_at FROM steps WHERE tracking_id = ? ORDER BY position",
                (tracking_id,),
            ).fetchall()
        return _record(rows[0], steps)

    async def mark_removed(self, tracking_id: str, run_id: str, at: datetime) -> None:
        """See `RecordStore.mark_removed`."""
        await asyncio.to_thread(self._mark_removed, tracking_id, run_id, at)

    def _mark_removed(self, tracking_id: str, run_id: str, at: datetime) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE bundles SET personal_data_removed_at = ? "
                "WHERE tracking_id = ? AND run_id = ? AND personal_data_removed_at IS NULL",
                (_time(at), tracking_id, run_id),
            )

    async def pending_removal(self, limit: int) -> list[BundleRecord]:
        """See `RecordStore.pending_removal`."""
        return await asyncio.to_thread(self._pending_removal, limit)

    def _pending_removal(self, limit: int) -> list[BundleRecord]:
        with self._connect() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT tracking_id FROM bundles WHERE personal_data_removed_at IS NULL "
                    "ORDER BY recorded_at LIMIT ?",
                    (limit,),
                )
            ]
        return [record for tracking_id in ids if (record := self._get(tracking_id)) is not None]


def _record(row: tuple[object, ...], steps: list[tuple[object, ...]]) -> BundleRecord:
    tracking_id, run_id, bundle_id, version, jurisdiction, channel, state, closed_as = row[:8]
    received, closed, removed, fingerprint = row[8:]
    return BundleRecord.model_validate(
        {
            "tracking_id": tracking_id,
            "run_id": run_id,
            "bundle_id": bundle_id,
            "definition_version": version,
            "jurisdiction": jurisdiction,
            "channel": channel,
            "state": state,
            "closed_as": closed_as,
            "received_at": received,
            "closed_at": closed,
            "personal_data_removed_at": removed,
            "request_fingerprint": fingerprint,
            "steps": [
                {
                    "id": step_id,
                    "system": system,
                    "program": json.loads(str(program)),
                    "organization": json.loads(str(organization)),
                    "level": level,
                    "state": step_state,
                    "attempts": attempts,
                    "reason_code": reason_code,
                    "exception": bool(exception),
                    "finished_at": finished_at,
                }
                for (
                    step_id,
                    system,
                    program,
                    organization,
                    level,
                    step_state,
                    attempts,
                    reason_code,
                    exception,
                    finished_at,
                ) in steps
            ],
        }
    )


def public_record(record: BundleRecord) -> dict[str, Any]:
    """A record in the shape of the resident API's status, plus `personal_data_removed_at`.

    No step has a reference or a message any more: both went with the personal data.
    """
    return {
        "tracking_id": record.tracking_id,
        "bundle_id": record.bundle_id,
        "state": record.state,
        "received_at": record.received_at,
        "updated_at": record.closed_at,
        "personal_data_removed_at": record.personal_data_removed_at,
        "steps": [
            {
                "id": step.id,
                "program": step.program,
                "organization": step.organization,
                "level": step.level,
                "state": step.state,
                "attempts": step.attempts,
                "reference": None,
                "message": None,
                "updated_at": step.finished_at,
            }
            for step in record.steps
        ],
    }


def records_path(settings: Settings) -> Path:
    """Where `tellonce dev` and a single-host deployment keep bundle records."""
    return settings.data_dir / "records" / "bundles.sqlite"


_stores: dict[Path, SqliteRecordStore] = {}


def open_record_store(settings: Settings) -> RecordStore:
    """The record store these settings name (one instance per file and process)."""
    path = records_path(settings).resolve()
    store = _stores.get(path)
    if store is None:
        store = _stores[path] = SqliteRecordStore(path)
    return store
