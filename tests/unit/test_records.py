"""Bundle records: what survives the retention period, and that nothing personal is in it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bundles.models import Level, LocalizedText
from infra.api import PublicStatus
from infra.records import (
    UNRECOGNISED_CODE,
    BundleRecord,
    RecordStoreUnavailable,
    SqliteRecordStore,
    public_record,
    record_from_status,
    records_path,
    safe_code,
)
from infra.settings import Settings
from workflows.models import (
    BundleState,
    BundleStatus,
    OperatorAction,
    StepError,
    StepState,
    StepStatus,
)

T0 = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
TRACKING_ID = "6f1c2a9e-3b7d-4c1e-9a55-0d2f8e4b7c10"

# What a status can hold that the record must never keep: a resident's words quoted by a legacy
# system, a registration number, an operator's name and reason.
PERSONAL = ("Marie Bélanger", "046454286", "ON-2026-0000042", "Agent Tremblay", "called the mother")


def _text(en: str) -> LocalizedText:
    return LocalizedText(en=en, fr=f"{en} (fr)")


def status(state: BundleState = BundleState.COMPLETED_WITH_EXCEPTIONS) -> BundleStatus:
    """A final status whose free-text fields and references are full of personal data."""
    return BundleStatus(
        submission_id=TRACKING_ID,
        bundle_id="newborn-on",
        definition_version=3,
        jurisdiction="CA-ON",
        state=state,
        received_at=T0,
        updated_at=T0 + timedelta(minutes=5),
        steps=[
            StepStatus(
                id="registration",
                program=_text("Birth registration"),
                organization=_text("ServiceOntario"),
                level=Level.PROVINCIAL,
                system="on-registrar-births",
                state=StepState.DONE,
                attempts=2,
                reference="ON-2026-0000042",
                message=_text("Registered for Marie Bélanger"),
                # A retry it got past: a done step keeps no reason.
                last_error=StepError(kind="transient", code="unavailable", message=_text("retrying"), at=T0),
                finished_at=T0 + timedelta(minutes=1),
            ),
            StepStatus(
                id="sin",
                program=_text("Social Insurance Number"),
                organization=_text("ESDC"),
                level=Level.FEDERAL,
                system="esdc-sin",
                state=StepState.REJECTED,
                attempts=1,
                reference="SIN-REQ-77",
                message=_text("Parent SIN 046454286 does not match"),
                last_error=StepError(
                    kind="rejected", code="name_mismatch", message=_text("Marie Bélanger"), at=T0
                ),
                waiting_for="a reply about Marie Bélanger",
                exception=True,
                finished_at=T0 + timedelta(minutes=2),
            ),
            StepStatus(
                id="ccb",
                program=_text("Canada Child Benefit"),
                organization=_text("CRA"),
                level=Level.FEDERAL,
                system="cra-aba",
                state=StepState.FAILED,
                attempts=5,
                # A legacy system that put a number in its code: the record must not keep it.
                last_error=StepError(kind="rejected", code="sin_046454286", message=_text("x"), at=T0),
                exception=True,
                finished_at=T0 + timedelta(minutes=3),
            ),
        ],
        actions=[
            OperatorAction(
                step_id="ccb", action="fail", actor="Agent Tremblay", reason="called the mother", at=T0
            )
        ],
    )


def record(**changes: object) -> BundleRecord:
    made = record_from_status(
        status(), run_id="run-1", channel="api", closed_at=T0 + timedelta(minutes=5), closed_as="completed"
    )
    return made.model_copy(update=changes)


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("name_mismatch", "name_mismatch"),
        ("call_timed_out", "call_timed_out"),
        ("birth_notice_conflict", "birth_notice_conflict"),
        ("e2", "e2"),
        ("sin_046454286", UNRECOGNISED_CODE),
        ("Marie Bélanger", UNRECOGNISED_CODE),
        ("unexpected_ValueError", UNRECOGNISED_CODE),
        ("code with spaces", UNRECOGNISED_CODE),
        ("x" * 65, UNRECOGNISED_CODE),
        ("", UNRECOGNISED_CODE),
        (None, None),
    ],
)
def test_only_codes_of_the_safe_shape_are_kept(code: str | None, kept: str | None) -> None:
    assert safe_code(code) == kept


def test_a_record_keeps_states_and_codes_and_nothing_personal() -> None:
    made = record()

    assert made.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert made.channel == "api"
    assert made.received_at == T0
    assert [(s.id, s.system, s.state, s.attempts, s.reason_code, s.exception) for s in made.steps] == [
        ("registration", "on-registrar-births", StepState.DONE, 2, None, False),
        ("sin", "esdc-sin", StepState.REJECTED, 1, "name_mismatch", True),
        ("ccb", "cra-aba", StepState.FAILED, 5, UNRECOGNISED_CODE, True),
    ]
    dumped = made.model_dump_json()
    assert [value for value in PERSONAL if value in dumped] == []
    assert "SIN-REQ-77" not in dumped  # no reference at all, personal or not


def test_a_bundle_ended_from_outside_before_its_end_is_recorded_failed() -> None:
    running = status(BundleState.IN_PROGRESS)
    terminated = record_from_status(
        running, run_id="r", channel="kafka", closed_at=T0, closed_as="terminated"
    )
    withdrawn = record_from_status(
        status(BundleState.WITHDRAWN), run_id="r", channel="api", closed_at=T0, closed_as="canceled"
    )

    assert terminated.state is BundleState.FAILED
    assert terminated.closed_as == "terminated"
    assert withdrawn.state is BundleState.WITHDRAWN


async def test_the_store_round_trips_a_record(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "records" / "bundles.sqlite")
    made = record()

    await store.upsert(made)

    assert await store.get(TRACKING_ID) == made
    assert await store.get("00000000-0000-4000-8000-000000000000") is None
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_reader_kept_open_sees_what_another_process_wrote_since(tmp_path: Path) -> None:
    # Intake reads on every submission through a connection it keeps per thread; the sweeper (the
    # worker, another process) writes. Called synchronously so both reads use one thread's reader.
    path = tmp_path / "bundles.sqlite"
    reader, writer = SqliteRecordStore(path), SqliteRecordStore(path)
    writer._upsert(record(state=BundleState.IN_PROGRESS))
    assert reader._get(TRACKING_ID).state is BundleState.IN_PROGRESS  # type: ignore[union-attr]

    writer._upsert(record())
    assert reader._get(TRACKING_ID) == record()


async def test_removal_is_marked_once_and_survives_a_second_upsert_of_the_same_run(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "bundles.sqlite")
    await store.upsert(record())
    assert [r.tracking_id for r in await store.pending_removal(10)] == [TRACKING_ID]

    removed_at = T0 + timedelta(days=30)
    await store.mark_removed(TRACKING_ID, "run-1", removed_at)
    await store.mark_removed(TRACKING_ID, "run-1", removed_at + timedelta(hours=1))
    await store.upsert(record())  # a second sweep, racing the first, writes the same record

    kept = await store.get(TRACKING_ID)
    assert kept is not None
    assert kept.personal_data_removed_at == removed_at
    assert await store.pending_removal(10) == []


async def test_a_record_of_another_run_starts_without_a_removal(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "bundles.sqlite")
    await store.upsert(record())
    await store.mark_removed(TRACKING_ID, "run-1", T0)
    # Marking needs the run: a later run of the same id is not removed by the first's deletion.
    await store.mark_removed(TRACKING_ID, "run-2", T0)

    await store.upsert(record(run_id="run-2", state=BundleState.COMPLETED))

    kept = await store.get(TRACKING_ID)
    assert kept is not None
    assert (kept.run_id, kept.state, kept.personal_data_removed_at) == ("run-2", BundleState.COMPLETED, None)


def _bytes_under(directory: Path) -> bytes:
    """Every file's bytes: the database and its write-ahead log."""
    return b"".join(path.read_bytes() for path in directory.iterdir() if path.is_file())


