"""The message-queue adapter base and CRA's ABA adapter without a broker: message, errors, replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.availability import CRA_ONLINE_HOURS
from adapters.cra_aba import CraAbaAdapter
from adapters.message_queue import (
    MessageQueueAdapter,
    UnreadableReplyError,
    message_id,
    producer_options,
    read_reply,
)
from adapters.samples import NEWBORN_FIELDS as NEWBORN
from adapters.sdk import CallContext, StepRequest, TransientError
from infra.settings import LegacySystemSettings, Settings
from tests.conftest import free_port

KEY = "0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11:canada_child_benefit:submit"
SIN = "046454286"


def context(timeout: timedelta = timedelta(seconds=5), key: str = KEY) -> CallContext:
    return CallContext(
        idempotency_key=key,
        bundle_ref=key.split(":", maxsplit=1)[0],
        step_id="canada_child_benefit",
        operation="submit",
        attempt=1,
        deadline=datetime.now(UTC) + timeout,
    )


def settings_for(bootstrap: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": bootstrap,
        "legacy_systems": {},
        **overrides,
    }
    return Settings(**values)


def adapter_at(port: int) -> CraAbaAdapter:
    return CraAbaAdapter.from_settings(settings_for(f"127.0.0.1:{port}"))


def personal_values() -> list[str]:
    parent, child = NEWBORN["birth_parent"], NEWBORN["child"]
    return [SIN, parent["surname"].upper(), parent["given_names"].upper(), child["given_names"].upper()]


def test_cra_gets_a_flat_upper_case_record_without_marital_status() -> None:
    key, value, _ = adapter_at(free_port()).message(context(), StepRequest(fields=NEWBORN))
    sent = json.loads(value)["fields"]
    assert sent["registration_number"] == "ON-2026-0000042"
    assert sent["child_given_name"] == "ÉLODIE"
    assert sent["child_birth_date"] == "20260131"
    assert sent["applicant_birth_place"] == "GATINEAU, QC"
    assert sent["applicant_sin"] == SIN
    assert sent["mailing_postal_code"] == "K1A0B1"
    assert sent["correspondence_language"] == "F"
    assert "marital" not in value.decode()
    assert key == KEY.encode()


def test_the_request_message_correlates_by_key_and_keeps_personal_data_in_the_value() -> None:
    adapter = adapter_at(free_port())
    key, value, headers = adapter.message(context(), StepRequest(fields=NEWBORN))
    assert dict(headers) == {
        "correlation-id": KEY.encode(),
        "reply-to": b"legacy.cra-aba.replies",
        "content-type": b"application/json",
        "message-type": b"cra-aba.submit",
        "message-id": message_id(KEY).encode(),
    }
    assert adapter.requests_topic == "legacy.cra-aba.requests"
    envelope = key + b"".join(name.encode() + v for name, v in headers)
    assert not [v for v in personal_values() if v.encode() in envelope]
    assert all(v.encode() in value for v in personal_values())


def test_the_message_id_is_stable_per_key_and_reveals_nothing_of_it() -> None:
    assert message_id(KEY) == message_id(KEY)
    assert message_id(KEY) != message_id(KEY + ":r1")
    assert message_id(KEY).startswith("MQ-")
    assert KEY.split(":", maxsplit=1)[0] not in message_id(KEY)


def test_settings_give_the_producer_and_the_calendar() -> None:
    settings = settings_for(
        "kafka-1:9093,kafka-2:9093",
        kafka_idempotent_producer=True,
        legacy_systems={"cra-aba": LegacySystemSettings(availability=CRA_ONLINE_HOURS)},
    )
    options = producer_options(settings)
    assert options["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9093"]
    assert (options["acks"], options["enable_idempotence"]) == ("all", True)
    assert CraAbaAdapter.from_settings(settings).availability == CRA_ONLINE_HOURS
    with pytest.raises(ValueError, match="SASL"):
        CraAbaAdapter.from_settings(settings_for("kafka:9093", kafka_security_protocol="SASL_SSL"))


async def test_nothing_connects_before_the_first_call_and_closing_an_idle_adapter_is_harmless() -> None:
    adapter = adapter_at(free_port())  # nothing listens there: building it must not care
    assert isinstance(adapter, MessageQueueAdapter)
    await adapter.aclose()
    await adapter.aclose()


async def test_an_unreachable_broker_is_transient_and_the_next_call_tries_again() -> None:
    adapter = adapter_at(free_port())
    try:
        for _ in range(2):
            with pytest.raises(TransientError) as caught:
                await adapter.submit(context(), StepRequest(fields=NEWBORN))
            assert caught.value.code == "broker_unavailable"
            assert SIN not in str(caught.value) and KEY not in str(caught.value)
    finally:
        await adapter.aclose()


@contextlib.asynccontextmanager
async def silent_broker() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers a Kafka request."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_broker_that_never_acknowledges_ends_the_call_at_its_deadline() -> None:
    async with silent_broker() as port:
        adapter = adapter_at(port)
        try:
            # The outer bound only keeps a broken adapter from hanging the suite.
            async with asyncio.timeout(20):
                with pytest.raises(TransientError) as caught:
                    await adapter.submit(
                        context(timeout=timedelta(milliseconds=500)), StepRequest(fields=NEWBORN)
                    )
            assert caught.value.code == "timeout"
        finally:
            await adapter.aclose()


async def test_no_time_left_sends_nothing() -> None:
    adapter = adapter_at(free_port())
    with pytest.raises(TransientError) as caught:
        await adapter.submit(context(timeout=timedelta(seconds=-1)), StepRequest(fields=NEWBORN))
    assert caught.value.code == "deadline_passed"
    assert adapter._producer is None


def test_a_reply_record_reads_as_an_async_reply_named_by_its_position() -> None:
    value = json.dumps(
        {
            "correlation_id": KEY,
            "outcome": "rejected",
            "code": "aba_refused",
            "message": {"en": "Refused.", "fr": "Refusé."},
        }
    ).encode()
    reply = read_reply("legacy.cra-aba.replies", 2, 41, value)
    assert (reply.correlation_id, reply.outcome, reply.code) == (KEY, "rejected", "aba_refused")
    assert reply.reply_id == "legacy.cra-aba.replies:2:41"
    assert reply.message is not None and reply.message.fr == "Refusé."
    # A code that is not a plain identifier may hold data: it is dropped, the reply kept.
    odd = read_reply("t", 0, 0, value.replace(b"aba_refused", SIN.encode()))
    assert odd.code is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"correlation_id": ', "malformed_json"),
        (b"", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (json.dumps({"correlation_id": KEY, "outcome": "maybe"}).encode(), "reply_invalid"),
        (json.dumps({"outcome": "accepted"}).encode(), "reply_invalid"),
    ],
)
def test_an_unreadable_reply_says_why_without_quoting_it(value: bytes, reason: str) -> None:
    with pytest.raises(UnreadableReplyError) as caught:
        read_reply("t", 0, 0, value)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
