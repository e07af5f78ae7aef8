"""The message-queue adapter base and CRA's ABA adapter without a broker: message, sealing, replies."""

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
    UnreadableMessageError,
    UnreadableReplyError,
    message_id,
    open_reply,
    open_request,
    producer_options,
    read_reply,
    request_purpose,
    seal_reply,
)
from adapters.samples import NEWBORN_FIELDS as NEWBORN
from adapters.sdk import CallContext, StepRequest, TransientError
from infra.crypto import Keyring
from infra.settings import LegacySystemSettings, Settings
from tests.conftest import free_port
from tests.encryption import TEST_KEYRING

KEY = "0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11:canada_child_benefit:submit"
SIN = "046454286"
KEYRING = TEST_KEYRING.keyring()
OTHER_KEYRING = Keyring({"other-key": bytes(32)}, active="other-key")
SYSTEM = "cra-aba"


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


def cleartext_adapter() -> CraAbaAdapter:
    return CraAbaAdapter(producer_options(settings_for(f"127.0.0.1:{free_port()}")), sealer=None)


def test_cra_gets_a_flat_upper_case_record_without_marital_status() -> None:
    key, value, _ = adapter_at(free_port()).message(context(), StepRequest(fields=NEWBORN))
    sent = open_request(SYSTEM, KEY, value, KEYRING)
    assert sent["registration_number"] == "ON-2026-0000042"
    assert sent["child_given_name"] == "ÉLODIE"
    assert sent["child_birth_date"] == "20260131"
    assert sent["applicant_birth_place"] == "GATINEAU, QC"
    assert sent["applicant_sin"] == SIN
    assert sent["mailing_postal_code"] == "K1A0B1"
    assert sent["correspondence_language"] == "F"
    assert "marital" not in json.dumps(sent)
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
    # The value carries them sealed: nothing readable, unless encryption is off.
    assert not [v for v in personal_values() if v.encode() in value]
    assert json.loads(value)["fields"].startswith("tlc1.test-key-1.")
    _, clear, _ = cleartext_adapter().message(context(), StepRequest(fields=NEWBORN))
    assert all(v.encode() in clear for v in personal_values())


def test_sealed_request_fields_open_only_for_their_system_and_correlation_id() -> None:
    _, value, _ = adapter_at(free_port()).message(context(), StepRequest(fields=NEWBORN))
    assert open_request(SYSTEM, KEY, value, KEYRING)["applicant_sin"] == SIN
    moved = [(SYSTEM, KEY + ":r1"), ("esdc-sin", KEY)]
    for system, key in moved:
        with pytest.raises(UnreadableMessageError) as caught:
            open_request(system, key, value, KEYRING)
        assert (caught.value.reason, caught.value.key_id, caught.value.unknown_key) == (
            "undecryptable",
            "test-key-1",
            False,
        )
    with pytest.raises(UnreadableMessageError) as caught:
        open_request(SYSTEM, KEY, value, OTHER_KEYRING)
    assert (caught.value.reason, caught.value.unknown_key) == ("undecryptable", True)


def test_a_request_in_the_clear_is_refused_by_a_system_that_holds_the_key() -> None:
    _, clear, _ = cleartext_adapter().message(context(), StepRequest(fields=NEWBORN))
    with pytest.raises(UnreadableMessageError) as caught:
        open_request(SYSTEM, KEY, clear, KEYRING)
    assert caught.value.reason == "not_encrypted"
    assert open_request(SYSTEM, KEY, clear, None)["applicant_sin"] == SIN
    sealed = json.dumps({"fields": KEYRING.seal(b"{}", request_purpose(SYSTEM, KEY))}).encode()
    with pytest.raises(UnreadableMessageError) as caught:
        open_request(SYSTEM, KEY, sealed, None)  # encryption off here: nothing to open it with
    assert (caught.value.reason, caught.value.key_id) == ("undecryptable", None)
    deep = b'{"fields": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for malformed in (b"{", b'{"fields": [1]}', b'{"fields": {}, "more": 1}', deep):
        with pytest.raises(UnreadableMessageError) as caught:
            open_request(SYSTEM, KEY, malformed, None)
        assert caught.value.reason == "malformed_request"


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


REFUSAL = {
    "correlation_id": KEY,
    "outcome": "rejected",
    "code": "aba_refused",
    "message": {"en": "Refused.", "fr": "Refusé."},
}


def sealed_reply(reply: dict[str, Any], system: str = SYSTEM, sealer: Keyring = KEYRING) -> bytes:
    return json.dumps(seal_reply(system, reply, sealer)).encode()


def test_a_reply_record_reads_as_an_async_reply_named_by_its_position() -> None:
    value = sealed_reply(REFUSAL)
    assert set(json.loads(value)) == {"correlation_id", "reply"}
    assert b"Refus" not in value and b"aba_refused" not in value
    reply = read_reply("legacy.cra-aba.replies", 2, 41, value, system=SYSTEM, sealer=KEYRING)
    assert (reply.correlation_id, reply.outcome, reply.code) == (KEY, "rejected", "aba_refused")
    assert reply.reply_id == "legacy.cra-aba.replies:2:41"
    assert reply.message is not None and reply.message.fr == "Refusé."
    # A code that is not a plain identifier may hold data: it is dropped, the reply kept.
    odd = read_reply("t", 0, 0, sealed_reply({**REFUSAL, "code": SIN}), system=SYSTEM, sealer=KEYRING)
    assert odd.code is None
    # Where encryption is off, replies travel in the clear.
    clear = read_reply("t", 0, 0, json.dumps(REFUSAL).encode(), system=SYSTEM, sealer=None)
    assert (clear.outcome, clear.code) == ("rejected", "aba_refused")


@pytest.mark.parametrize(
    ("data", "sealer", "reason"),
    [
        (REFUSAL, KEYRING, "not_encrypted"),
        ({**seal_reply(SYSTEM, REFUSAL, KEYRING), "outcome": "accepted"}, KEYRING, "not_encrypted"),
        (seal_reply(SYSTEM, REFUSAL, KEYRING), OTHER_KEYRING, "undecryptable"),
        (seal_reply(SYSTEM, REFUSAL, KEYRING), None, "undecryptable"),
        (seal_reply("esdc-sin", REFUSAL, KEYRING), KEYRING, "undecryptable"),
        ({**seal_reply(SYSTEM, REFUSAL, KEYRING), "correlation_id": KEY + ":r1"}, KEYRING, "undecryptable"),
        ({"reply": seal_reply(SYSTEM, REFUSAL, KEYRING)["reply"]}, KEYRING, "reply_invalid"),
    ],
)
def test_a_reply_that_is_not_sealed_for_its_system_and_correlation_id_does_not_open(
    data: dict[str, Any], sealer: Keyring | None, reason: str
) -> None:
    with pytest.raises(UnreadableMessageError) as caught:
        open_reply(SYSTEM, data, sealer)
    assert caught.value.reason == reason


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
        read_reply("t", 0, 0, value, system=SYSTEM, sealer=None)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
