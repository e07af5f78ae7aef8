"""Status events: publish a bundle's state changes to Kafka as CloudEvents, and read them back.

The workflow hands over batches of `BundleEvent`s; this module turns each into a CloudEvents 1.0
binary-mode Kafka record (attributes in `ce_*` headers, JSON data as the value, the tracking id as
the key) and waits until the broker has acknowledged every record of the batch. Temporal retries a
batch the broker could not take, so a broker outage delays events and never loses them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

# aiokafka ships neither type hints nor stubs; what this module uses of it is typed at the boundary.
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.spec import SPECVERSION_V1_0
from cloudevents.core.v1.event import CloudEvent
from faststream.kafka.security import parse_security
from temporalio import activity
from temporalio.exceptions import ApplicationError

from infra.kafka import bootstrap_servers, security
from infra.settings import Settings
from workflows.models import (
    BUNDLE_STATE_CHANGED,
    PUBLISH_BUNDLE_EVENTS,
    STEP_STATE_CHANGED,
    BundleEvent,
    BundleEventData,
    EventBatch,
)

log = structlog.get_logger("tellonce.events")

EVENTS_UNAVAILABLE: Final = "EventsUnavailable"
"""Failure type of a batch the broker did not acknowledge in time; Temporal retries it."""

EVENTS_UNEXPECTED: Final = "EventsUnexpectedError"
"""Failure type of a batch that failed for any other reason (a bug); retried as well."""

INLINE_PUBLISH_BOUND: Final = 2.0
"""Seconds a batch published inline (as a local activity) may take before the bundle falls back
to the events queue; below the workflow's own 3 s bound on the local activity."""

DATA_CONTENT_TYPE: Final = "application/json"
EVENT_TYPES: Final = frozenset({BUNDLE_STATE_CHANGED, STEP_STATE_CHANGED})

_FORMAT = JSONFormat()


