"""Kafka intake throughput: submissions/s from a submissions topic into started bundles.

Produces N newborn-on envelopes to a fresh topic, then lets the streams role (the same code
`tellonce streams` runs, in this process) consume them and start their bundles, and times it
from partition assignment until the group has committed all N. Beside it, in the same run
against the same servers, a raw baseline: a plain aiokafka consumer that json-decodes each
record and calls `client.start_workflow` for it, nothing else (no validation, plan, memo,
search attributes, duplicate check or DLQ), with the same batch size and concurrency.

    python benchmarks/kafka_intake.py --kafka 127.0.0.1:9092 --temporal 127.0.0.1:7233 --submissions 1000

Run it against a `tellonce dev` stack. Its topics, consumer groups and task queues are its
own, so the stack's streams and worker ignore them: bundles start and stay started, which is
what is measured. All data is synthetic (the example's people, varied times of birth).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bundles.validators import toronto_today
from infra.crypto import Keyring
from infra.logging import configure_logging
from infra.settings import Settings
from infra.streams.app import Streams
from infra.streams.sealing import seal_submission
from infra.streams.topics import ensure_topics, names_under
from infra.temporal import connect

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "newborn-on" / "complete.json"
BATCH = 256
CONCURRENCY = 64
COMMIT_POLL_S = 0.05
"""How often the group's committed offsets are read to see whether the streams role is done."""
CommittedFn = Callable[[], Awaitable[int]]


def envelopes(count: int, keyring: Keyring | None) -> list[tuple[bytes, bytes]]:
    """`count` valid envelopes (key, value), each with its own submission id, sealed as partners must."""
    submission: dict[str, Any] = json.loads(EXAMPLE.read_text())["submission"]
    submission["child"]["date_of_birth"] = (toronto_today() - datetime.timedelta(days=10)).isoformat()
    records = []
    for i in range(count):
        body = copy.deepcopy(submission)
        body["child"]["time_of_birth"] = f"{i // 60 % 24:02d}:{i % 60:02d}"
        submission_id = str(uuid.uuid4())
        value = {
            "schema": "tellonce.submission/v1",
            "submission_id": submission_id,
            "bundle_id": "newborn-on",
            "channel": "benchmark",
            "submission": body,
        }
        sealed = seal_submission(keyring, value) if keyring is not None else value
        records.append((submission_id.encode(), json.dumps(sealed).encode()))
    return records


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


@asynccontextmanager
async def committed_offsets(bootstrap: str, group: str, topic: str) -> AsyncIterator[CommittedFn]:
    """A function that reads the group's committed offsets of `topic`, summed over its partitions.

    One consumer (never joining the group) serves every read, so watching the commits costs one
    OffsetFetch request per read, not a new connection.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]

        async def read() -> int:
            return sum([await consumer.committed(tp) or 0 for tp in partitions])

        yield read
    finally:
        await consumer.stop()


async def run_tellonce(settings: Settings, count: int) -> float:
    """Seconds for the streams role to start `count` bundles (from assignment to last commit)."""
    streams = Streams(settings, batch_size=BATCH, concurrency=CONCURRENCY)
    topic, group = settings.kafka_topic_submissions, settings.kafka_consumer_group
    async with committed_offsets(settings.kafka_target, group, topic) as committed, streams.running():
        while not streams.submissions_assigned():  # noqa: ASYNC110 - polling another component
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        while await committed() < count:  # noqa: ASYNC110 - polling another component
            # Each read costs this process CPU it would otherwise give the streams role: every
            # 10 ms cost ~1 ms per submission at 40/s on the 2-core dev machine. 50 ms adds at
            # most 50 ms to runs of seconds.
            await asyncio.sleep(COMMIT_POLL_S)
        return time.perf_counter() - started


async def run_baseline(settings: Settings, topic: str, count: int) -> float:
    """Seconds for a plain aiokafka consumer + `start_workflow` to start `count` workflows."""
    client = await connect(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_target,
        group_id=f"{settings.kafka_consumer_group}.baseline",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    await consumer.topics()
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    slots = asyncio.Semaphore(CONCURRENCY)
    queue = f"{settings.task_queue_prefix}.baseline"

    async def start(value: bytes) -> None:
        envelope = json.loads(value)
        async with slots:
            await client.start_workflow(
                "BaselineWorkflow", envelope["submission"], id=envelope["submission_id"], task_queue=queue
            )

    done = 0
    started = time.perf_counter()
    try:
        while done < count:
            fetched = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            values = [record.value for batch in fetched.values() for record in batch]
            await asyncio.gather(*(start(value) for value in values))
            await consumer.commit()
            done += len(values)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def one_round(
    kafka: str, temporal: str, namespace: str, count: int, baseline_first: bool
) -> tuple[float, float]:
    """Seconds taken by tellonce and by the baseline, each on fresh topics, groups and queues."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap=kafka,
        temporal_address=temporal,
        temporal_namespace=namespace,
        task_queue_prefix=name,
        **names_under(name),
    )
    baseline_topic = f"{name}.baseline"
    await ensure_topics(settings, systems=[])
    await ensure_topics(settings.model_copy(update={"kafka_topic_submissions": baseline_topic}), systems=[])
    await produce(kafka, settings.kafka_topic_submissions, envelopes(count, settings.keyring))
    await produce(kafka, baseline_topic, envelopes(count, settings.keyring))
    if baseline_first:
        baseline_s = await run_baseline(settings, baseline_topic, count)
        tellonce_s = await run_tellonce(settings, count)
    else:
        tellonce_s = await run_tellonce(settings, count)
        baseline_s = await run_baseline(settings, baseline_topic, count)
    return tellonce_s, baseline_s


