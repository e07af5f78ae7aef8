"""Kafka intake throughput: submissions/s from a submissions topic into started bundles.

Produces N newborn-on envelopes to a fresh topic, then lets the streams role (the same code
`tellonce streams` runs, in this process) consume them and start their bundles, and times it
from partition assignment until the group has committed all N. Beside it, in the same run
against the same servers, a raw baseline: a plain aiokafka consumer that json-decodes each
record and calls `client.start_workflow` for it, nothing else (no validation, plan, memo,
search attributes, duplicate check or DLQ), with the same batch size and concurrency.

Beside each side's rate it reports the CPU this process spent per submission over the same
interval: all threads (`process_time`: the Python loop, the thread pool, the Temporal SDK's Rust
threads) and the event loop's thread alone (`thread_time`), where the streams role's Python
work runs. On a shared machine the rates swing with others' load; CPU per submission barely
does, so it is the figure to compare code changes by. With `--server-pid` (the stack's Temporal
server and Kafka broker, Linux only) it adds their CPU per submission too: the whole cost of a
start on each side, which bounds the rate a machine of its own would reach. A stack is never
quite idle (its worker polls, its sweeps run, and every started bundle waits in a task queue),
so each server's CPU rate over `IDLE_WINDOW_S` before each round is subtracted for the time a
side ran: otherwise the slower side would be charged more of the stack's background.

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
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


SERVER_PIDS: list[int] = []
"""Processes of the stack (Temporal, Kafka) whose CPU is counted per submission (`--server-pid`)."""
IDLE_WINDOW_S = 2.0
"""Seconds before each round over which the servers' background CPU rate is read."""
idle_rates: list[float] = []
"""Each server's background CPU (seconds per second), read before the current round."""


def servers_cpu() -> tuple[float, ...]:
    """CPU seconds each of the `SERVER_PIDS` has used so far, read from /proc (user + system)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = []
    for pid in SERVER_PIDS:
        # Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used.append((int(fields[11]) + int(fields[12])) / ticks)
    return tuple(used)


async def read_idle_rates() -> None:
    """Read each server's CPU rate while this process asks nothing of it, into `idle_rates`."""
    before = servers_cpu()
    await asyncio.sleep(IDLE_WINDOW_S)
    idle_rates[:] = [(after - b) / IDLE_WINDOW_S for after, b in zip(servers_cpu(), before, strict=True)]


@dataclass(frozen=True)
class Side:
    """One side of one round: seconds of wall time, of this process's CPU, its loop thread's, the servers'."""

    wall_s: float
    cpu_s: float
    loop_cpu_s: float
    servers_cpu_s: tuple[float, ...]
    """Per `SERVER_PIDS` entry, in its order, less its background rate for `wall_s`."""


