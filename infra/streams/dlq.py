"""Dead-letter queues: the original record, plus `tellonce-dlq-*` headers.

A DLQ record keeps the original key and headers, and the original value, so it can be replayed
unchanged after a fix (`tellonce streams replay-dlq`). With a keyring the value is kept sealed:
a record refused because it carried personal data in the clear (or one whose sealed part did
not open, or any record whose reasons cannot tell) must not leave that data readable in the DLQ.
It is sealed in binary form (nonce, ciphertext, tag: 28 bytes more than the original, where the
text form would add a third), so what fitted on its topic fits in the DLQ. The added headers
say why and where it came from:

- `tellonce-dlq-reasons`: JSON list of `{code, path, message}` (no submitted values, ever), at
  most `MAX_REASONS` of them
- `tellonce-dlq-topic`, `tellonce-dlq-partition`, `tellonce-dlq-offset`: the original position
- `tellonce-dlq-at`: when it was dead-lettered (UTC, ISO 8601)
- `tellonce-dlq-sealed`: the key id, when the value is the original value sealed for the purpose
  `tellonce.dead-letter/v1:<topic>:<partition>:<offset>` (the original position)
- `tellonce-dlq-not-kept: value,headers`: the broker refused the dead letter as too large, so it
  was written without the original value and headers (reason `dead_letter_too_large`); the
  original is still on its topic at that position, for as long as the topic keeps it

A dead letter the broker refuses for its size would otherwise be retried forever and hold its
partition back: it is the one DLQ write failure that is not retried.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from faststream.kafka.security import parse_security

from infra.crypto import Keyring, KeyringError
from infra.kafka import bootstrap_servers, security
from infra.settings import Settings
from infra.streams.models import DlqReason
from infra.streams.records import Headers, Record
from infra.streams.retry import until_done
from infra.streams.sealing import dead_letter_associated_data

log = structlog.get_logger("tellonce.streams")

DLQ_HEADER_PREFIX = "tellonce-dlq-"
H_REASONS = "tellonce-dlq-reasons"
H_TOPIC = "tellonce-dlq-topic"
H_PARTITION = "tellonce-dlq-partition"
H_OFFSET = "tellonce-dlq-offset"
H_AT = "tellonce-dlq-at"
H_SEALED = "tellonce-dlq-sealed"
H_NOT_KEPT = "tellonce-dlq-not-kept"
MAX_REASONS = 100
"""Reasons listed in a dead letter's header at most (a record can have one per unknown field)."""
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
H_REPLAYED_FROM = "tellonce-replayed-from"
"""Added by replay: `<dlq topic>/<partition>/<offset>` of the DLQ record it came from."""


def raw_producer(settings: Settings) -> AIOKafkaProducer:
    """An aiokafka producer with the deployment's bootstrap servers, TLS and SASL.

    FastStream's publisher sends headers as text; a dead letter must keep the original header
    bytes, so DLQ writes and replays use aiokafka directly. `acks="all"`: a write counts only
    once every in-sync replica has it, which is what lets us commit the source offset after.
    It is not an idempotent producer: Tansu (the dev broker) refuses InitProducerId, and a
    duplicate dead letter is harmless (a replayed submission starts its bundle once).
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=f"{settings.kafka_client_id}-streams",
        acks="all",
        enable_idempotence=False,
        **parse_security(security(settings)),
    )


def without_dlq_headers(headers: Headers) -> Headers:
    """The headers minus tellonce's DLQ and replay bookkeeping."""
    return tuple(
        (name, value)
        for name, value in headers
        if not name.startswith(DLQ_HEADER_PREFIX) and name != H_REPLAYED_FROM
    )


def bounded(reasons: list[DlqReason]) -> list[DlqReason]:
    """At most `MAX_REASONS` reasons: the first ones, then one saying how many more there were."""
    if len(reasons) <= MAX_REASONS:
        return reasons
    more = len(reasons) - (MAX_REASONS - 1)
    return [
        *reasons[: MAX_REASONS - 1],
        DlqReason(code="more_reasons", path="", message=f"{more} more reasons are not listed."),
    ]


def dlq_headers(
    record: Record, reasons: list[DlqReason], at: datetime, sealed_with: str | None = None
) -> Headers:
    """The original headers followed by the DLQ headers (`tellonce-dlq-sealed` when sealed)."""
    encoded = json.dumps([reason.model_dump() for reason in bounded(reasons)], ensure_ascii=False)
    return (
        *without_dlq_headers(record.headers),
        (H_REASONS, encoded.encode()),
        (H_TOPIC, record.topic.encode()),
        (H_PARTITION, str(record.partition).encode()),
        (H_OFFSET, str(record.offset).encode()),
        (H_AT, at.isoformat().encode()),
        *(((H_SEALED, sealed_with.encode()),) if sealed_with else ()),
    )


