"""The one place a Kafka connection is configured: bootstrap servers, TLS and SASL from settings.

Nothing here assumes the embedded broker: `tellonce dev` only changes the defaults it points at.
"""

from __future__ import annotations

import ssl
from collections.abc import Collection, Sequence
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from infra.settings import Settings

log = structlog.get_logger("tellonce.kafka")


def bootstrap_servers(settings: Settings) -> list[str]:
    """The bootstrap servers as a list (settings hold a comma-separated string)."""
    return [server.strip() for server in settings.kafka_target.split(",") if server.strip()]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL and SASL_SSL, with a client certificate when one is set."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for the configured protocol and SASL mechanism.

    Raises:
        ValueError: SASL is asked for without a mechanism, user name or password.
    """
    context = ssl_context(settings)
    protocol = settings.kafka_security_protocol
    if protocol in ("PLAINTEXT", "SSL"):
        return BaseSecurity(ssl_context=context) if context else None
    if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username and settings.kafka_sasl_password):
        raise ValueError(
            f"TELLONCE_KAFKA_SECURITY_PROTOCOL={protocol} needs TELLONCE_KAFKA_SASL_MECHANISM, "
            "TELLONCE_KAFKA_SASL_USERNAME and TELLONCE_KAFKA_SASL_PASSWORD"
        )
    sasl_class = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[
        settings.kafka_sasl_mechanism
    ]
    return sasl_class(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )


def kafka_broker(settings: Settings, **options: Any) -> KafkaBroker:
    """A FastStream broker for the configured cluster.

    Its producer is idempotent (which implies `acks=all`) unless the settings turn that off for a
    broker that refuses it, so a retried send never writes a message twice within a session.
    """
    return KafkaBroker(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=settings.kafka_client_id,
        security=security(settings),
        enable_idempotence=settings.idempotent_producer,
        **options,
    )


def retention_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of a topic that carries personal data: kept no longer than `retention_period`."""
    retention_ms = int(settings.retention_period.total_seconds() * 1000)
    # Kafka deletes whole segments: with the default 7-day roll, records would outlive the
    # retention period by up to a week.
    segment_ms = min(retention_ms, 24 * 3600 * 1000)
    return {"retention.ms": str(retention_ms), "segment.ms": str(segment_ms)}


async def create_topics(
    admin: AIOKafkaAdminClient, settings: Settings, names: Sequence[str], *, personal: Collection[str]
) -> list[str]:
    """Create topics (partitions and replication from settings); returns those this call created.

    Topics in `personal` get `retention_configs`. A broker that refuses a topic's configs gets the
    topic without them, and a warning says so: a missing retention is a finding for operations,
    never a reason for the stack not to start. A topic created meanwhile by another is not an error.

    Raises:
        aiokafka.errors.KafkaError: the cluster refused a topic for another reason.
    """

    def spec(name: str, *, with_configs: bool = True) -> NewTopic:
        configs = retention_configs(settings) if with_configs and name in personal else None
        partitions, replication = settings.kafka_partitions, settings.kafka_replication_factor
        return NewTopic(name, partitions, replication, topic_configs=configs)

    created: list[str] = []
    retry: list[str] = []
    response = await admin.create_topics([spec(name) for name in names])
    for topic, code, *_ in response.topic_errors:
        if code == 0:
            created.append(topic)
        elif issubclass(for_code(code), TopicAlreadyExistsError):
            continue
        elif topic in personal:
            retry.append(topic)
        else:
            raise for_code(code)(f"cannot create topic {topic}")
    if retry:
        log.warning("kafka.topic_configs_refused", topics=retry, configs=sorted(retention_configs(settings)))
        response = await admin.create_topics([spec(name, with_configs=False) for name in retry])
        for topic, code, *_ in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif not issubclass(for_code(code), TopicAlreadyExistsError):
                raise for_code(code)(f"cannot create topic {topic}")
    return created
