"""Message-queue systems of the sandbox: requests from `legacy.<system>.requests`, replies on `.replies`.

A simulated queue manager in front of the same `SystemState` the REST endpoints use, so a system
keeps one ledger whatever protocol reached it. Each request is processed in offset order per
partition; its offset is committed only once its reply is on the replies topic, so a crash in
between processes it again, and the system answers the repeat from its records (a replay, not a
second effect).

Faults, for requests whose correlation id the faults apply to:

* `down`, `down_for_s`, `maintenance_for_s`: the system takes nothing; requests wait in the queue
  (their partition pauses) until it is back, as with a real queue manager;
* `fail_next`, `error_rate`: processing fails and the request is put back (backout), then retried;
* `rate_limit_per_s`: requests above the rate wait in the queue until the rate allows them;
* `reject_when`, `review_when`: a `rejected` or `needs_attention` reply (the business core decides);
* `latency_ms`: the reply leaves that much later (the effect is recorded first);
* `malformed_replies`: the reply is not valid JSON; `drop_replies`: no reply at all.

With a keyring in its settings the sandbox plays a system that shares the deployment's key: it
opens each request's sealed fields and seals its answers (`adapters.message_queue`). A request
whose fields come in the clear is answered `needs_attention` with code `not_encrypted`, one whose
sealed fields do not open with `undecryptable` (a key problem, never a refusal of the resident's
request); neither reaches the system's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.kafka.security import parse_security

from adapters.message_queue import Sealer, UnreadableMessageError, open_request, seal_reply
from bundles.models import LocalizedText
from infra.kafka import bootstrap_servers, create_topics, security
from infra.sandbox.faults import utcnow
from infra.sandbox.systems import Answer, SystemState
from infra.settings import Settings
from workflows.names import legacy_replies_topic, legacy_requests_topic

log = structlog.get_logger("tellonce.sandbox")

MQ_SYSTEMS: tuple[str, ...] = ("cra-aba",)
"""Systems that read their requests from a queue (besides answering REST, like every system)."""

GROUP = "tellonce-sandbox-mq"
"""The sandbox's consumer group on the request topics."""

MAX_KEY_LENGTH = 255
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
RECONNECT_S = 1.0
MAX_RECONNECT_S = 30.0
POLL_MS = 200
DOWN_RECHECK_S = 0.5
WAIT_IN_QUEUE = frozenset({503, 429})
"""Faults that leave a request in the queue untouched: the system is down, closed, or at its rate."""
BACKOUT_S = 0.2

MALFORMED = LocalizedText(
    en='The message must be a JSON object {"fields": {...}}.',
    fr='Le message doit être un objet JSON {"fields": {...}}.',
)
UNREADABLE: dict[str, LocalizedText] = {
    "not_encrypted": LocalizedText(
        en="The request's fields must be sealed with the shared key; they came in the clear.",
        fr="Les champs de la demande doivent être scellés avec la clé commune; ils sont arrivés en clair.",
    ),
    "undecryptable": LocalizedText(
        en="The request's sealed fields do not open with our key.",
        fr="Les champs scellés de la demande ne s'ouvrent pas avec notre clé.",
    ),
}
"""What the system answers a request it cannot read, besides a malformed one."""


