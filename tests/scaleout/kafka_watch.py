"""Watching streams processes consume: their logs as they are written, the group's offsets.

The scale-out run kills a streams process in the middle of a batch. Two views tell when that
is and prove it afterwards: the process's own `submission.accepted` lines (one per record
handled, with the record's partition and offset) read as they are written, and the consumer
group's committed offsets read from the broker right after the kill.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.settings import Settings
from tests.chaos.stack import ChaosStack

Position = tuple[int, int]
"""A record's place in the submissions topic: (partition, offset)."""

_PARTITION = re.compile(r"partition=(\d+)")


class LogTail:
    """A process's JSON log lines, read from where the previous read stopped.

    Only whole lines are returned: a line the process is still writing waits for the next read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = path.stat().st_size if path.exists() else 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The entries written since the last read (lines that are not JSON objects skipped)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.position)
                data = log.read()
        except FileNotFoundError:
            return []
        self.position += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        entries: list[dict[str, Any]] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def started_records(entries: Iterable[dict[str, Any]], topic: str) -> set[Position]:
    """The records of `topic` a streams process handled: its `submission.accepted` lines.

    A record whose bundle was already started logs the same line, so a redelivered record counts
    for every process that handled it.
    """
    return {
        (int(e["partition"]), int(e["offset"]))
        for e in entries
        if e.get("event") == "submission.accepted" and e.get("topic") == topic
    }


def assignment(stack: ChaosStack, name: str) -> set[int] | None:
    """The submissions partitions a streams process holds now, per its log; None between a
    revocation and the next assignment (a rebalance), or before the first."""
    group = stack.settings.kafka_consumer_group
    topic = stack.settings.kafka_topic_submissions
    held: set[int] | None = None
    for entry in _all_entries(stack.log_path(name)):
        event = str(entry.get("event", ""))
        if not event.endswith(f" for group {group}"):
            continue
        if event.startswith("Revoking previously assigned partitions"):
            held = None
        elif event.startswith("Setting newly assigned partitions"):
            held = {int(p) for p in _PARTITION.findall(event)} if f"topic='{topic}'" in event else set()
    return held


def _all_entries(path: Path) -> list[dict[str, Any]]:
    tail = LogTail(path)
    tail.position = 0
    return tail.read()


async def wait_group_settled(
    stack: ChaosStack, names: Iterable[str], *, timeout: float = 60.0
) -> dict[str, set[int]]:
    """Wait until every named streams process holds submissions partitions, none shared, all held.

    The group rebalances as each member joins; records sent before it settles would be handled
    by whoever holds their partition at that moment, so a kill could not be aimed.
    """
    names = list(names)
    partitions = set(range(stack.settings.kafka_partitions))
    deadline = time.monotonic() + timeout
    while True:
        held = {name: assignment(stack, name) for name in names}
        owned = [p for parts in held.values() if parts for p in parts]
        if all(held.values()) and sorted(owned) == sorted(partitions):
            return {name: parts for name, parts in held.items() if parts}
        if time.monotonic() > deadline:
            raise AssertionError(f"the streams group did not settle in {timeout:.0f}s: {held}")
        await asyncio.sleep(0.2)


@dataclass
class MidBatchKill:
    """What a streams process had done when it was SIGKILLed, and the group's offsets just after."""

    name: str
    partitions: set[int]
    started: set[Position]
    """Records it logged as handled (bundle started, or found started) before it died."""
    committed: dict[int, int]
    """The group's committed offset of each of its partitions right after the kill (0 if none)."""
    ends: dict[int, int]
    """The end of each of its partitions right after the kill."""
    seconds_to_kill: float
    """From seeing an uncommitted start to the process's death (SIGKILL and wait)."""
    handled_again: set[Position] = field(default_factory=set)
    """Filled in at the end: uncommitted records of its partitions that another process handled."""

    @property
    def uncommitted(self) -> set[Position]:
        """Every record of its partitions past the committed offset: in flight or not yet fetched."""
        return {(p, o) for p in self.partitions for o in range(self.committed[p], self.ends[p])}

    @property
    def started_uncommitted(self) -> set[Position]:
        """Records it started whose offsets it never committed: Kafka must deliver them again."""
        return {(p, o) for p, o in self.started if o >= self.committed[p]}

    def figures(self) -> dict[str, Any]:
        """The numbers the run prints."""
        return {
            "killed": self.name,
            "partitions": sorted(self.partitions),
            "started_before_kill": len(self.started),
            "committed_offsets": self.committed,
            "log_end_offsets": self.ends,
            "uncommitted_at_kill": len(self.uncommitted),
            "started_but_uncommitted_at_kill": len(self.started_uncommitted),
            "seconds_from_uncommitted_start_seen_to_death": round(self.seconds_to_kill, 3),
            "uncommitted_handled_again_by_survivor": len(self.handled_again & self.uncommitted),
        }


class GroupOffsets:
    """Reads the streams group's committed offsets without joining the group (it never subscribes)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_topic_submissions
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_target,
            group_id=settings.kafka_consumer_group,
            enable_auto_commit=False,
        )

    async def start(self) -> None:
        """Connect (before the kill, so reading right after it is one round trip)."""
        await self.consumer.start()
        await self.consumer.topics()

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()

    async def committed(self, partitions: Iterable[int]) -> dict[int, int]:
        """The group's committed offsets of some partitions (0 where it has committed none)."""
        return {p: (await self.consumer.committed(TopicPartition(self.topic, p))) or 0 for p in partitions}

    async def read(self, partitions: Iterable[int]) -> tuple[dict[int, int], dict[int, int]]:
        """Committed and end offsets of some partitions."""
        partitions = list(partitions)
        committed = await self.committed(partitions)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        ends = {tp.partition: end for tp, end in (await self.consumer.end_offsets(tps)).items()}
        return committed, ends


async def kill_mid_batch(
    stack: ChaosStack, name: str, partitions: set[int], offsets: GroupOffsets, *, timeout: float = 60.0
) -> MidBatchKill:
    """SIGKILL a streams process as soon as it has started a record it has not committed yet.

    Its batch commits only once every record in it has started, so at that moment the rest of
    the batch is in flight. The log shows a start within milliseconds; the broker is then asked
    whether that record's offset is still uncommitted (a batch of one record may already be),
    and if so the process dies at once. Whether the kill came before the commit is read from
    the broker again right after it, not assumed: the caller asserts on the figures.
    """
    tail = LogTail(stack.log_path(name))
    topic = stack.settings.kafka_topic_submissions
    deadline = time.monotonic() + timeout
    started: set[Position] = set()
    while True:
        new = started_records(tail.read(), topic)
        started |= new
        if new:
            committed = await offsets.committed(partitions)
            if any(offset >= committed[partition] for partition, offset in new):
                break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name} started no record it had not committed yet in {timeout:.0f}s "
                f"(started: {sorted(started)})\n{stack.tail(name)}"
            )
        # Polling the file this often costs little and keeps the kill within a few ms of the start.
        await asyncio.sleep(0.002)
    seen = time.monotonic()
    stack.kill(name)
    dead_after = time.monotonic() - seen
    started |= started_records(tail.read(), topic)
    committed, ends = await offsets.read(partitions)
    return MidBatchKill(name, partitions, started, committed, ends, dead_after)
