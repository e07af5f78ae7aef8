"""The streams process: FastStream subscribers on aiokafka, their AsyncAPI document, and `/health`.

Every subscriber is a batch subscriber with `AckPolicy.MANUAL`; `infra.streams.batches`
commits each batch once every record in it has had its durable effect. The producer of
dead letters is aiokafka's own (see `infra.streams.dlq.raw_producer`), so the FastStream
broker is consumer-only; its publishers are declared so the AsyncAPI document describes
every topic streams writes, or that other roles write for the same contract.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.specification import AsyncAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from adapters.message_queue import MessageQueueAdapter
from adapters.registry import ADAPTER_TYPES, KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.intake import Intake
from infra.kafka import kafka_broker
from infra.records import open_record_store
from infra.settings import Settings
from infra.streams.batches import consume_batch
from infra.streams.dlq import DeadLetters, raw_producer
from infra.streams.models import (
    BirthNoticeRecord,
    DeadLetter,
    LegacyReplyRecord,
    LegacyRequestMessage,
    SubmissionEnvelope,
)
from infra.streams.notices import NoticeConsumer
from infra.streams.records import no_body, tolerant_batch_parser
from infra.streams.replies import ReplyConsumer, reply_topics
from infra.streams.retry import until_done
from infra.streams.submissions import SubmissionConsumer
from infra.streams.topics import reply_systems
from infra.temporal import connect
from workflows.models import BundleEventData
from workflows.names import legacy_replies_topic, legacy_requests_topic

log = structlog.get_logger("tellonce.streams")

BATCH_SIZE = 256
"""Records per batch at most: one commit per batch."""
CONCURRENCY = 64
"""Records of one batch handled at once (each is one or two Temporal calls)."""
GRACEFUL_TIMEOUT = 30.0
"""Seconds a stopping subscriber waits for its batch; what is unfinished is delivered again."""
ASYNCAPI_VERSION = "1.0.0"
FASTSTREAM_LOGGER = logging.getLogger("tellonce.streams.faststream")
"""FastStream's own lines (received, processed, assignments) through the role's structlog set-up."""


def documented_settings() -> Settings:
    """Settings with every default and no environment: the contract the checked-in AsyncAPI shows."""
    return Settings.model_construct()


class Streams:
    """The streams role: one broker, its subscribers, and what their handlers need.

    Args:
        settings: Deployment settings (bootstrap, TLS/SASL, topics, consumer group).
        catalogue: Bundle definitions; default the packaged catalogue.
        client: A Temporal client; default one connected from the settings.
        batch_size: Records per batch at most.
        concurrency: Records handled at once within a batch.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        catalogue: Catalogue | None = None,
        client: Client | None = None,
        batch_size: int = BATCH_SIZE,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._catalogue = catalogue
        self.client = client
        self.producer: AIOKafkaProducer | None = None
        self.submissions: SubmissionConsumer | None = None
        self.replies: ReplyConsumer | None = None
        self.notices: NoticeConsumer | None = None
        self.connected = False
        self.reply_topics = reply_topics(reply_systems(settings))
        # Consumer-only: no admin client (topics are provisioned, see `infra.streams.topics`) and
        # no FastStream producer (dead letters go through aiokafka to keep header bytes).
        self.broker: KafkaBroker = kafka_broker(
            settings,
            consumer_only=True,
            allow_auto_create_topics=False,
            graceful_timeout=GRACEFUL_TIMEOUT,
            logger=FASTSTREAM_LOGGER,
        )
        self._declare_subscribers()
        self._declare_publishers()

    # --- declarations (also what the AsyncAPI document shows) -----------------------------------

    def _batch_options(self, group_suffix: str) -> dict[str, Any]:
        group = self.settings.kafka_consumer_group + group_suffix
        return {
            "batch": True,
            "max_records": self.batch_size,
            "group_id": group,
            # A new group starts at the beginning, so nothing sent before streams first ran is missed.
            "auto_offset_reset": "earliest",
            "ack_policy": AckPolicy.MANUAL,
            "parser": tolerant_batch_parser,
            "decoder": no_body,
        }

    def _declare_subscribers(self) -> None:
        settings = self.settings

        # The body parameters exist for the AsyncAPI document, which FastStream builds from them.
        # Their decoder always yields an empty list: FastStream must never validate a record (one
        # bad record would fail its batch, and pydantic's errors quote the input). The handlers
        # read the raw records from the message instead.
        async def submissions(envelopes: list[SubmissionEnvelope], message: KafkaMessage) -> None:
            assert self.submissions is not None, "streams is not connected"
            await consume_batch(
                message, self.submissions.handle, concurrency=self.concurrency, what="submissions"
            )

        async def legacy_replies(replies: list[LegacyReplyRecord], message: KafkaMessage) -> None:
            assert self.replies is not None, "streams is not connected"
            await consume_batch(message, self.replies.handle, concurrency=self.concurrency, what="replies")

        async def birth_notices(notices: list[BirthNoticeRecord], message: KafkaMessage) -> None:
            assert self.notices is not None, "streams is not connected"
            await consume_batch(message, self.notices.handle, concurrency=self.concurrency, what="notices")

        self.submissions_subscriber = self.broker.subscriber(
            settings.kafka_topic_submissions,
            title=settings.kafka_topic_submissions,
            description="Partner submissions: one envelope per record, key = submission id; the "
            "submission itself sealed (docs/streams.md). Rejected records go to "
            f"{settings.kafka_topic_submissions_dlq}.",
            **self._batch_options(""),
        )
        self.submissions_subscriber(submissions)
        self.broker.subscriber(
            *self.reply_topics,
            title="legacy-replies",
            description="Asynchronous replies of legacy systems, signalled to their bundles; the "
            "answer sealed, the correlation id readable (`SealedLegacyReply`; `LegacyReplyMessage` "
            "only where encryption is off). Unmatched or malformed replies go to "
            f"{settings.kafka_topic_legacy_replies_dlq}.",
            **self._batch_options(".legacy-replies"),
        )(legacy_replies)
        self.broker.subscriber(
            settings.kafka_topic_birth_notices,
            title=settings.kafka_topic_birth_notices,
            description="Notices of Live Birth from hospitals and midwives, each handed to the "
            "workflow that pairs it with the parents' statement; the birth's facts sealed in "
            "`personal` (`SealedBirthNotice`; `BirthNotice` in the clear only where encryption is "
            f"off). Invalid notices go to {settings.kafka_topic_birth_notices_dlq}.",
            **self._batch_options(".birth-notices"),
        )(birth_notices)

    def _declare_publishers(self) -> None:
        settings = self.settings
        for topic, source in (
            (settings.kafka_topic_submissions_dlq, settings.kafka_topic_submissions),
            (settings.kafka_topic_legacy_replies_dlq, "legacy.<system>.replies"),
            (settings.kafka_topic_birth_notices_dlq, settings.kafka_topic_birth_notices),
        ):
            self.broker.publisher(
                topic,
                title=topic,
                schema=DeadLetter,
                description=f"Dead letters of {source}: the original key and headers, byte for byte, "
                "and the original value, sealed where encryption is on (`tellonce-dlq-sealed`), plus "
                "the `tellonce-dlq-*` headers this schema describes. Replay with `tellonce streams "
                "replay-dlq`, which opens sealed values first.",
            )
        for system, adapter_type in sorted(ADAPTER_TYPES.items()):
            if issubclass(adapter_type, MessageQueueAdapter):
                self.broker.publisher(
                    legacy_requests_topic(system),
                    title=legacy_requests_topic(system),
                    schema=LegacyRequestMessage,
                    description=f"Requests to {system} (written by the worker's adapter), answered on "
                    f"{legacy_replies_topic(system)}: key and `correlation-id` header = the call's "
                    "idempotency key; the request fields sealed.",
                )
        self.broker.publisher(
            settings.kafka_topic_bundle_events,
            title=settings.kafka_topic_bundle_events,
            schema=BundleEventData,
            description="Status events (written by the worker): CloudEvents 1.0 in binary mode, "
            "attributes in `ce_*` headers, this JSON as the value, key = tracking id. "
            "Types `ca.tellonce.bundle.state_changed` and `ca.tellonce.step.state_changed`; "
            "`ce_id` is `<tracking id>:<sequence>`, stable across retries.",
        )

    # --- life cycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect to Temporal and Kafka (retrying until they answer) and build the handlers."""
        settings = self.settings
        if self.client is None:
            self.client = await until_done(lambda: connect(settings), what="connect_temporal")
        catalogue = self._catalogue or Catalogue.load(known_adapters=KNOWN_ADAPTERS)
        self.producer = await until_done(self._start_producer, what="connect_kafka")
        keyring = settings.keyring
        dead_letters = DeadLetters(self.producer, keyring)
        intake = Intake(self.client, catalogue, settings, records=open_record_store(settings))
        self.submissions = SubmissionConsumer(
            intake, dead_letters, settings.kafka_topic_submissions_dlq, keyring=keyring
        )
        self.replies = ReplyConsumer(
            self.client,
            dead_letters,
            self.reply_topics,
            settings.kafka_topic_legacy_replies_dlq,
            keyring=keyring,
        )
        self.notices = NoticeConsumer(self.client, dead_letters, settings)
        self.connected = True
        log.info(
            "streams.connected",
            group=settings.kafka_consumer_group,
            topics=[settings.kafka_topic_submissions, settings.kafka_topic_birth_notices, *self.reply_topics],
        )

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = raw_producer(self.settings)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def disconnect(self) -> None:
        """Close the dead-letter producer (after the broker stopped consuming)."""
        self.connected = False
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def start(self) -> None:
        """Connect, then start every subscriber at once."""
        await self.connect()
        await self.broker.connect()
        # FastStream starts subscribers one after another, and each first join of a consumer
        # group waits out the coordinator's initial rebalance delay (3 s on Kafka, ~5 s on
        # Tansu): joining them together makes start-up one delay long.
        await asyncio.gather(*(subscriber.start() for subscriber in self.broker.subscribers))
        self.broker.running = True

    async def stop(self) -> None:
        """Stop consuming (waiting for the batches in hand), then disconnect."""
        try:
            await self.broker.stop()
        finally:
            await self.disconnect()
            log.info("streams.stopped")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Streams]:
        """Consume until the block ends (tests and embedding; `serve` is the role)."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def submissions_assigned(self) -> bool:
        """The submissions consumer has joined its group and holds partitions."""
        consumer = self.submissions_subscriber.consumer
        return consumer is not None and bool(consumer.assignment())

    def healthy(self) -> bool:
        """Connected, and every subscriber consuming."""
        return self.connected and all(sub.running for sub in self.broker.subscribers)

    # --- documentation and HTTP ---------------------------------------------------------------

    def specification(self) -> AsyncAPI:
        """The AsyncAPI 3.0 document of these subscribers and publishers."""
        return AsyncAPI(
            self.broker,
            title="tellonce streams",
            version=ASYNCAPI_VERSION,
            description="Kafka topics tellonce reads and writes. Generated by "
            "`tellonce streams asyncapi`; see docs/streams.md.",
        )

    def asyncapi_json(self) -> str:
        """The AsyncAPI document as stable, indented JSON."""
        document = self.specification().to_specification().to_jsonable()
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def asgi_app(self) -> Starlette:
        """An ASGI app that consumes during its lifespan and serves `/health` and `/asyncapi.json`."""
        document = self.asyncapi_json().encode()

        async def health(request: Request) -> Response:
            ok = self.healthy()
            return JSONResponse({"status": "ok" if ok else "starting"}, 200 if ok else 503)

        async def asyncapi(request: Request) -> Response:
            return Response(document, media_type="application/json")

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with self.running():
                yield

        return Starlette(
            routes=[Route("/health", health), Route("/asyncapi.json", asyncapi)], lifespan=lifespan
        )


def asyncapi_document() -> str:
    """The checked-in AsyncAPI document (`docs/asyncapi.json`): default topic names, no environment."""
    return Streams(documented_settings()).asyncapi_json()


async def serve(settings: Settings, *, batch_size: int = BATCH_SIZE, concurrency: int = CONCURRENCY) -> None:
    """Run the streams role until SIGINT/SIGTERM: consume, and serve HTTP on `streams_port`.

    That port defaults to port base + 802; several streams processes on one host (one consumer
    group sharing the partitions) each set their own.
    """
    streams = Streams(settings, batch_size=batch_size, concurrency=concurrency)
    config = uvicorn.Config(
        streams.asgi_app(),
        host=settings.host,
        port=settings.streams_port if settings.streams_port is not None else settings.port("streams"),
        log_config=None,  # keep the structlog set-up of the role
        access_log=False,
        lifespan="on",
    )
    await uvicorn.Server(config).serve()