# ---------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedEvent:
    """One event as a Kafka record in CloudEvents binary mode."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class KafkaRecord(Protocol):
    """What `decode_event` reads of a consumed record (aiokafka's `ConsumerRecord` fits)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class NotABundleEventError(ValueError):
    """A record on the topic is not a tellonce status event this code understands."""


def encode_event(event: BundleEvent) -> EncodedEvent:
    """The Kafka record of one event: `ce_*` headers, the tracking id as key, `data` as JSON.

    The value holds exactly the fields of `BundleEventData` (ids and states), nothing else.
    """
    cloud_event = CloudEvent(
        attributes={
            "specversion": SPECVERSION_V1_0,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": event.time,
            "datacontenttype": DATA_CONTENT_TYPE,
        },
        data=event.data.model_dump(mode="json"),
    )
    message = to_binary(cloud_event, _FORMAT, key_mapper=_subject)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    if not key:
        raise ValueError("a bundle event needs its tracking id as subject")
    return EncodedEvent(key=key, value=message.value, headers=list(message.headers.items()))


def decode_event(record: KafkaRecord) -> BundleEvent:
    """The `BundleEvent` carried by a record of the bundle-events topic.

    Unknown data fields are ignored, so a consumer keeps working when fields are added.

    Raises:
        NotABundleEventError: the record is not a CloudEvents 1.0 binary-mode tellonce event.
    """
    headers = dict(record.headers)
    if headers.get("ce_specversion") != SPECVERSION_V1_0.encode():
        raise NotABundleEventError("not a CloudEvents 1.0 binary-mode record")
    try:
        cloud_event = from_binary(
            KafkaMessage(headers=headers, key=record.key, value=record.value or b""), _FORMAT, CloudEvent
        )
    except (BaseCloudEventException, ValueError) as exc:  # missing attributes, bad time, bad JSON
        raise NotABundleEventError(f"invalid CloudEvent: {type(exc).__name__}") from exc
    if cloud_event.get_type() not in EVENT_TYPES:
        raise NotABundleEventError(f"unknown event type {cloud_event.get_type()!r}")
    data = cloud_event.get_data()
    if not isinstance(data, dict):
        raise NotABundleEventError("event data is not a JSON object")
    return BundleEvent.model_validate(
        {
            "id": cloud_event.get_id(),
            "type": cloud_event.get_type(),
            "source": cloud_event.get_source(),
            "subject": cloud_event.get_subject(),
            "time": cloud_event.get_time(),
            "data": BundleEventData.model_validate(data),
        }
    )


def _subject(event: BaseCloudEvent) -> str | None:
    # The key is the subject (the tracking id): one bundle's events share a partition, in order.
    return event.get_subject()


# ---------------------------------------------------------------------- publishing


class EventsUnavailableError(Exception):
    """The broker did not acknowledge a batch in time. The message names the cause's type only."""


class EventPublisher(Protocol):
    """Where status events go. Implementations publish a batch in order, or raise."""

    async def publish(self, batch: EventBatch) -> None:
        """Publish every event of `batch`, in order; return once all are acknowledged.

        Raises:
            EventsUnavailableError: the events could not be published now; try again later.
        """
        ...

    async def close(self) -> None:
        """Release connections; the publisher is not used afterwards."""
        ...


def producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options from settings: bootstrap servers, client id, TLS and SASL.

    Security goes through `infra.kafka.security`, the one place that maps settings to TLS/SASL,
    so this producer connects exactly like the FastStream brokers do.
    """
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": settings.kafka_client_id,
        **parse_security(security(settings)),
    }


class NoEventPublisher:
    """Stands where a worker has no broker configured: every batch is unavailable."""

    async def publish(self, batch: EventBatch) -> None:
        """Refuse the batch: this worker cannot publish events."""
        raise EventsUnavailableError("this worker has no event publisher")

    async def close(self) -> None:
        """Nothing to release."""


class KafkaEventPublisher:
    """Publishes batches with one long-lived aiokafka producer, started on first use.

    Every send waits for `acks=all`. Order within a batch holds because all its records share a
    key (so a partition) and aiokafka keeps at most one request in flight per partition. After any
    failure the producer is dropped and the next batch starts a fresh one, so a producer left in a
    bad state (expired batches, stale idempotence sequence) never outlives an outage.

    Args:
        settings: Kafka connection settings and the topic name.
        idempotent: Let the broker drop duplicates of a retried send within a producer session.
            Tansu 0.6 (the embedded development broker) rejects aiokafka's `InitProducerId`
            request, so local stacks turn this off; consumers de-duplicate by event id anyway.
        publish_timeout: Upper bound in seconds of one `publish`, starting the producer included;
            below the activity's 30 s start-to-close timeout so a failure reaches Temporal as a
            classified, retryable error rather than as a timeout.
        request_timeout: aiokafka's own bound in seconds on metadata and produce requests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        idempotent: bool = True,
        publish_timeout: float = 15.0,
        request_timeout: float = 10.0,
    ) -> None:
        self._topic = settings.kafka_topic_bundle_events
        self._config = producer_config(settings) | {
            "acks": "all",
            "enable_idempotence": idempotent,
            "request_timeout_ms": int(request_timeout * 1000),
        }
        self._publish_timeout = publish_timeout
        self._close_timeout = request_timeout + 5.0
        self._producer: Any = None  # AIOKafkaProducer | None; aiokafka is untyped
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def topic(self) -> str:
        """The topic this publisher writes to."""
        return self._topic

    async def publish(self, batch: EventBatch) -> None:
        """Send every event of the batch in order and wait for the broker's acknowledgements.

        Raises:
            EventsUnavailableError: the broker did not take the batch within `publish_timeout`.
        """
        # Encode first: an event that cannot be encoded fails the batch before anything is sent.
        records = [encode_event(event) for event in batch.events]
        producer: Any = None
        try:
            async with asyncio.timeout(self._publish_timeout):
                producer = await self._started()
                # Queue every record before awaiting any acknowledgement: they join the partition's
                # queue in this order, and leave it in this order.
                acks = [
                    await producer.send(self._topic, value=r.value, key=r.key, headers=r.headers)
                    for r in records
                ]
                await asyncio.gather(*acks)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._discard(producer)
            raise EventsUnavailableError(f"broker unavailable ({type(exc).__name__})") from exc

    async def close(self) -> None:
        """Stop the producer (flushing what it holds, within a bound) and any being discarded."""
        self._closed = True
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def _started(self) -> Any:
        if self._closed:
            raise RuntimeError("the event publisher is closed")
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._config)
                try:
                    await producer.start()
                except BaseException:
                    # A half-started producer still owns connections and maybe a sender task.
                    self._stop_in_background(producer)
                    raise
                self._producer = producer
                log.info("events.producer_started", topic=self._topic)
            return self._producer

    def _discard(self, producer: Any) -> None:
        """Forget a producer that failed and stop it in the background, so the caller fails fast."""
        if producer is None or producer is not self._producer:
            return  # never started, or another batch already replaced it
        self._producer = None
        self._stop_in_background(producer)

    def _stop_in_background(self, producer: Any) -> None:
        task = asyncio.create_task(self._stop(producer))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, producer: Any) -> None:
        # `stop` flushes what is still queued; during an outage that lasts until the records
        # expire (request_timeout), so it is bounded rather than awaited open-ended.
        try:
            async with asyncio.timeout(self._close_timeout):
                await producer.stop()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("events.producer_stop_failed", error_type=type(exc).__name__)


# ---------------------------------------------------------------------- activity


class EventActivities:
    """The status-event activity, given where events go."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    @activity.defn(name=PUBLISH_BUNDLE_EVENTS)
    async def publish_bundle_events(self, batch: EventBatch) -> int:
        """Publish one bundle's batch of events in order; return how many were published.

        Raises:
            ApplicationError: retryable, of type `EventsUnavailable` when the broker did not take
                the batch, `EventsUnexpectedError` for anything else. Messages name error types
                only, never event content.
        """
        bound = log.bind(
            bundle=batch.tracking_id,
            first_sequence=batch.events[0].data.sequence,
            last_sequence=batch.events[-1].data.sequence,
            count=len(batch.events),
            activity_attempt=activity.info().attempt,
        )
        try:
            if activity.info().is_local:
                # Inline, the bundle's workflow task waits for this batch: a slow broker must
                # not hold it, so give up early and let the bundle publish on the events queue.
                async with asyncio.timeout(INLINE_PUBLISH_BOUND):
                    await self._publisher.publish(batch)
            else:
                await self._publisher.publish(batch)
        except TimeoutError:
            bound.warning("events.inline_timeout")
            raise ApplicationError(
                "bundle events not published inline in time", type=EVENTS_UNAVAILABLE
            ) from None
        except EventsUnavailableError as exc:
            bound.warning("events.unavailable", error=str(exc))
            raise ApplicationError(f"bundle events not published: {exc}", type=EVENTS_UNAVAILABLE) from None
        except Exception as exc:
            bound.error("events.unexpected_error", error_type=type(exc).__name__)
            raise ApplicationError(
                f"bundle events not published: unexpected {type(exc).__name__}", type=EVENTS_UNEXPECTED
            ) from None
        bound.info("events.published")
        return len(batch.events)
