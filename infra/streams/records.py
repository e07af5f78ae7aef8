"""Kafka records as the streams role sees them: raw bytes, key, headers and position, untouched.

FastStream's own parser decodes every header value as UTF-8 and its decoder parses JSON; one
odd record would then fail the whole batch before our handler sees it. The parser and decoder
here never fail, so a bad record always reaches a handler and, from there, a dead-letter queue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from faststream.message import StreamMessage

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Record:
    """One consumed record: what the sender wrote, and where it sits in the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int

    @classmethod
    def from_consumer(cls, record: ConsumerRecord[Any, Any]) -> Record:
        """Copy an aiokafka record (key and value are raw bytes: no deserializers are configured)."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple((name, value if value is not None else b"") for name, value in record.headers),
            timestamp=record.timestamp,
        )

    @property
    def where(self) -> dict[str, Any]:
        """Fields that locate the record in logs (never its content)."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def header(self, name: str) -> bytes | None:
        """The last value of a header, or None."""
        found = [value for key, value in self.headers if key == name]
        return found[-1] if found else None


def _parseable(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    """A copy FastStream's parser can read: header values it cannot decode become empty."""
    return dataclasses.replace(
        record, headers=[(name, _text_or_empty(value)) for name, value in record.headers]
    )


def _text_or_empty(value: bytes | None) -> bytes:
    try:
        (value or b"").decode()
    except UnicodeDecodeError:
        return b""
    return value or b""


OriginalParser = Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[StreamMessage[Any]]]


async def tolerant_batch_parser(
    records: tuple[ConsumerRecord[Any, Any], ...], original: OriginalParser
) -> StreamMessage[Any]:
    """FastStream's batch parser on sanitised copies, keeping the original records as `raw_message`."""
    message = await original(tuple(_parseable(record) for record in records))
    message.raw_message = records
    return message


def no_body(message: StreamMessage[Any]) -> list[Any]:
    """A decoder that decodes nothing: handlers read `Record`s from the message, never its body."""
    return []
