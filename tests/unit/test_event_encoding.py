"""Status events as Kafka records: CloudEvents binary-mode headers, key, JSON data, and back.

Also the publish activity's error classification, with fake publishers (no broker).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.events import (
    EVENTS_UNAVAILABLE,
    EVENTS_UNEXPECTED,
    EventActivities,
    EventsUnavailableError,
    NotABundleEventError,
    decode_event,
    encode_event,
    producer_config,
)
from infra.settings import Settings
from workflows.models import (
    BUNDLE_STATE_CHANGED,
    EVENT_SOURCE_PREFIX,
    STEP_STATE_CHANGED,
    BundleEvent,
    BundleEventData,
    BundleState,
    EventBatch,
    StepState,
)

TRACKING_ID = "3f1c0a52-8d0e-4d7e-9c55-1f0b8f7f2a10"


@dataclass
class Record:
    """The parts of a consumed Kafka record that `decode_event` reads."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def step_event(sequence: int = 4, time: datetime | None = None) -> BundleEvent:
    return BundleEvent(
        id=f"{TRACKING_ID}:{sequence}",
        type=STEP_STATE_CHANGED,
        source=f"{EVENT_SOURCE_PREFIX}newborn-on",
        subject=TRACKING_ID,
        time=time or datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC),
        data=BundleEventData(
            tracking_id=TRACKING_ID,
            bundle_id="newborn-on",
            definition_version=3,
            channel="kafka",
            external_id="HOSP-2026-000123",
            sequence=sequence,
            bundle_state=BundleState.IN_PROGRESS,
            step_id="sin",
            step_state=StepState.DONE,
            attempts=2,
            reference="SIN-REQ-0000012345",
        ),
    )


def test_headers_are_the_cloudevents_attributes_in_binary_mode() -> None:
    record = encode_event(step_event())

    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": f"{TRACKING_ID}:4".encode(),
        "ce_source": b"/tellonce/bundles/newborn-on",
        "ce_type": b"ca.tellonce.step.state_changed",
        "ce_subject": TRACKING_ID.encode(),
        "ce_time": b"2026-03-14T15:09:26.535897Z",
        "content-type": b"application/json",
    }
    assert len(record.headers) == len(dict(record.headers)), "no header twice"


def test_key_is_the_tracking_id_so_a_bundle_keeps_one_partition() -> None:
    assert encode_event(step_event(1)).key == encode_event(step_event(9)).key == TRACKING_ID.encode()


def test_value_is_the_json_data_and_nothing_outside_bundle_event_data() -> None:
    data = json.loads(encode_event(step_event()).value)

    assert set(data) == set(BundleEventData.model_fields)
    assert data["step_state"] == "done"
    assert data["bundle_state"] == "in_progress"
    assert data["sequence"] == 4


def test_a_bundle_event_without_step_carries_explicit_nulls() -> None:
    event = step_event().model_copy(
        update={
            "type": BUNDLE_STATE_CHANGED,
            "data": BundleEventData(
                tracking_id=TRACKING_ID,
                bundle_id="newborn-on",
                definition_version=3,
                channel="api",
                sequence=1,
                bundle_state=BundleState.RECEIVED,
            ),
        }
    )
    data = json.loads(encode_event(event).value)

    assert data["step_id"] is None and data["step_state"] is None
    assert decode_event(Record(**vars(encode_event(event)))) == event


def test_time_in_another_offset_is_kept_as_an_instant() -> None:
    eastern = timezone(timedelta(hours=-5))
    event = step_event(time=datetime(2026, 3, 14, 10, 9, 26, tzinfo=eastern))
    record = encode_event(event)

    assert dict(record.headers)["ce_time"] == b"2026-03-14T10:09:26-05:00"
    assert decode_event(Record(**vars(record))).time == event.time


def test_decode_round_trip() -> None:
    event = step_event()
    record = encode_event(event)

    assert decode_event(Record(record.key, record.value, record.headers)) == event


