"""Every topic tellonce uses, and a function that creates the missing ones.

`tellonce dev` calls it once the broker is up; in production run `tellonce streams
create-topics` (it needs the right to create topics) or provision the same list yourself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from faststream.kafka.security import parse_security

from adapters.registry import KNOWN_ADAPTERS
from infra.kafka import bootstrap_servers, security
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


async def ensure_topics(settings: Settings, systems: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    Existing topics are left as they are (partitions and replication are not changed).

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
        response = await admin.create_topics(
            [NewTopic(name, settings.kafka_partitions, settings.kafka_replication_factor) for name in missing]
        )
        created = []
        for topic, code, *_ in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif not issubclass(for_code(code), TopicAlreadyExistsError):  # created meanwhile by another
                raise for_code(code)(f"cannot create topic {topic}")
        return created
    finally:
        await admin.close()