class Clocks:
    """Wall time, process CPU, this thread's CPU and the servers' CPU since `start`, read by `stop`."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.loop_cpu = 0.0
        self.servers: tuple[float, ...] = ()

    def start(self) -> None:
        self.wall, self.cpu, self.loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        self.servers = servers_cpu()

    def stop(self) -> Side:
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        servers = servers_cpu()
        elapsed = wall - self.wall
        used = tuple(
            after - before - idle * elapsed
            for after, before, idle in zip(servers, self.servers, idle_rates, strict=True)
        )
        return Side(elapsed, cpu - self.cpu, loop_cpu - self.loop_cpu, used)


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


async def run_tellonce(settings: Settings, count: int) -> Side:
    """Time and CPU for the streams role to start `count` bundles (from assignment to last commit)."""
    streams = Streams(settings, batch_size=BATCH, concurrency=CONCURRENCY)
    topic, group = settings.kafka_topic_submissions, settings.kafka_consumer_group
    async with committed_offsets(settings.kafka_target, group, topic) as committed, streams.running():
        while not streams.submissions_assigned():  # noqa: ASYNC110 - polling another component
            await asyncio.sleep(0.01)
        clocks = Clocks()
        clocks.start()
        while await committed() < count:  # noqa: ASYNC110 - polling another component
            # Each read costs this process CPU it would otherwise give the streams role: every
            # 10 ms cost ~1 ms per submission at 40/s on the 2-core dev machine. 50 ms adds at
            # most 50 ms to runs of seconds.
            await asyncio.sleep(COMMIT_POLL_S)
        return clocks.stop()


async def run_baseline(settings: Settings, topic: str, count: int) -> Side:
    """Time and CPU for a plain aiokafka consumer + `start_workflow` to start `count` workflows."""
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
    clocks = Clocks()
    clocks.start()
    try:
        while done < count:
            fetched = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            values = [record.value for batch in fetched.values() for record in batch]
            await asyncio.gather(*(start(value) for value in values))
            await consumer.commit()
            done += len(values)
        return clocks.stop()
    finally:
        await consumer.stop()


async def one_round(
    kafka: str, temporal: str, namespace: str, count: int, baseline_first: bool
) -> tuple[Side, Side]:
    """Time and CPU taken by tellonce and by the baseline, each on fresh topics, groups and queues."""
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
    """Median throughput and CPU per submission of `rounds` rounds, alternating which side goes first.

    The ratio is the median of each round's own ratio: the two sides of a round run back to
    back, so a machine busy with something else slows both, which a ratio of separate medians
    would not cancel.
    """
    load_before = os.getloadavg()
    sides = []
    idle: list[list[float]] = []
    for i in range(rounds):
        if SERVER_PIDS:
            await read_idle_rates()
            idle.append(list(idle_rates))
        sides.append(await one_round(kafka, temporal, namespace, count, i % 2 == 1))
    load_after = os.getloadavg()
    tellonce = sorted(count / t.wall_s for t, _ in sides)
    baseline = sorted(count / b.wall_s for _, b in sides)
    ratios = sorted(b.wall_s / t.wall_s for t, b in sides)

    def ms_per_submission(values: list[float]) -> float:
        return round(1000 * statistics.median(values) / count, 3)

    servers = range(len(SERVER_PIDS))

    return {
        "submissions": count,
        "rounds": rounds,
        "partitions": Settings.model_construct().kafka_partitions,
        "batch": BATCH,
        "concurrency": CONCURRENCY,
        "tellonce_per_s": round(statistics.median(tellonce), 1),
        "baseline_per_s": round(statistics.median(baseline), 1),
        "ratio": round(statistics.median(ratios), 3),
        "round_ratios": [round(x, 3) for x in ratios],
        "tellonce_rounds": [round(x, 1) for x in tellonce],
        "baseline_rounds": [round(x, 1) for x in baseline],
        "tellonce_cpu_ms": ms_per_submission([t.cpu_s for t, _ in sides]),
        "baseline_cpu_ms": ms_per_submission([b.cpu_s for _, b in sides]),
        "tellonce_loop_cpu_ms": ms_per_submission([t.loop_cpu_s for t, _ in sides]),
        "baseline_loop_cpu_ms": ms_per_submission([b.loop_cpu_s for _, b in sides]),
        "server_pids": list(SERVER_PIDS),
        "servers_idle_ms_per_s": [round(1000 * statistics.median(r[i] for r in idle), 1) for i in servers],
        "tellonce_servers_cpu_ms": [
            ms_per_submission([t.servers_cpu_s[i] for t, _ in sides]) for i in servers
        ],
        "baseline_servers_cpu_ms": [
            ms_per_submission([b.servers_cpu_s[i] for _, b in sides]) for i in servers
        ],
        # Both sides' whole CPU per start (this process and the servers), as a ratio: what the
        # rates' ratio would tend to where these processes had the CPUs to themselves.
        "cpu_ratio": round(
            statistics.median(
                (b.cpu_s + sum(b.servers_cpu_s)) / (t.cpu_s + sum(t.servers_cpu_s)) for t, b in sides
            ),
            3,
        )
        if SERVER_PIDS
        else None,
        "load_average": [round(x, 2) for x in (*load_before, *load_after)],
    }


def render(result: dict[str, Any]) -> str:
    """The report: rates, ratio, CPU per submission, and the machine's load around the run."""
    load = result["load_average"]
    return (
        f"{result['submissions']} submissions x {result['rounds']} rounds (median), "
        f"{result['partitions']} partitions, "
        f"batch {result['batch']}, {result['concurrency']} in flight\n"
        f"  tellonce streams : {result['tellonce_per_s']:8.1f} submissions/s into started bundles "
        f"{result['tellonce_rounds']}\n"
        f"  raw baseline     : {result['baseline_per_s']:8.1f} starts/s (aiokafka + start_workflow) "
        f"{result['baseline_rounds']}\n"
        f"  ratio            : {result['ratio']:8.3f} (tellonce / baseline, median of each round's) "
        f"{result['round_ratios']}\n"
        f"  CPU/submission   : tellonce {result['tellonce_cpu_ms']:.3f} ms "
        f"(loop thread {result['tellonce_loop_cpu_ms']:.3f}), "
        f"baseline {result['baseline_cpu_ms']:.3f} ms (loop thread {result['baseline_loop_cpu_ms']:.3f}), "
        "medians, this process\n"
        + "".join(
            f"  pid {pid:<12}: tellonce {t:.3f} ms, baseline {b:.3f} ms CPU per submission "
            f"(background {i:.1f} ms/s subtracted)\n"
            for pid, t, b, i in zip(
                result["server_pids"],
                result["tellonce_servers_cpu_ms"],
                result["baseline_servers_cpu_ms"],
                result["servers_idle_ms_per_s"],
                strict=True,
            )
        )
        + (
            f"  whole-CPU ratio  : {result['cpu_ratio']:8.3f} (baseline / tellonce CPU per start, "
            "this process and the servers)\n"
            if result["cpu_ratio"] is not None
            else ""
        )
        + f"  load average     : {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before, "
        f"{load[3]:.2f} {load[4]:.2f} {load[5]:.2f} after"
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
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="a process of the stack (Temporal server, Kafka broker) whose CPU to count; repeatable",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The streams role's own logging (JSON, redacted, on standard error): what it costs is part
    # of what is measured. Send standard error to a file to keep the report readable.
    configure_logging("info", "json")
    SERVER_PIDS[:] = args.server_pid
    result = asyncio.run(benchmark(args.kafka, args.temporal, args.namespace, args.submissions, args.rounds))
    sys.stdout.write((json.dumps(result) if args.json else render(result)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