@given(
    sequence=st.integers(min_value=1, max_value=10**6),
    bundle_state=st.sampled_from(BundleState),
    step_state=st.none() | st.sampled_from(StepState),
    attempts=st.none() | st.integers(min_value=0, max_value=100),
    code=st.none() | st.from_regex(r"[a-z_]{1,30}", fullmatch=True),
)
def test_decode_round_trip_any_state(
    sequence: int,
    bundle_state: BundleState,
    step_state: StepState | None,
    attempts: int | None,
    code: str | None,
) -> None:
    base = step_event(sequence)
    event = base.model_copy(
        update={
            "data": base.data.model_copy(
                update={
                    "bundle_state": bundle_state,
                    "step_state": step_state,
                    "attempts": attempts,
                    "error_code": code,
                }
            )
        }
    )
    assert decode_event(Record(**vars(encode_event(event)))) == event


def test_decode_ignores_data_fields_added_later() -> None:
    record = encode_event(step_event())
    data = json.loads(record.value) | {"added_in_a_later_version": "x"}

    decoded = decode_event(Record(record.key, json.dumps(data).encode(), record.headers))

    assert decoded == step_event()


def test_decode_refuses_a_record_that_is_not_a_binary_mode_cloudevent() -> None:
    structured = Record(b"k", b'{"specversion": "1.0"}', [("content-type", b"application/cloudevents+json")])
    with pytest.raises(NotABundleEventError):
        decode_event(structured)


def test_decode_refuses_an_unknown_event_type() -> None:
    record = encode_event(step_event())
    headers = [(k, b"com.example.other" if k == "ce_type" else v) for k, v in record.headers]
    with pytest.raises(NotABundleEventError, match="unknown event type"):
        decode_event(Record(record.key, record.value, headers))


def test_decode_refuses_a_record_missing_a_required_attribute() -> None:
    record = encode_event(step_event())
    headers = [(k, v) for k, v in record.headers if k != "ce_source"]
    with pytest.raises(NotABundleEventError):
        decode_event(Record(record.key, record.value, headers))


# ---------------------------------------------------------------------- producer settings


def test_producer_connects_with_the_configured_security() -> None:
    settings = Settings(
        kafka_bootstrap="kafka-1.example:9093, kafka-2.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="tellonce",
        kafka_sasl_password=SecretStr("not-a-real-secret"),
        kafka_client_id="tellonce-worker",
    )
    config = producer_config(settings)

    assert config["bootstrap_servers"] == ["kafka-1.example:9093", "kafka-2.example:9093"]
    assert config["client_id"] == "tellonce-worker"
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "tellonce"
    assert config["ssl_context"] is not None


# ---------------------------------------------------------------------- the activity


class RecordingPublisher:
    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[EventBatch] = []
        self.error = error

    async def publish(self, batch: EventBatch) -> None:
        if self.error is not None:
            raise self.error
        self.batches.append(batch)

    async def close(self) -> None:
        return None


def batch() -> EventBatch:
    return EventBatch(tracking_id=TRACKING_ID, events=[step_event(4), step_event(5)])


async def test_activity_publishes_the_batch_and_counts_it() -> None:
    publisher = RecordingPublisher()
    activities = EventActivities(publisher)

    with capture_logs() as logs:
        published = await ActivityEnvironment().run(activities.publish_bundle_events, batch())

    assert published == 2
    assert publisher.batches == [batch()]
    assert [entry["event"] for entry in logs] == ["events.published"]
    assert logs[0]["first_sequence"] == 4 and logs[0]["last_sequence"] == 5


async def test_broker_outage_is_a_retryable_events_unavailable() -> None:
    activities = EventActivities(RecordingPublisher(EventsUnavailableError("broker unavailable (X)")))

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.publish_bundle_events, batch())

    assert caught.value.type == EVENTS_UNAVAILABLE
    assert not caught.value.non_retryable


async def test_unexpected_error_names_its_type_only() -> None:
    # An unexpected error's message might echo anything; the failure (stored unencrypted by
    # Temporal) and the log carry its type only.
    secret = "046 454 286"
    activities = EventActivities(RecordingPublisher(KeyError(secret)))

    with capture_logs() as logs, pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.publish_bundle_events, batch())

    assert caught.value.type == EVENTS_UNEXPECTED
    assert not caught.value.non_retryable
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None
    assert secret not in repr(logs)
