"""The messages the streams role reads and writes, as pydantic models (also their AsyncAPI schemas).

None of these models is ever logged: the envelope carries a resident's whole submission.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from bundles.models import LocalizedText

SUBMISSION_SCHEMA_V1 = "tellonce.submission/v1"
SUPPORTED_SUBMISSION_SCHEMAS = frozenset({SUBMISSION_SCHEMA_V1})

SENDER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A sender names a system, never a person: a short identifier, so it is safe to log."""


class SubmissionEnvelope(BaseModel):
    """One record of `tellonce.submissions`; its Kafka key is the submission id.

    The bundle's tracking id is derived from `submission_id` (see `infra.streams.submissions`),
    so a partner's id can never collide with an id the HTTP API handed out.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="SubmissionEnvelope")

    schema_: Literal["tellonce.submission/v1"] = Field(
        alias="schema", description="Version of this envelope."
    )
    submission_id: UUID = Field(
        description="The sender's own id of this submission; sending it again is safe."
    )
    bundle_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$", examples=["newborn-on"]
    )
    channel: str = Field(
        pattern=SENDER_PATTERN,
        description="Who sent it (a partner system's short name, e.g. `hospital-intake`).",
    )
    submission: dict[str, Any] = Field(
        description="The bundle's submission: the body `POST /api/v1/bundles/{bundle_id}/submissions` takes."
    )


class LegacyReplyMessage(BaseModel):
    """One record of `legacy.<system>.replies`: a legacy system's answer to one step's request."""

    model_config = ConfigDict(extra="ignore", title="LegacyReplyMessage")

    correlation_id: str = Field(
        min_length=1,
        max_length=512,
        description="The idempotency key the request carried: `<tracking id>:<step>:<operation>[:r<n>]`.",
    )
    outcome: Literal["accepted", "rejected", "needs_attention"]
    reference: str | None = Field(default=None, max_length=200, description="The system's reference.")
    code: str | None = Field(default=None, max_length=100, description="The system's reason code.")
    message: LocalizedText | None = None


class DlqReason(BaseModel):
    """Why a record was dead-lettered. Codes and paths only: never a submitted value."""

    model_config = ConfigDict(frozen=True, title="DlqReason")

    code: str = Field(description="Stable code, e.g. `malformed_json`, `unknown_bundle`, `sin_checksum`.")
    path: str = Field(
        default="", description="Dotted path of the field at fault; empty for the whole record."
    )
    message: str = Field(description="What is wrong, for the operator (English); never repeats a value.")


class DeadLetter(BaseModel):
    """A dead-lettered record, as the AsyncAPI document shows it.

    On the wire the value, key and headers are the original record's, byte for byte; the
    `tellonce-dlq-*` headers are added (see `infra.streams.dlq`). This model describes those
    headers; the payload itself is whatever the original record held.
    """

    model_config = ConfigDict(title="DeadLetter", populate_by_name=True)

    tellonce_dlq_reasons: list[DlqReason] = Field(
        alias="tellonce-dlq-reasons", description="Header: JSON list of reasons."
    )
    tellonce_dlq_topic: str = Field(alias="tellonce-dlq-topic", description="Header: the original topic.")
    tellonce_dlq_partition: int = Field(alias="tellonce-dlq-partition", description="Header: its partition.")
    tellonce_dlq_offset: int = Field(alias="tellonce-dlq-offset", description="Header: its offset.")
    tellonce_dlq_at: str = Field(alias="tellonce-dlq-at", description="Header: when (UTC, ISO 8601).")