def sealed_value(keyring: Keyring, record: Record) -> bytes | None:
    """The record's value sealed for its position, in binary form, with the keyring's active key.

    An absent value stays absent (it hides nothing).
    """
    if record.value is None:
        return None
    aad = dead_letter_associated_data(keyring.active_kid, record.topic, record.partition, record.offset)
    _, blob = keyring.encrypt(record.value, aad)
    return blob


@dataclass(frozen=True)
class DeadLetterInfo:
    """What the DLQ headers of a dead letter say."""

    topic: str
    partition: int
    offset: int
    reasons: list[DlqReason]
    sealed_with: str | None = None
    """The key id that sealed the value, or None when the value is the original."""
    kept: bool = True
    """False when the original value and headers were too large to keep (`tellonce-dlq-not-kept`)."""

    @classmethod
    def of(cls, record: Record) -> DeadLetterInfo | None:
        """Read the DLQ headers of a record; None when it is not a tellonce dead letter."""
        topic, partition, offset = (record.header(h) for h in (H_TOPIC, H_PARTITION, H_OFFSET))
        if topic is None or partition is None or offset is None:
            return None
        try:
            reasons = [DlqReason.model_validate(r) for r in json.loads(record.header(H_REASONS) or b"[]")]
            sealed_with = record.header(H_SEALED)
            return cls(
                topic.decode(),
                int(partition),
                int(offset),
                reasons,
                sealed_with.decode() if sealed_with is not None else None,
                kept=record.header(H_NOT_KEPT) is None,
            )
        except ValueError:
            return None

    def original_value(self, record: Record, keyring: Keyring | None) -> bytes | None:
        """The value the original record had: the dead letter's value, opened when it is sealed.

        Raises:
            infra.crypto.KeyringError: sealed, and no keyring (or not its key) to open it.
        """
        if self.sealed_with is None or record.value is None:
            return record.value
        if keyring is None:
            raise KeyringError("this dead letter is sealed and encryption is off: no key to open it")
        aad = dead_letter_associated_data(self.sealed_with, self.topic, self.partition, self.offset)
        return keyring.decrypt(self.sealed_with, record.value, aad)


class DeadLetters:
    """Writes dead letters (sealed with a keyring) and waits for the broker to acknowledge each one.

    Args:
        producer: A started aiokafka producer (`raw_producer`).
        keyring: Seals each dead letter's value; None keeps values as they were (encryption off).
    """

    def __init__(self, producer: AIOKafkaProducer, keyring: Keyring | None) -> None:
        self.producer = producer
        self.keyring = keyring

    async def send(self, record: Record, reasons: list[DlqReason], dlq_topic: str) -> None:
        """Dead-letter one record; returns once the DLQ write is acknowledged (retrying until it is).

        A dead letter the broker refuses as too large is written again without the original
        value and headers, so the partition moves on.
        """
        at = datetime.now(UTC)
        value, sealed_with = record.value, None
        if self.keyring is not None and record.value is not None:
            value, sealed_with = sealed_value(self.keyring, record), self.keyring.active_kid
        headers = list(dlq_headers(record, reasons, at, sealed_with))
        try:
            await self._write(dlq_topic, record, value, headers, permanent=TOO_LARGE)
        except TOO_LARGE:
            log.warning("streams.dead_letter_too_large", dlq=dlq_topic, **record.where)
            too_large = DlqReason(
                code="dead_letter_too_large",
                path="",
                message="Too large for the dead-letter queue: its value and headers are not kept here; "
                "the original is at its position on its topic while the topic keeps it.",
            )
            bare = dataclasses.replace(record, value=None, headers=())
            headers = [*dlq_headers(bare, [*bounded(reasons)[: MAX_REASONS - 1], too_large], at)]
            await self._write(dlq_topic, record, None, [*headers, (H_NOT_KEPT, b"value,headers")])
        log.warning(
            "streams.dead_lettered",
            dlq=dlq_topic,
            codes=sorted({reason.code for reason in reasons}),
            **record.where,
        )

    async def _write(
        self,
        dlq_topic: str,
        record: Record,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        permanent: tuple[type[Exception], ...] = (),
    ) -> None:
        async def attempt() -> None:
            await self.producer.send_and_wait(dlq_topic, value, key=record.key, headers=headers)

        await until_done(
            attempt,
            what="dlq_publish",
            permanent=lambda exc: isinstance(exc, permanent),
            where=record.where,
        )
