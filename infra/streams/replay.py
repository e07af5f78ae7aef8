"""`tellonce streams replay-dlq`: send dead letters back to their original topic after a fix.

A replayed record is the original value, key and headers (the `tellonce-dlq-*` headers
removed) plus `tellonce-replayed-from: <dlq topic>/<partition>/<offset>`. A sealed dead letter
(`tellonce-dlq-sealed`) is opened with the settings' keyring first, so the original topic gets
the original bytes; one that does not open (its key retired, or encryption off here) is not
replayed, and is left uncommitted like a dead letter the selection left out. A dead letter
written without its original (`tellonce-dlq-not-kept`: too large for the DLQ) cannot be replayed
from here: it is counted and passed. The replayer has its
own consumer group: what it has replayed is committed, so a second run replays only newer dead
letters unless asked to start from the beginning. A dead letter a selection (`--key`,
`--reason`) left out is never committed past: per partition, the commit stops at the first
dead letter not selected, so a later run (`--all`) still reads it. The selected dead letters
after it are then read again by that later run and replayed again, which the consumers
tolerate (a bundle starts once per submission id; a reply its step already has is ignored).
A dry run commits nothing. A dead letter written twice (the consumer crashed before its
commit) is replayed once per run: both copies name the same original position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka.security import parse_security

from infra.crypto import Keyring, KeyringError
from infra.kafka import bootstrap_servers, security
from infra.settings import Settings
from infra.streams.dlq import H_REPLAYED_FROM, DeadLetterInfo, raw_producer, without_dlq_headers
from infra.streams.records import Record

FETCH_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: all of them, or those with one of the keys or reason codes."""

    everything: bool = False
    keys: frozenset[bytes] = frozenset()
    reasons: frozenset[str] = frozenset()

    def matches(self, record: Record, info: DeadLetterInfo) -> bool:
        """True when the dead letter is selected."""
        if self.everything:
            return True
        if record.key is not None and record.key in self.keys:
            return True
        return any(reason.code in self.reasons for reason in info.reasons)


@dataclass(frozen=True)
class Entry:
    """One dead letter that was (or, in a dry run, would be) replayed."""

    dlq_offset: tuple[int, int]
    original: tuple[str, int, int]
    key: bytes | None
    codes: tuple[str, ...]


@dataclass
class ReplayReport:
    """What a replay run did."""

    replayed: list[Entry] = field(default_factory=list)
    not_selected: int = 0
    duplicates: int = 0
    not_dead_letters: int = 0
    undecryptable: int = 0
    """Selected sealed dead letters that did not open (left out, and not committed past)."""
    not_kept: int = 0
    """Selected dead letters kept without their original (too large): nothing to replay."""
    first_not_selected: dict[int, int] = field(default_factory=dict)
    """DLQ offset of the first dead letter left out, by partition: nothing from it on is committed."""

    def leave_out(self, record: Record) -> None:
        """Remember that a dead letter was not replayed, so no commit passes it."""
        first = self.first_not_selected.get(record.partition, record.offset)
        self.first_not_selected[record.partition] = min(first, record.offset)


def commit_offsets(
    ends: dict[TopicPartition, int],
    first_not_selected: dict[int, int],
    committed: dict[TopicPartition, int | None] | None = None,
) -> dict[TopicPartition, int]:
    """What a replay run commits, per partition: up to the end read, or only up to the first
    dead letter left out; never back before what an earlier run committed (`--from-beginning`)."""
    offsets = {}
    for tp, end in ends.items():
        offset = min(end, first_not_selected.get(tp.partition, end))
        earlier = (committed or {}).get(tp)
        offsets[tp] = offset if earlier is None else max(offset, earlier)
    return offsets


def replay_group(settings: Settings) -> str:
    """The replayer's consumer group (apart from the streams consumers)."""
    return f"{settings.kafka_consumer_group}.replay-dlq"


def _consumer(settings: Settings, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=f"{settings.kafka_client_id}-replay",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **parse_security(security(settings)),
    )


async def _position_at_start(
    consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int | None], from_beginning: bool
) -> None:
    for partition, offset in committed.items():
        if from_beginning or offset is None:
            await consumer.seek_to_beginning(partition)
        else:
            consumer.seek(partition, offset)


async def _read_until(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> list[Record]:
    """Every record from the current positions to the end of each partition.

    A partition is done once its position reached its end offset and a fetch found nothing more;
    the end offsets move past every record read (and are what is then committed). The dev broker
    (Tansu) reports one end offset per record batch rather than per record, so trusting it alone
    would leave the second of two dead letters written together unread. Against Kafka the extra
    fetch finds nothing, or records written during the read, committed past like the others.
    """
    records: list[Record] = []
    pending = set(ends)
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
        for tp, batch in fetched.items():
            records += [Record.from_consumer(r) for r in batch]
            if batch:
                ends[tp] = max(ends[tp], batch[-1].offset + 1)
        if not fetched:
            # A whole round found nothing: what has reached its end is done.
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    return records


async def replay_dlq(
    settings: Settings,
    dlq_topic: str,
    selection: Selection,
    *,
    dry_run: bool = False,
    from_beginning: bool = False,
    group: str | None = None,
) -> ReplayReport:
    """Replay the selected dead letters of one DLQ written up to now; commit unless a dry run.

    Raises:
        ValueError: the DLQ topic does not exist.
    """
    consumer = _consumer(settings, group or replay_group(settings))
    await consumer.start()
    try:
        await consumer.topics()  # loads the cluster's metadata
        numbers = consumer.partitions_for_topic(dlq_topic)
        if not numbers:
            raise ValueError(f"no topic {dlq_topic!r} on the cluster")
        partitions = [TopicPartition(dlq_topic, number) for number in sorted(numbers)]
        consumer.assign(partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        committed: dict[TopicPartition, int | None] = {tp: await consumer.committed(tp) for tp in partitions}
        await _position_at_start(consumer, committed, from_beginning)
        records = await _read_until(consumer, ends)
        report = await _replay(settings, dlq_topic, records, selection, dry_run=dry_run)
        if not dry_run:
            await consumer.commit(commit_offsets(ends, report.first_not_selected, committed))
        return report
    finally:
        await consumer.stop()


async def _replay(
    settings: Settings, dlq_topic: str, records: list[Record], selection: Selection, *, dry_run: bool
) -> ReplayReport:
    report = ReplayReport()
    seen: set[tuple[str, int, int]] = set()
    keyring: Keyring | None = settings.keyring
    producer = None if dry_run else raw_producer(settings)
    if producer is not None:
        await producer.start()
    try:
        for record in records:
            info = DeadLetterInfo.of(record)
            if info is None:
                report.not_dead_letters += 1
                continue
            if not selection.matches(record, info):
                report.not_selected += 1
                report.leave_out(record)
                continue
            original = (info.topic, info.partition, info.offset)
            if original in seen:
                report.duplicates += 1
                continue
            if not info.kept:
                report.not_kept += 1
                continue
            try:
                value = info.original_value(record, keyring)
            except KeyringError:
                report.undecryptable += 1
                report.leave_out(record)
                continue
            seen.add(original)
            if producer is not None:
                origin = f"{dlq_topic}/{record.partition}/{record.offset}".encode()
                headers = [*without_dlq_headers(record.headers), (H_REPLAYED_FROM, origin)]
                await producer.send_and_wait(info.topic, value, key=record.key, headers=headers)
            codes = tuple(sorted({reason.code for reason in info.reasons}))
            report.replayed.append(Entry((record.partition, record.offset), original, record.key, codes))
    finally:
        if producer is not None:
            await producer.stop()
    return report
