"""Every topic tellonce uses, and a function that creates the missing ones.

`tellonce dev` calls it once the broker is up; in production run `tellonce streams
create-topics` (it needs the right to create topics) or provision the same list yourself.
Topics that carry personal data (sealed, but personal all the same) are created with
`retention.ms` = `TELLONCE_RETENTION_PERIOD`: Kafka keeps them no longer than a bundle keeps its
personal data. Only `bundle-events` has none, and keeps the cluster's default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka.security import parse_security

from adapters.registry import KNOWN_ADAPTERS
from infra.kafka import bootstrap_servers, create_topics, security
from infra.settings import Settings
from workflows.names import legacy_replies_topic, legacy_requests_topic


def reply_systems(settings: Settings) -> list[str]:
    """Systems whose replies topic streams consumes: the configured ones, else every known one."""
    return sorted(settings.kafka_legacy_reply_systems or KNOWN_ADAPTERS)


def names_under(prefix: str) -> dict[str, Any]:
    """Settings giving a consumer group, input topics and dead-letter topics of their own.

    For a benchmark or a test that runs streams beside a stack without touching its topics:
    every consumed topic, every DLQ and the group are named under `prefix`, and only the
    made-up system `<prefix>-system` has a replies topic.
    """
    return {
        "kafka_consumer_group": f"{prefix}-streams",
        "kafka_topic_submissions": f"{prefix}.submissions",
        "kafka_topic_submissions_dlq": f"{prefix}.submissions.dlq",
        "kafka_topic_birth_notices": f"{prefix}.birth-notices",
        "kafka_topic_birth_notices_dlq": f"{prefix}.birth-notices.dlq",
        "kafka_topic_legacy_replies_dlq": f"{prefix}.replies.dlq",
        "kafka_legacy_reply_systems": (f"{prefix}-system",),
    }


def tellonce_topics(settings: Settings, systems: Iterable[str] | None = None) -> list[str]:
    """The names of every topic tellonce reads or writes."""
    systems = sorted(set(systems if systems is not None else KNOWN_ADAPTERS) | set(reply_systems(settings)))
    names = [
        settings.kafka_topic_submissions,
        settings.kafka_topic_submissions_dlq,
        settings.kafka_topic_bundle_events,
        settings.kafka_topic_birth_notices,
        settings.kafka_topic_birth_notices_dlq,
        settings.kafka_topic_legacy_replies_dlq,
    ]
    for system in systems:
        names += [legacy_requests_topic(system), legacy_replies_topic(system)]
    return list(dict.fromkeys(names))


def personal_data_topics(settings: Settings, systems: Iterable[str] | None = None) -> list[str]:
    """The topics that carry residents' data: every topic but `bundle-events`."""
    return [name for name in tellonce_topics(settings, systems) if name != settings.kafka_topic_bundle_events]


async def ensure_topics(settings: Settings, systems: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    Existing topics are left as they are (partitions, replication and configs are not changed).
    New topics that carry personal data get `retention.ms` from `Settings.retention_period`
    where the broker accepts topic configs (see `infra.kafka.create_topics`).

    Raises:
        aiokafka.errors.KafkaError: the cluster refused for another reason than "exists".
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=f"{settings.kafka_client_id}-admin",
        **parse_security(security(settings)),
    )
    await admin.start()
    try:
        wanted = tellonce_topics(settings, systems)
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        personal = set(personal_data_topics(settings, systems))
        return await create_topics(admin, settings, missing, personal=personal)
    finally:
        await admin.close()
