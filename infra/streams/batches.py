"""One batch at a time: handle every record, then commit; on an unexpected error, rewind.

The subscribers use `AckPolicy.MANUAL`, so FastStream commits nothing by itself: not on
receipt (the ACK_FIRST trap) and not after an exception (which `AckPolicy.ACK` would do).
A record's handler returns only once its effect is durable (a started bundle, a delivered
signal, an acknowledged dead letter), so committing after the whole batch loses nothing, and
a crash before the commit only makes Kafka deliver the batch again, which the handlers
tolerate: bundles start by id, dead letters carry their original position.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from faststream.kafka.message import KafkaMessage

from infra.streams.records import Record
from infra.streams.retry import error_fields

log = structlog.get_logger("tellonce.streams")

Handler = Callable[[Record], Awaitable[None]]

REWIND_PAUSE = 5.0
"""Seconds to wait before a rewound batch is fetched again, so a bug does not spin the CPU."""


def ordered_groups(records: Sequence[Record]) -> list[list[Record]]:
    """Records that must keep their order: one group per partition and key, in offset order.

    Two replies to one request, or a submission sent twice, stay in sequence; different keys
    run side by side. Keyless records of a partition stay in order with each other.
    """
    groups: dict[tuple[int, bytes | None], list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        groups[(record.partition, record.key)].append(record)
    return list(groups.values())


async def handle_all(records: Sequence[Record], handle: Handler, concurrency: int) -> None:
    """Handle records concurrently (at most `concurrency` at once), each key group in order."""
    slots = asyncio.Semaphore(concurrency)

    async def run(group: list[Record]) -> None:
        for record in group:
            async with slots:
                await handle(record)

    async with asyncio.TaskGroup() as tasks:
        for group in ordered_groups(records):
            tasks.create_task(run(group))


async def consume_batch(message: KafkaMessage, handle: Handler, *, concurrency: int, what: str) -> None:
    """Handle one FastStream batch, then commit its offsets; rewind it if anything failed."""
    raw: tuple[Any, ...] = message.raw_message
    records = [Record.from_consumer(r) for r in raw]
    if not records:
        return
    try:
        await handle_all(records, handle, concurrency)
    except Exception as exc:
        # Handlers retry transient failures themselves, so this is a bug: seek back to the
        # batch's first offsets so nothing is skipped, and let the next fetch try again.
        log.error("streams.batch_failed", consumer=what, size=len(records), **error_fields(exc))
        await message.nack()
        await asyncio.sleep(REWIND_PAUSE)
        return
    try:
        await message.ack()
    except KafkaError as exc:
        # A rebalance took the partitions: their new owner receives the batch again, and
        # handling it twice is harmless.
        log.warning("streams.commit_failed", consumer=what, size=len(records), **error_fields(exc))
        return
    log.debug("streams.batch_committed", consumer=what, size=len(records))
