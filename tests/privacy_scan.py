"""Look for the example residents' personal data in raw bytes: Temporal histories, Kafka topics, files.

The markers are the values of the example submissions (examples/), in the spellings they can
take once serialized: spaced and bare numbers, UTF-8 and JSON-escaped accents.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from temporalio.api.history.v1 import History
from temporalio.client import Client

_VALUES: dict[str, list[str]] = {
    "SIN": ["123 456 782", "123456782", "135 792 463", "135792463"],
    "health number": ["0987-654-324-AB", "0987654324", "4532-017-888", "4532017888"],
    "driver's licence": ["T6512-34568-80412", "T65123456880412"],
    "name": ["Bélanger", "O'Neil", "Tremblay", "Zoë-Chloé", "Marie-Ève", "Amélie"],
    "date of birth": ["1992-03-14", "1988-04-12", "1990-07-02"],
    "street": ["100 Example Street", "250 Example Crescent", "77 Sample Lane"],
    "email": ["marie-eve.belanger@example.ca", "amelie.tremblay@example.ca"],
    "phone": ["(613) 555-0123", "613-555-0142"],
}


def spellings(value: str) -> set[bytes]:
    """A value's bytes as it can appear once serialized: UTF-8, JSON-escaped, cp1252."""
    escaped = json.dumps(value)[1:-1]  # "Bélanger" -> "B\\u00e9langer"
    return {value.encode(), escaped.encode(), value.encode("cp1252", errors="ignore")}


MARKERS: list[tuple[str, bytes]] = sorted(
    {
        (kind, spelling)
        for kind, values in _VALUES.items()
        for value in values
        for spelling in spellings(value)
    },
)
"""(kind, bytes) pairs; a hit names the kind and the place, never the value."""


def hits(data: bytes, place: str) -> list[str]:
    """`place: kind` for each marker kind found in the bytes."""
    kinds = sorted({kind for kind, marker in MARKERS if marker in data})
    return [f"{place}: {kind}" for kind in kinds]


def scan_files(root: Path, *, skip: Iterable[str] = ("sandbox",)) -> list[str]:
    """Hits in every file under a directory, except the top-level folders named in `skip`."""
    skipped = set(skip)
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in skipped or not path.is_file():
            continue
        found += hits(path.read_bytes(), str(relative))
    return found


async def temporal_histories(client: Client) -> dict[str, bytes]:
    """Every workflow's history in the namespace, as the server stores it (no codec runs)."""
    histories: dict[str, bytes] = {}
    async for execution in client.list_workflows():
        fetched = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        histories[f"{execution.workflow_type} {execution.id}"] = History(
            events=fetched.events
        ).SerializeToString()
    return histories


async def kafka_topics(bootstrap: str, *, quiet_rounds: int = 3) -> dict[str, bytes]:
    """Every record (key, value and headers) of every topic, concatenated per topic.

    Reads until a few polls in a row bring nothing: the dev broker's end offsets count record
    batches rather than records, so they cannot say when a topic has been read to its end.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        topics = sorted(await consumer.topics())
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        contents: dict[str, bytearray] = {topic: bytearray() for topic in topics}
        empty = 0
        while empty < quiet_rounds:
            batch = await consumer.getmany(timeout_ms=500)
            if not any(batch.values()):
                empty += 1
                continue
            empty = 0
            for tp, records in batch.items():
                for record in records:
                    contents[tp.topic] += (record.key or b"") + (record.value or b"")
                    for name, value in record.headers:
                        contents[tp.topic] += name.encode() + value
        return {topic: bytes(data) for topic, data in contents.items()}
    finally:
        await asyncio.shield(consumer.stop())