async def benchmark(kafka: str, temporal: str, namespace: str, count: int, rounds: int) -> dict[str, Any]:
    """Median throughput of `rounds` rounds, alternating which side goes first.

    The ratio is the median of each round's own ratio: the two sides of a round run back to
    back, so a machine busy with something else slows both, which a ratio of separate medians
    would not cancel.
    """
    times = [await one_round(kafka, temporal, namespace, count, i % 2 == 1) for i in range(rounds)]
    tellonce = sorted(count / t for t, _ in times)
    baseline = sorted(count / b for _, b in times)
    ratios = sorted(b / t for t, b in times)
    tellonce_per_s, baseline_per_s = tellonce[rounds // 2], baseline[rounds // 2]
    return {
        "submissions": count,
        "rounds": rounds,
        "partitions": Settings.model_construct().kafka_partitions,
        "batch": BATCH,
        "concurrency": CONCURRENCY,
        "tellonce_per_s": round(tellonce_per_s, 1),
        "baseline_per_s": round(baseline_per_s, 1),
        "ratio": round(statistics.median(ratios), 3),
        "round_ratios": [round(x, 3) for x in ratios],
        "tellonce_rounds": [round(x, 1) for x in tellonce],
        "baseline_rounds": [round(x, 1) for x in baseline],
    }


def render(result: dict[str, Any]) -> str:
    return (
        f"{result['submissions']} submissions x {result['rounds']} rounds (median), "
        f"{result['partitions']} partitions, "
        f"batch {result['batch']}, {result['concurrency']} in flight\n"
        f"  tellonce streams : {result['tellonce_per_s']:8.1f} submissions/s into started bundles "
        f"{result['tellonce_rounds']}\n"
        f"  raw baseline     : {result['baseline_per_s']:8.1f} starts/s (aiokafka + start_workflow) "
        f"{result['baseline_rounds']}\n"
        f"  ratio            : {result['ratio']:8.3f} (tellonce / baseline, median of each round's) "
        f"{result['round_ratios']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kafka", required=True, help="bootstrap server, e.g. 127.0.0.1:9092")
    parser.add_argument("--temporal", required=True, help="Temporal frontend, e.g. 127.0.0.1:7233")
    parser.add_argument(
        "--namespace", default="tellonce", help="Temporal namespace (with tellonce's attributes)"
    )
    parser.add_argument("--submissions", type=int, default=1000, help="how many of each to start")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The streams role's own logging (JSON, redacted, on standard error): what it costs is part
    # of what is measured. Send standard error to a file to keep the report readable.
    configure_logging("info", "json")
    result = asyncio.run(benchmark(args.kafka, args.temporal, args.namespace, args.submissions, args.rounds))
    sys.stdout.write((json.dumps(result) if args.json else render(result)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
