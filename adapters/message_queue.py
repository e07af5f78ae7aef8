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

With a sealer (the deployment's keyring, given when the worker builds the adapter) the request's
fields and the reply's answer travel sealed, each for a purpose naming the system and the
correlation id, so a sealed body copied to another request or reply does not open there; the
correlation id and the message type stay readable for routing. This module is the codec of both
directions: the legacy side (the sandbox, or a bridge in front of a real system) uses
`open_request` and `seal_reply`, tellonce uses `message` and `open_reply`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka.security import parse_security
from pydantic import ValidationError

from adapters.mapping import FieldMap
from adapters.sdk import Adapter, AsyncReply, CallContext, StepRequest, SubmitResult, TransientError
from bundles.models import LocalizedText
from infra.crypto import KeyringError, UnknownKeyError, displayable_key_id, is_sealed, sealed_key_id
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

REQUEST_PURPOSE = "tellonce.legacy-request/v1"
REPLY_PURPOSE = "tellonce.legacy-reply/v1"
REPLY_FIELDS = frozenset({"outcome", "reference", "code", "message"})
"""A reply's answer: sealed together in `reply`, never beside it in the clear."""


class Sealer(Protocol):
    """Seals and opens values for a purpose (`infra.crypto.Keyring` is one)."""

    def seal(self, plaintext: bytes, purpose: str) -> str:
        """A sealed token for `plaintext`, bound to `purpose`."""
        ...

    def open_sealed(self, token: str, purpose: str) -> bytes:
        """The plaintext of a token sealed for `purpose`.

        Raises:
            infra.crypto.KeyringError: unknown key, damaged token, or another purpose.
        """
        ...


def request_purpose(system: str, correlation_id: str) -> str:
    """What a request's fields are sealed for: `tellonce.legacy-request/v1:<system>:<correlation id>`."""
    return f"{REQUEST_PURPOSE}:{system}:{correlation_id}"


def reply_purpose(system: str, correlation_id: str) -> str:
    """What a reply's answer is sealed for: `tellonce.legacy-reply/v1:<system>:<correlation id>`."""
    return f"{REPLY_PURPOSE}:{system}:{correlation_id}"


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


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
    * value: `{"fields": "<sealed>"}`, the system's own request fields as UTF-8 JSON sealed for
      `request_purpose(system, correlation id)`; `{"fields": {...}}` in the clear without a sealer.

    The Kafka producer starts on the first call, not with the adapter: a worker may start
    before the cluster is reachable, and its other systems must not wait for this one.

    Args:
        options: aiokafka producer options (`producer_options(settings)`).
        sealer: Seals each request's fields (the deployment's keyring); None sends them in the
            clear (encryption off, never in production).
        max_timeout: Upper bound of one call, however far the call's deadline is.
    """

    field_map: ClassVar[FieldMap] = FieldMap()

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        sealer: Sealer | None,
        max_timeout: timedelta = DEFAULT_MAX_TIMEOUT,
    ) -> None:
        self.options = dict(options)
        self.sealer = sealer
        self.max_timeout = max_timeout
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient | None = None) -> Self:
        """The adapter on the configured Kafka cluster, sealing with its keyring, with the system's calendar.

        Raises:
            ValueError: The Kafka security settings are incomplete (e.g. SASL without a password).
            infra.crypto.KeyringError: The keyring is configured but cannot be read.
        """
        adapter = cls(producer_options(settings), sealer=settings.keyring)
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
        fields: dict[str, Any] | str = self.to_request(ctx, request.fields)
        if self.sealer is not None:
            fields = self.sealer.seal(_json_bytes(fields), request_purpose(self.system, key))
        value = json.dumps({"fields": fields}, ensure_ascii=False)
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


class UnreadableMessageError(ValueError):
    """A queue message that cannot be read (`reason` is a code; the message's content is never quoted).

    For `undecryptable`: `key_id` names the key of the sealed part when it is a plain id (None
    when there was no sealer to open it), `unknown_key` says whether the sealer lacks that key.
    """

    def __init__(self, reason: str, key_id: str | None = None, *, unknown_key: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id
        self.unknown_key = unknown_key


UnreadableReplyError = UnreadableMessageError
"""A reply record that is not a readable reply."""


def _key_id(token: str) -> str:
    try:
        kid = sealed_key_id(token)
    except KeyringError:
        return "?"
    return displayable_key_id(kid)  # the sender chose it: it could hide a SIN


def _open(sealer: Sealer, token: str, purpose: str) -> dict[str, Any]:
    try:
        plaintext = sealer.open_sealed(token, purpose)
    except KeyringError as exc:
        unknown = isinstance(exc, UnknownKeyError)
        raise UnreadableMessageError("undecryptable", _key_id(token), unknown_key=unknown) from None
    try:
        opened = json.loads(plaintext)
    except (ValueError, RecursionError):
        raise UnreadableMessageError("malformed_json") from None
    if not isinstance(opened, dict):
        raise UnreadableMessageError("not_an_object")
    return opened


def open_request(
    system: str, correlation_id: str, value: bytes | None, sealer: Sealer | None
) -> dict[str, Any]:
    """The `fields` of a request message, opened when sealed (the legacy side's reader).

    Raises:
        UnreadableMessageError: `malformed_request` (not `{"fields": ...}`), `not_encrypted`
            (fields in the clear to a sealer), `undecryptable` (sealed, and it does not open, or
            no sealer to open it), `malformed_json` / `not_an_object` (sealed fields that are not
            a JSON object).
    """
    try:
        body = json.loads(value or b"")
    except (ValueError, RecursionError):  # nesting deep enough to exhaust the parser is malformed
        raise UnreadableMessageError("malformed_request") from None
    if not isinstance(body, dict) or set(body) != {"fields"}:
        raise UnreadableMessageError("malformed_request")
    fields = body["fields"]
    if sealer is None:
        if is_sealed(fields):
            raise UnreadableMessageError("undecryptable")
        if not isinstance(fields, dict):
            raise UnreadableMessageError("malformed_request")
        return fields
    if not is_sealed(fields):
        raise UnreadableMessageError("not_encrypted")
    return _open(sealer, fields, request_purpose(system, correlation_id))


def seal_reply(system: str, reply: Mapping[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """A reply as it goes on the replies topic: `{"correlation_id", "reply": "<sealed answer>"}`.

    Args:
        system: The answering system.
        reply: `correlation_id`, `outcome`, and optionally `reference`, `code`, `message`.
        sealer: Seals the answer; None leaves the whole reply in the clear (encryption off).
    """
    if sealer is None:
        return dict(reply)
    correlation_id = str(reply["correlation_id"])
    answer = {name: value for name, value in reply.items() if name != "correlation_id"}
    return {
        "correlation_id": correlation_id,
        "reply": sealer.seal(_json_bytes(answer), reply_purpose(system, correlation_id)),
    }


def open_reply(system: str, data: Mapping[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """A reply's fields in the clear (`correlation_id`, `outcome`, ...), opening its sealed answer.

    Nothing is validated beyond what opening needs: the caller validates the result.

    Raises:
        UnreadableMessageError: `not_encrypted` (an answer in the clear, to a sealer),
            `undecryptable`, `malformed_json` / `not_an_object` (a sealed answer that is not a
            JSON object), `reply_invalid` (no correlation id to open it with).
    """
    sealed = data.get("reply")
    if sealer is None:
        if "reply" in data:
            raise UnreadableMessageError("undecryptable")
        return dict(data)
    if not isinstance(sealed, str) or not is_sealed(sealed) or REPLY_FIELDS & set(data):
        raise UnreadableMessageError("not_encrypted")
    correlation_id = data.get("correlation_id")
    if not isinstance(correlation_id, str):
        raise UnreadableMessageError("reply_invalid")
    answer = _open(sealer, sealed, reply_purpose(system, correlation_id))
    fields = {name: answer[name] for name in REPLY_FIELDS if name in answer}
    return {**fields, "correlation_id": correlation_id}


def read_reply(
    topic: str, partition: int, offset: int, value: bytes | None, *, system: str, sealer: Sealer | None
) -> AsyncReply:
    """One record of a replies topic as an `AsyncReply` (its `reply_id` is the record's position).

    The format is the one `tellonce streams` reads (docs/streams.md): a JSON object with
    `correlation_id` and the answer sealed in `reply` (or, without a sealer, `outcome`, and
    optionally `reference`, `code`, `message{en,fr}` in the clear).

    Raises:
        UnreadableReplyError: `malformed_json`, `not_an_object`, `reply_invalid`, or those of
            `open_reply`.
    """
    try:
        loaded = json.loads(value or b"")
    except (ValueError, RecursionError):
        raise UnreadableReplyError("malformed_json") from None
    if not isinstance(loaded, dict):
        raise UnreadableReplyError("not_an_object")
    data = open_reply(system, loaded, sealer)
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
    sealer = settings.keyring
    async with asyncio.timeout(within.total_seconds()):
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        if record.key == wanted:
                            return read_reply(
                                record.topic,
                                record.partition,
                                record.offset,
                                record.value,
                                system=system,
                                sealer=sealer,
                            )
        finally:
            await asyncio.shield(consumer.stop())


def reply_waiter(settings: Settings, system: str) -> Callable[[str, timedelta], Awaitable[AsyncReply]]:
    """`await_reply_on_topic` bound to one system: what the contract kit's `await_reply` takes."""

    async def await_reply(key: str, within: timedelta) -> AsyncReply:
        return await await_reply_on_topic(settings, system, key, within)

    return await_reply