def correlation_id(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The request's correlation id: its `correlation-id` header, else its key; None when unusable."""
    raw = next((value for name, value in record.headers if name == "correlation-id"), None) or record.key
    if not raw:
        return None
    try:
        key = raw.decode()
    except UnicodeDecodeError:
        return None
    return key if len(key) <= MAX_KEY_LENGTH and key.isprintable() else None


def reply_to(record: ConsumerRecord[bytes, bytes], system: str) -> str:
    """Where to answer: the request's `reply-to` header when it names a topic, else the system's replies."""
    raw = next((value for name, value in record.headers if name == "reply-to"), None)
    try:
        topic = raw.decode() if raw else ""
    except UnicodeDecodeError:
        topic = ""
    return topic if TOPIC_NAME.match(topic) else legacy_replies_topic(system)


def request_answer(
    system: str, key: str, value: bytes | None, state: SystemState, sealer: Sealer | None
) -> Answer:
    """What the system answers one request: its recorded answer to the key, a new effect, or a refusal."""
    try:
        fields = open_request(system, key, value, sealer)
    except UnreadableMessageError as exc:
        message = UNREADABLE.get(exc.reason)
        if message is None:
            return Answer(422, {"code": "malformed_request", "message": MALFORMED.model_dump()})
        # Not the resident's fault but a key out of step (mid-rotation, say): a person looks, and
        # the same request sent again once keys agree is read then (nothing was recorded).
        return Answer(409, {"code": exc.reason, "message": message.model_dump()})
    return state.replay("submit", key) or state.submit(key, fields)


def reply_body(key: str, answer: Answer) -> dict[str, Any]:
    """The reply `tellonce streams` reads (docs/streams.md) for the business core's answer."""
    body = answer.body
    reply: dict[str, Any] = {"correlation_id": key, "message": body.get("message")}
    if answer.status < 300:
        reply.update(outcome="accepted", reference=body.get("reference"), code=None)
    elif answer.status == 409:
        reply.update(outcome="needs_attention", reference=None, code=body.get("code"))
    else:
        reply.update(outcome="rejected", reference=None, code=body.get("code"))
    return reply


def garbled(reply: dict[str, Any]) -> bytes:
    """A reply cut in the middle: what a broken bridge puts on the queue (not valid JSON)."""
    encoded = json.dumps(reply, ensure_ascii=False).encode()
    return encoded[: len(encoded) // 2]


class MqResponder:
    """Reads `legacy.<system>.requests` of every message-queue system and answers on its replies topic.

    Starting does not wait for the broker: the sandbox serves its REST systems meanwhile, and the
    responder connects, and reconnects after a broker outage, in the background.
    """

    name = "mq"

    def __init__(
        self, states: dict[str, SystemState], settings: Settings, systems: Iterable[str] = MQ_SYSTEMS
    ) -> None:
        self.states = states
        self.settings = settings
        self.systems_by_topic = {legacy_requests_topic(system): system for system in systems}
        self._task: asyncio.Task[None] | None = None
        self._held: dict[TopicPartition, float] = {}
        self._consumed_since_connect = False

    async def start(self) -> None:
        """Start consuming in the background; returns at once (the queue keeps what arrives meanwhile)."""
        self._task = asyncio.create_task(self._run(), name="sandbox-mq")

    async def stop(self) -> None:
        """Stop consuming; the request in hand is processed again by the next start (a replay)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- connection -----------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": bootstrap_servers(self.settings),
            **parse_security(security(self.settings)),
        }

    async def _run(self) -> None:
        delay = RECONNECT_S
        while True:
            self._consumed_since_connect = False
            try:
                await self._ensure_topics()
                await self._serve()
            except (KafkaError, OSError) as exc:
                log.warning("sandbox.mq_unavailable", error=type(exc).__name__)
            except Exception:
                # A bug must not end the responder for good: log it, reconnect, read on from the commit.
                log.exception("sandbox.mq_failed")
            # A broker that stays away is asked less and less often; one that was up, at once again.
            delay = RECONNECT_S if self._consumed_since_connect else min(delay * 2, MAX_RECONNECT_S)
            await asyncio.sleep(delay)

    async def _ensure_topics(self) -> None:
        """Create the request and reply topics that are missing (the system owns its queues)."""
        admin = AIOKafkaAdminClient(
            client_id=f"{self.settings.kafka_client_id}-sandbox", **self._client_options()
        )
        await admin.start()
        try:
            wanted = [
                name
                for topic, system in self.systems_by_topic.items()
                for name in (topic, legacy_replies_topic(system))
            ]
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if missing:
                # Requests and replies carry personal data (sealed): kept no longer than bundles keep it.
                await create_topics(admin, self.settings, missing, personal=set(missing))
        finally:
            await admin.close()

    async def _serve(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.systems_by_topic,
            group_id=GROUP,
            client_id=f"{self.settings.kafka_client_id}-sandbox-mq",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **self._client_options(),
        )
        producer = AIOKafkaProducer(
            client_id=f"{self.settings.kafka_client_id}-sandbox-mq",
            acks="all",
            enable_idempotence=self.settings.idempotent_producer,
            **self._client_options(),
        )
        try:
            await producer.start()
            await consumer.start()
            self._held.clear()
            self._consumed_since_connect = True
            log.info("sandbox.mq_consuming", topics=sorted(self.systems_by_topic))
            while True:
                self._resume_due(consumer)
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                for partition, records in batches.items():
                    await self._consume(consumer, producer, partition, records)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(consumer.stop())
            with contextlib.suppress(Exception):
                await asyncio.shield(producer.stop())

    def _resume_due(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        due = [partition for partition, until in self._held.items() if until <= now]
        for partition in due:
            del self._held[partition]
        if due:
            consumer.resume(*due)

    async def _consume(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        partition: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        """Process one partition's records in order; a record the system cannot take yet stops it."""
        for record in records:
            hold_s = await self._process(producer, record)
            if hold_s is not None:
                # The record stays in the queue: read it again once the hold is over.
                consumer.seek(partition, record.offset)
                consumer.pause(partition)
                self._held[partition] = time.monotonic() + hold_s
                return
            await consumer.commit({partition: record.offset + 1})

    # --- one request ----------------------------------------------------------------------------

    async def _process(
        self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes]
    ) -> float | None:
        """Answer one request (or decide not to); seconds to hold it in the queue, or None when done."""
        system = self.systems_by_topic[record.topic]
        state = self.states.get(system)
        key = correlation_id(record)
        where = {"system": system, "partition": record.partition, "offset": record.offset}
        if state is None or key is None:
            # Nobody could ever match an answer to it: a real bridge moves it aside.
            log.warning("sandbox.mq_uncorrelated", **where)
            return None
        faults = state.faults
        scoped = faults.applies_to(key)
        fault = faults.check(utcnow()) if scoped else None
        if fault is not None and fault.status in WAIT_IN_QUEUE:
            # Not consumed: the request waits in the queue until the system takes requests again.
            return DOWN_RECHECK_S
        state.counts.requests += 1
        if fault is not None:
            # Taken, failed, and put back on the queue (a backout): read again a moment later.
            state.counts.faulted += 1
            log.info("sandbox.mq_fault", code=fault.code, **where)
            return BACKOUT_S
        answer = request_answer(system, key, record.value, state, self.settings.keyring)
        if scoped and faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if scoped and faults.drop_replies:
            log.info("sandbox.mq_reply_dropped", **where)
            return None
        reply = reply_body(key, answer)
        sealed = seal_reply(system, reply, self.settings.keyring)
        value = (
            garbled(sealed)
            if scoped and faults.malformed_replies
            else json.dumps(sealed, ensure_ascii=False).encode()
        )
        headers = [
            ("correlation-id", key.encode()),
            ("content-type", b"application/json"),
            ("message-type", f"{system}.reply".encode()),
        ]
        sent = await producer.send_and_wait(
            reply_to(record, system), value, key=key.encode(), headers=headers
        )
        log.info(
            "sandbox.mq_replied",
            outcome=reply["outcome"],
            reply_partition=sent.partition,
            reply_offset=sent.offset,
            **where,
        )
        return None
