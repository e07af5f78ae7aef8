"""`tellonce streams` beside the integration stack: message-queue replies reach their bundles through it.

The streams role runs in-process with a consumer group, input topics and DLQs of its own (named
under a fresh prefix), reading only the replies topics of the systems asked for. A new group
starts at the beginning of those topics, so it also reads replies earlier tests left there; their
bundles are gone, and they land in this run's own DLQ, which nobody else reads.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from temporalio.client import Client

from infra.settings import Settings
from infra.streams.app import Streams
from infra.streams.topics import ensure_topics, names_under


@asynccontextmanager
async def reply_streams(client: Client, kafka_target: str, systems: Iterable[str]) -> AsyncIterator[Settings]:
    """Run `tellonce streams` for the replies of `systems`; yields its settings (its DLQ topic)."""
    systems = tuple(systems)
    name = f"replies-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        environment="test",
        temporal_namespace=client.namespace,
        kafka_bootstrap=kafka_target,
        kafka_idempotent_producer=False,
        **{**names_under(name), "kafka_legacy_reply_systems": systems},
    )
    await ensure_topics(settings, systems=systems)
    async with Streams(settings, client=client).running():
        yield settings


async def records_with_key(
    settings: Settings, topic: str, key: str, expected: int = 1, within: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of `topic` with key `key`, once at least `expected` are there (read without a group)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_target,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=500,  # the topic may appear after the consumer started
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(within):
            while len(found) < expected:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [record for record in records if record.key == key.encode()]
    finally:
        await consumer.stop()
    return found


def raw_bytes(records: Iterable[ConsumerRecord[bytes, bytes]]) -> bytes:
    """Everything a broker operator sees of some records: keys, values and header names and values."""
    return b"".join(
        (r.key or b"")
        + (r.value or b"")
        + b"".join(name.encode() + (value or b"") for name, value in r.headers)
        for r in records
    )
