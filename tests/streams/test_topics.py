"""Topics that carry personal data are created with the retention period; bundle-events keeps the default.

On the real broker: Tansu 0.6 takes `retention.ms` at creation and reports it back (it refuses
AlterConfigs, so an existing topic is never changed). A broker that refuses the configs still
gets its topics, without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from structlog.testing import capture_logs

from infra.kafka import create_topics
from infra.settings import Settings
from infra.streams.topics import ensure_topics, names_under
from tests.streams.conftest import Lane

RETENTION_MS = str(int(timedelta(days=30).total_seconds() * 1000))


async def topic_configs(lane: Lane, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=lane.settings.kafka_target)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for _, _, _, name, entries in response.resources:
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


@pytest.mark.integration
async def test_topics_with_personal_data_are_kept_for_the_retention_period_only(shared_lane: Lane) -> None:
    lane = shared_lane
    settings = lane.settings
    assert settings.retention_period == timedelta(days=30)
    # The lane's own topics were created by ensure_topics, as `tellonce dev` and create-topics do.
    personal = [
        settings.kafka_topic_submissions,
        settings.kafka_topic_submissions_dlq,
        settings.kafka_topic_birth_notices,
        settings.kafka_topic_birth_notices_dlq,
        settings.kafka_topic_legacy_replies_dlq,
        f"legacy.{lane.name}-system.replies",
    ]
    configs = await topic_configs(lane, personal)
    assert {topic: configs[topic].get("retention.ms") for topic in personal} == dict.fromkeys(
        personal, RETENTION_MS
    )


@pytest.mark.integration
async def test_bundle_events_keep_the_cluster_default(lane: Lane) -> None:
    events = f"{lane.name}.bundle-events"
    settings = Settings(
        **{**lane.settings.model_dump(), "kafka_topic_bundle_events": events, "kafka_partitions": 1}
    )
    assert await ensure_topics(settings, systems=[]) == [events]
    assert "retention.ms" not in (await topic_configs(lane, [events]))[events]


@dataclass
class RefusingAdmin:
    """An admin client of a broker that refuses any topic config (INVALID_CONFIG, code 40)."""

    asked: list[list[NewTopic]] = field(default_factory=list)

    async def create_topics(self, topics: list[NewTopic]) -> Any:
        self.asked.append(topics)
        errors = [(t.name, 40 if t.topic_configs else 0, None) for t in topics]
        return type("Response", (), {"topic_errors": errors})()


async def test_a_broker_that_refuses_topic_configs_gets_its_topics_without_them() -> None:
    settings = Settings(**names_under("refusing"))
    admin = RefusingAdmin()
    with capture_logs() as logs:
        created = await create_topics(
            cast("AIOKafkaAdminClient", admin),
            settings,
            ["refusing.submissions", "refusing.bundle-events"],
            personal={"refusing.submissions"},
        )
    assert sorted(created) == ["refusing.bundle-events", "refusing.submissions"]
    first, second = admin.asked
    assert {t.name: t.topic_configs for t in first} == {
        "refusing.submissions": {"retention.ms": RETENTION_MS, "segment.ms": "86400000"},
        "refusing.bundle-events": {},
    }
    assert [(t.name, t.topic_configs) for t in second] == [("refusing.submissions", {})]
    assert [e["event"] for e in logs] == ["kafka.topic_configs_refused"]
    assert logs[0]["topics"] == ["refusing.submissions"]
