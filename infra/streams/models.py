"""The messages the streams role reads and writes, as pydantic models (also their AsyncAPI schemas).

None of these models is ever logged: the envelope carries a resident's whole submission. Where
a deployment has a keyring, personal data travels sealed (`infra.streams.sealing`): the models
of the sealed forms (`Sealed*`) keep only routing fields readable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from bundles.models import LocalizedText
from bundles.notices import NOTICE_ID_PATTERN, BirthNotice, NoticeFacility

SUBMISSION_SCHEMA_V1 = "tellonce.submission/v1"
SUPPORTED_SUBMISSION_SCHEMAS = frozenset({SUBMISSION_SCHEMA_V1})

SENDER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A sender names a system, never a person: a short identifier, so it is safe to log."""

SEALED_PATTERN = r"^tlc1\.[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]+$"
"""A sealed value: `tlc1.<key id>.<base64url(nonce || ciphertext || tag)>` (`infra.crypto.Keyring.seal`)."""
SEALED_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": SEALED_PATTERN,
    "description": "Sealed (AES-256-GCM, see docs/streams.md): `tlc1.<key id>.<base64url data>`.",
    "examples": ["tlc1.k20260101-3fa2c1.q7Yc4mJw0Xb9Vn1sPbT4xZ0u8eHkA3dL6GfR2wNc5yQ"],
}
SealedText = Annotated[str, StringConstraints(pattern=SEALED_PATTERN), WithJsonSchema(SEALED_SCHEMA)]
"""A sealed value in a message model."""


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
    # Any: `infra.streams.submissions` decides between the two forms itself, so a value of the
    # wrong form gets one clear reason (`not_encrypted`) instead of one per member of a union.
    submission: Annotated[
        Any, WithJsonSchema({"anyOf": [SEALED_SCHEMA, {"type": "object", "additionalProperties": True}]})
    ] = Field(
        description="The bundle's submission (the body `POST /api/v1/bundles/{bundle_id}/submissions` "
        "takes) as UTF-8 JSON, sealed for the purpose `tellonce.submission/v1:<submission_id>:"
        "<bundle_id>:<channel>`. A JSON object in the clear only where encryption is off (never in "
        "production); otherwise such a record is dead-lettered `not_encrypted`."
    )


class SealedLegacyReply(BaseModel):
    """One record of `legacy.<system>.replies` where encryption is on: the answer itself sealed.

    The sealed value is the UTF-8 JSON of the answer's other fields (`outcome`, `reference`,
    `code`, `message`, as in `LegacyReplyMessage`), sealed for the purpose
    `tellonce.legacy-reply/v1:<system>:<correlation_id>`.
    """

    model_config = ConfigDict(extra="ignore", title="SealedLegacyReply")

    correlation_id: str = Field(
        min_length=1,
        max_length=512,
        description="The idempotency key the request carried: `<tracking id>:<step>:<operation>[:r<n>]`.",
    )
    reply: SealedText


class LegacyReplyMessage(BaseModel):
    """One record of `legacy.<system>.replies` in the clear, where encryption is off (never in production)."""

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


class LegacyRequestMessage(BaseModel):
    """One record of `legacy.<system>.requests` (written by the worker's message-queue adapters).

    Key and `correlation-id` header: the call's idempotency key; headers `reply-to`,
    `content-type`, `message-type` (`<system>.<operation>`) and `message-id` carry no personal data.
    """

    model_config = ConfigDict(extra="forbid", title="LegacyRequestMessage")

    fields: Annotated[
        Any, WithJsonSchema({"anyOf": [SEALED_SCHEMA, {"type": "object", "additionalProperties": True}]})
    ] = Field(
        description="The system's own request fields as UTF-8 JSON, sealed for the purpose "
        "`tellonce.legacy-request/v1:<system>:<correlation id>`; a JSON object in the clear only "
        "where encryption is off."
    )


class SealedBirthNotice(BaseModel):
    """A Notice of Live Birth where encryption is on: who sent it in the clear, the birth sealed.

    `personal` is the UTF-8 JSON object `{"issued_at", "child", "birth_parent"}` of a
    `BirthNotice`, sealed for the purpose `tellonce.birth-notice/v1:<notice_id>:<facility.id>`.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="SealedBirthNotice")

    schema_: Literal["tellonce.birth-notice/v1"] = Field(alias="schema")
    notice_id: Annotated[str, StringConstraints(pattern=NOTICE_ID_PATTERN)] = Field(
        description="The hospital's notice number; not personal data."
    )
    facility: NoticeFacility
    personal: SealedText


BirthNoticeRecord = SealedBirthNotice | BirthNotice
"""What `vital-events.birth-notices` carries: sealed, or in the clear where encryption is off."""
LegacyReplyRecord = SealedLegacyReply | LegacyReplyMessage
"""What `legacy.<system>.replies` carries: sealed, or in the clear where encryption is off."""


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

    On the wire the key and headers are the original record's, byte for byte, and so is the
    value where encryption is off; with a keyring the value is the original value sealed (so a
    dead letter never shows personal data in the clear, even when its record was refused for
    sending it unsealed). The `tellonce-dlq-*` headers are added (see `infra.streams.dlq`). This
    model describes those headers; the payload itself is the original record's.
    """

    model_config = ConfigDict(title="DeadLetter", populate_by_name=True)

    tellonce_dlq_reasons: list[DlqReason] = Field(
        alias="tellonce-dlq-reasons", description="Header: JSON list of reasons."
    )
    tellonce_dlq_topic: str = Field(alias="tellonce-dlq-topic", description="Header: the original topic.")
    tellonce_dlq_partition: int = Field(alias="tellonce-dlq-partition", description="Header: its partition.")
    tellonce_dlq_offset: int = Field(alias="tellonce-dlq-offset", description="Header: its offset.")
    tellonce_dlq_at: str = Field(alias="tellonce-dlq-at", description="Header: when (UTC, ISO 8601).")
    tellonce_dlq_sealed: str | None = Field(
        default=None,
        alias="tellonce-dlq-sealed",
        description="Header: the key id, when the value is the original value sealed in binary form "
        "(nonce, ciphertext, tag) for the purpose `tellonce.dead-letter/v1:<original topic>:<partition>:"
        "<offset>`; absent when it is the original.",
    )
    tellonce_dlq_not_kept: str | None = Field(
        default=None,
        alias="tellonce-dlq-not-kept",
        description="Header: `value,headers` when the broker refused the dead letter as too large and "
        "it was written without the original value and headers (reason `dead_letter_too_large`).",
    )
