"""`MessageQueueAdapter`: the shared base of adapters whose legacy system takes requests from a queue.

Many federal benefit systems are reached through a message-queue bridge rather than a web
service: the caller puts a request on the system's request queue and the system answers, later,
on a reply queue. Here both queues are Kafka topics:

* requests go to `legacy.<system>.requests`, one message per request, its key the call's
  idempotency key (the correlation id);
* the system answers on `legacy.<system>.replies` (the `reply-to` header); `tellonce streams`
  turns each reply into a `legacy_reply` signal to the waiting bundle step.

`submit` returns as soon as the broker acknowledged the request (`pending_reply=True`); it never
reports success before that acknowledgement. A retry after a lost acknowledgement sends the
same message again: the system de-duplicates on the correlation id (it answers a repeat with its
recorded answer), and the bundle de-duplicates replies. No personal data ever goes into a key,
a header or an error: only the message value carries the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka.security import parse_security
from pydantic import ValidationError

from adapters.mapping import FieldMap
from adapters.sdk import Adapter, AsyncReply, CallContext, StepRequest, SubmitResult, TransientError
from bundles.models import LocalizedText
from infra.kafka import bootstrap_servers, security
from workflows.names import legacy_replies_topic, legacy_requests_topic

if TYPE_CHECKING:
    import httpx

    from infra.settings import Settings

DEFAULT_MAX_TIMEOUT = timedelta(seconds=60)

CONTENT_TYPE = "application/json"
H_CORRELATION_ID = "correlation-id"
H_REPLY_TO = "reply-to"
H_CONTENT_TYPE = "content-type"
H_MESSAGE_TYPE = "message-type"
H_MESSAGE_ID = "message-id"

REPLY_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A system's reason code is kept only when it has this shape: short, stable, no data in it."""

Headers = list[tuple[str, bytes]]


def message_id(idempotency_key: str) -> str:
    """The request message's id: `MQ-` and a digest of the correlation id, the same on every retry.

    A digest rather than the key itself, so a reference shown to a resident or an operator reveals
    nothing about the bundle; it is stable, so a retried request keeps its id.
    """
    return "MQ-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16].upper()


