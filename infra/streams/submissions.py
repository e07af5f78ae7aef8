"""Partner submissions from `tellonce.submissions`: open, validate, start the bundle once, or dead-letter.

The bundle's tracking id is a UUIDv5 of the sender's submission id under a fixed tellonce
namespace, so the same envelope always maps to the same bundle, and no partner can pick an
id that collides with one the HTTP API handed out (those are random or keyed UUIDv4s).
With a keyring the envelope's `submission` must be sealed (`infra.streams.sealing`): one in
the clear is dead-lettered `not_encrypted`, one that does not open `undecryptable`.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio.service import RPCError

from bundles.submissions import SubmissionInvalid
from infra.crypto import Keyring
from infra.intake import IdempotencyConflict, Intake
from infra.streams.decoding import (
    Unreadable,
    read_json_object,
    reason,
    rejected_reason,
    safe_dotted_path,
    validation_reasons,
)
from infra.streams.dlq import DeadLetters
from infra.streams.models import SUPPORTED_SUBMISSION_SCHEMAS, SubmissionEnvelope
from infra.streams.records import Record
from infra.streams.retry import rejected_by_temporal, until_done
from infra.streams.sealing import open_submission

log = structlog.get_logger("tellonce.streams")

KAFKA_ID_NAMESPACE = uuid.UUID("70b9d6d1-85b0-409c-80f2-a3e612e0935d")
"""Fixed forever: changing it would let every Kafka submission start a second bundle."""


def tracking_id_for(submission_id: uuid.UUID) -> str:
    """The tracking id (workflow id) of a Kafka submission: uuid5 over `kafka:<canonical uuid>`."""
    return str(uuid.uuid5(KAFKA_ID_NAMESPACE, f"kafka:{submission_id}"))


def read_envelope(record: Record) -> SubmissionEnvelope:
    """The record's envelope, checked: schema version, fields, and key = submission id.

    Its `submission` is not opened here (`infra.streams.sealing.open_submission` does that).

    Raises:
        Unreadable: with the reasons the record goes to the DLQ.
    """
    data = read_json_object(record.value)
    schema = data.get("schema")
    if isinstance(schema, str) and schema not in SUPPORTED_SUBMISSION_SCHEMAS:
        supported = ", ".join(sorted(SUPPORTED_SUBMISSION_SCHEMAS))
        raise Unreadable([reason("unknown_schema", f"Supported schema versions: {supported}.", "schema")])
    try:
        envelope = SubmissionEnvelope.model_validate(data)
    except ValidationError as exc:
        raise Unreadable(validation_reasons(exc, "envelope_invalid")) from None
    if record.key is not None and _key_uuid(record.key) != envelope.submission_id:
        raise Unreadable([reason("key_mismatch", "The record key must be the submission id.", "key")])
    return envelope


def _key_uuid(key: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(key.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, SubmissionInvalid | IdempotencyConflict)


class SubmissionConsumer:
    """Handles one submission record at a time (the batch machinery runs many at once).

    Args:
        intake: Validates and starts bundles.
        dead_letters: Where refused records go.
        dlq_topic: The submissions DLQ.
        keyring: Opens sealed submissions; None accepts cleartext ones only (encryption off).
    """

    def __init__(
        self, intake: Intake, dead_letters: DeadLetters, dlq_topic: str, *, keyring: Keyring | None
    ) -> None:
        self.intake = intake
        self.dead_letters = dead_letters
        self.dlq_topic = dlq_topic
        self.keyring = keyring

    async def handle(self, record: Record) -> None:
        """Start the record's bundle, or dead-letter the record; return once either is durable."""
        try:
            envelope = read_envelope(record)
            submission = open_submission(envelope, self.keyring)
            await self.start(record, envelope, submission)
        except Unreadable as exc:
            await self.dead_letters.send(record, exc.reasons, self.dlq_topic)

    async def start(self, record: Record, envelope: SubmissionEnvelope, submission: dict[str, Any]) -> None:
        """Start (or find already started) the envelope's bundle with its opened submission.

        Raises:
            Unreadable: unknown bundle, invalid submission, a submission id reused with other
                content, or a start Temporal refuses (`rejected_by_temporal`).
        """
        if envelope.bundle_id not in self.intake.catalogue:
            raise Unreadable(
                [reason("unknown_bundle", "No bundle with this id in the catalogue.", "bundle_id")]
            )
        tracking_id = tracking_id_for(envelope.submission_id)
        where: dict[str, Any] = {**record.where, "tracking_id": tracking_id}

        async def attempt() -> None:
            await self.intake.submit(
                envelope.bundle_id,
                submission,
                channel="kafka",
                submission_id=tracking_id,
                external_id=str(envelope.submission_id),
            )

        try:
            # Intake's own `submission.accepted` line is the record's one line, with the record's
            # place bound here: a second line would add ~0.1 ms of rendering and redaction per
            # record on the 2-core dev machine and say nothing new.
            with structlog.contextvars.bound_contextvars(**where, sender=envelope.channel):
                await until_done(attempt, what="start_bundle", permanent=_permanent, where=where)
        except SubmissionInvalid as exc:
            raise Unreadable(
                [
                    reason(
                        e.code,
                        e.message.en,
                        f"submission.{safe_dotted_path(e.path)}" if e.path else "submission",
                    )
                    for e in exc.errors
                ]
            ) from None
        except IdempotencyConflict:
            raise Unreadable(
                [
                    reason(
                        "submission_id_reused",
                        "This submission id was used before with other content.",
                        "submission_id",
                    )
                ]
            ) from None
        except RPCError as exc:
            if not rejected_by_temporal(exc):
                raise
            raise Unreadable([rejected_reason(exc)]) from None