async def test_the_file_holds_no_personal_data(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "bundles.sqlite")
    await store.upsert(record())
    await store.mark_removed(TRACKING_ID, "run-1", T0)

    raw = _bytes_under(tmp_path)
    assert TRACKING_ID.encode() in raw  # the scan reads what was written
    assert [value for value in PERSONAL if value.encode() in raw] == []


async def test_an_unreadable_store_says_so(tmp_path: Path) -> None:
    (tmp_path / "bundles.sqlite").write_bytes(b"not a database, just bytes" * 100)

    with pytest.raises(RecordStoreUnavailable):
        await SqliteRecordStore(tmp_path / "bundles.sqlite").get(TRACKING_ID)


def test_a_record_answers_in_the_shape_of_the_resident_status() -> None:
    removed_at = T0 + timedelta(days=30)
    public = PublicStatus.model_validate(public_record(record(personal_data_removed_at=removed_at)))

    assert public.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert public.updated_at == T0 + timedelta(minutes=5)
    assert [(s.id, s.state, s.reference, s.message) for s in public.steps] == [
        ("registration", StepState.DONE, None, None),
        ("sin", StepState.REJECTED, None, None),
        ("ccb", StepState.FAILED, None, None),
    ]
    answer = public_record(record(personal_data_removed_at=removed_at))
    assert answer["personal_data_removed_at"] == removed_at


def test_records_live_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(environment="test", data_dir=tmp_path)
    assert records_path(settings) == tmp_path / "records" / "bundles.sqlite"