def producer_options(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options for the deployment's cluster: bootstrap servers, TLS and SASL.

    `acks="all"`: a request counts as sent only once every in-sync replica has it. Idempotence
    follows `Settings.idempotent_producer` (Tansu, the dev broker, refuses it).
    """
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": f"{settings.kafka_client_id}-mq",
        "acks": "all",
        "enable_idempotence": settings.idempotent_producer,
        **parse_security(security(settings)),
    }


class MessageQueueAdapter(Adapter):
    """Base of adapters for systems that read requests from `legacy.<system>.requests`.

    Subclasses set `system` and `field_map` (or override `to_request`). The request message:

    * key: the call's idempotency key (the correlation id; never personal data);
    * headers: `correlation-id` (the same key), `reply-to` (`legacy.<system>.replies`),
      `content-type` (`application/json`), `message-type` (`<system>.<operation>`) and
      `message-id` (the reference `submit` returns);
    * value: `{"fields": {...}}`, the system's own request fields (UTF-8 JSON).

    The Kafka producer starts on the first call, not with the adapter: a worker may start
    before the cluster is reachable, and its other systems must not wait for this one.

    Args:
        options: aiokafka producer options (`producer_options(settings)`).
        max_timeout: Upper bound of one call, however far the call's deadline is.
    """

    field_map: ClassVar[FieldMap] = FieldMap()

    def __init__(self, options: Mapping[str, Any], *, max_timeout: timedelta = DEFAULT_MAX_TIMEOUT) -> None:
        self.options = dict(options)
        self.max_timeout = max_timeout
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient | None = None) -> Self:
        """The adapter on the configured Kafka cluster, with the system's availability calendar.

        Raises:
            ValueError: The Kafka security settings are incomplete (e.g. SASL without a password).
        """
        adapter = cls(producer_options(settings))
        adapter.availability = settings.legacy_system(cls.system).availability
        return adapter

    @property
    def requests_topic(self) -> str:
        """Where this system reads its requests."""
        return legacy_requests_topic(self.system)

    @property
    def replies_topic(self) -> str:
        """Where this system writes its replies (the `reply-to` of every request)."""
        return legacy_replies_topic(self.system)

    def to_request(self, ctx: CallContext, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The system's request fields for a step's projected fields.

        Projected values the system does not take are dropped (their paths, never their values,
        are logged).
        """
        mapped, unused = self.field_map.apply(fields)
        if unused:
            ctx.log.warning("adapter.fields_unused", system=self.system, paths=unused)
        return mapped

    def message(self, ctx: CallContext, request: StepRequest) -> tuple[bytes, bytes, Headers]:
        """The request message: key, value and headers (see the class docstring)."""
        key = ctx.idempotency_key
        value = json.dumps({"fields": self.to_request(ctx, request.fields)}, ensure_ascii=False)
        headers: Headers = [
            (H_CORRELATION_ID, key.encode()),
            (H_REPLY_TO, self.replies_topic.encode()),
            (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
            (H_MESSAGE_TYPE, f"{self.system}.{ctx.operation}".encode()),
            (H_MESSAGE_ID, message_id(key).encode()),
        ]
        return key.encode(), value.encode(), headers

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        """Put the request on the system's queue; its answer comes later on the replies topic.

        Returns:
            `pending_reply=True` and the message id as the reference, once the broker has
            acknowledged the message.

        Raises:
            TransientError: The broker is unreachable, refused the message, or did not
                acknowledge it before the call's deadline. The message may still arrive (a
                late acknowledgement): the retry sends the same key, which the system
                answers once.
        """
        timeout = self.timeout_for(ctx)
        key, value, headers = self.message(ctx, request)
        try:
            async with asyncio.timeout(timeout):
                producer = await self._started_producer()
                sent = await producer.send_and_wait(self.requests_topic, value, key=key, headers=headers)
        except TimeoutError as exc:
            raise TransientError(
                "timeout", detail=f"no acknowledgement for {self.system} within {timeout:.1f}s"
            ) from exc
        except KafkaError as exc:
            raise TransientError(
                "broker_unavailable", detail=f"{type(exc).__name__} sending to {self.system}"
            ) from exc
        ctx.log.info(
            "adapter.queued",
            system=self.system,
            operation=ctx.operation,
            topic=sent.topic,
            partition=sent.partition,
            offset=sent.offset,
        )
        return SubmitResult(reference=message_id(ctx.idempotency_key), pending_reply=True)

    def timeout_for(self, ctx: CallContext) -> float:
        """Seconds this call may take: what is left before the deadline, at most `max_timeout`."""
        left = min(ctx.remaining(datetime.now(UTC)), self.max_timeout)
        if left <= timedelta(0):
            raise TransientError("deadline_passed", detail=f"no time left to send to {self.system}")
        return left.total_seconds()

    async def _started_producer(self) -> AIOKafkaProducer:
        """The producer, started on first use; a failed start leaves none, so the next call retries."""
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(**self.options)
                try:
                    await producer.start()
                except BaseException:
                    # Also on cancellation by the call's deadline: nothing half-started stays behind.
                    await asyncio.shield(producer.stop())
                    raise
                self._producer = producer
            return self._producer

    async def aclose(self) -> None:
        """Stop the producer (sending what it still holds) if it was started."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


# --- replies ------------------------------------------------------------------------------------

UNREADABLE_REPLY = LocalizedText(
    en="The program answered in a way we could not read; an agent will check.",
    fr="Le programme a répondu d'une manière que nous n'avons pas pu lire; un agent vérifiera.",
)


class UnreadableReplyError(ValueError):
    """A reply record that is not a reply (`reason` is a code; the record's content is never quoted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_reply(topic: str, partition: int, offset: int, value: bytes | None) -> AsyncReply:
    """One record of a replies topic as an `AsyncReply` (its `reply_id` is the record's position).

    The format is the one `tellonce streams` reads (docs/streams.md): a JSON object with
    `correlation_id`, `outcome`, and optionally `reference`, `code`, `message{en,fr}`.

    Raises:
        UnreadableReplyError: `malformed_json`, `not_an_object` or `reply_invalid`.
    """
    try:
        data = json.loads(value or b"")
    except ValueError:
        raise UnreadableReplyError("malformed_json") from None
    if not isinstance(data, dict):
        raise UnreadableReplyError("not_an_object")
    code = data.get("code")
    try:
        return AsyncReply.model_validate(
            {
                "correlation_id": data.get("correlation_id"),
                "reply_id": f"{topic}:{partition}:{offset}",
                "outcome": data.get("outcome"),
                "reference": data.get("reference"),
                "code": code if isinstance(code, str) and REPLY_CODE.match(code) else None,
                "message": data.get("message"),
            }
        )
    except ValidationError:
        raise UnreadableReplyError("reply_invalid") from None


async def await_reply_on_topic(settings: Settings, system: str, key: str, within: timedelta) -> AsyncReply:
    """Wait for a message-queue system's reply to the request with idempotency key `key`.

    For tests and the contract kit: reads `legacy.<system>.replies` from the beginning without a
    consumer group (nothing is committed, nothing is taken from `tellonce streams`) and returns
    the first reply whose record key is `key`.

    Raises:
        TimeoutError: No reply with that key within `within`.
        UnreadableReplyError: The reply with that key is not a readable reply.
    """
    topic = legacy_replies_topic(system)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers(settings),
        client_id=f"{settings.kafka_client_id}-reply-waiter",
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # The topic may not exist yet (the system creates it when it first answers): look again
        # often rather than every five minutes.
        metadata_max_age_ms=500,
        **parse_security(security(settings)),
    )
    wanted = key.encode()
    async with asyncio.timeout(within.total_seconds()):
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        if record.key == wanted:
                            return read_reply(record.topic, record.partition, record.offset, record.value)
        finally:
            await asyncio.shield(consumer.stop())


def reply_waiter(settings: Settings, system: str) -> Callable[[str, timedelta], Awaitable[AsyncReply]]:
    """`await_reply_on_topic` bound to one system: what the contract kit's `await_reply` takes."""

    async def await_reply(key: str, within: timedelta) -> AsyncReply:
        return await await_reply_on_topic(settings, system, key, within)

    return await_reply
