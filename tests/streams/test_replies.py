"""Legacy replies from `legacy.<system>.replies` reach the running bundle as a signal; the rest
goes to the legacy replies DLQ with a reason. Answers travel sealed: one in the clear, or sealed
for another reply, is refused."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from temporalio.worker import Worker

from adapters.message_queue import seal_reply
from infra.crypto import Keyring
from infra.streams.dlq import H_REASONS, H_TOPIC
from tests.streams.conftest import (
    KEYRING,
    Lane,
    encode,
    kcat_produce,
    original,
    raw_bytes,
    read_topic,
    wait_caught_up,
)
from tests.streams.reply_recorder import ReplyRecorder
from workflows.models import LegacyReply
from workflows.names import idempotency_key, legacy_replies_topic

pytestmark = [pytest.mark.integration]


async def test_replies_are_signalled_or_dead_lettered(shared_lane: Lane) -> None:
    lane = shared_lane
    (system,) = lane.settings.kafka_legacy_reply_systems
    topic = legacy_replies_topic(system)
    queue = f"{lane.name}.recorder"
    async with Worker(lane.client, task_queue=queue, workflows=[ReplyRecorder]):
        open_id, closed_id = f"{lane.name}-open", f"{lane.name}-closed"
        bundle = await lane.client.start_workflow(ReplyRecorder.run, id=open_id, task_queue=queue)
        closed = await lane.client.start_workflow(ReplyRecorder.run, id=closed_id, task_queue=queue)
        await closed.signal(ReplyRecorder.finish)
        await closed.result()

        matched = idempotency_key(open_id, "esdc-sin", "submit")
        reply = {
            "correlation_id": matched,
            "outcome": "accepted",
            "reference": "SIN-REQ-0042",
            "message": {"en": "Request received", "fr": "Demande reçue"},
        }

        def sealed(**changes: str) -> bytes:
            return encode(seal_reply(system, {**reply, **changes}, KEYRING))

        foreign = Keyring({"k20990101-0a7e2f": bytes(range(1, 33))}, active="k20990101-0a7e2f")
        records = [
            (matched.encode(), sealed()),
            (b"unknown", sealed(correlation_id=idempotency_key(str(uuid.uuid4()), "s", "op"))),
            (b"closed", sealed(correlation_id=idempotency_key(closed_id, "esdc-sin", "submit"))),
            (b"garbled", b'{"correlation_id": '),
            (b"not-ours", sealed(correlation_id="no colons here")),
            (b"bad-outcome", sealed(outcome="maybe")),
            (b"in-the-clear", encode(reply)),
            (b"other-key", encode(seal_reply(system, reply, foreign))),
            # Another reply's sealed answer under this correlation id: it does not open.
            (
                b"moved",
                encode({**seal_reply(system, reply, KEYRING), "correlation_id": matched + ":r1"}),
            ),
        ]
        kcat_produce(lane, topic, records)
        await wait_caught_up(lane, topic, f"{lane.settings.kafka_consumer_group}.legacy-replies")

        deadline = time.monotonic() + 20
        got: list[LegacyReply] = []
        while not got and time.monotonic() < deadline:
            got = await bundle.query(ReplyRecorder.received)
            await asyncio.sleep(0.2)
        assert len(got) == 1
        assert got[0].correlation_id == matched
        assert (got[0].system, got[0].outcome, got[0].reference) == (system, "accepted", "SIN-REQ-0042")
        assert got[0].message is not None and got[0].message.fr == "Demande reçue"
        # The record's position names the reply, so the workflow can ignore a redelivered copy.
        assert got[0].reply_id is not None
        reply_topic, partition, offset = got[0].reply_id.rsplit(":", 2)
        assert reply_topic == topic and partition.isdigit() and offset.isdigit()
        await bundle.signal(ReplyRecorder.finish)

    dead = await read_topic(lane, lane.settings.kafka_topic_legacy_replies_dlq, 8)
    assert b"Demande re" not in raw_bytes(dead)  # the answer stays sealed in the DLQ too
    sent = dict(records)
    codes = {}
    for record in dead:
        assert record.key is not None and original(record) == sent[record.key]
        assert record.header(H_TOPIC) == topic.encode()
        codes[record.key] = {r["code"] for r in json.loads(record.header(H_REASONS) or b"")}
    assert codes == {
        b"unknown": {"no_open_bundle"},
        b"closed": {"no_open_bundle"},
        b"garbled": {"malformed_json"},
        b"not-ours": {"bad_correlation_id"},
        b"bad-outcome": {"reply_invalid"},
        b"in-the-clear": {"not_encrypted"},
        b"other-key": {"undecryptable"},
        b"moved": {"undecryptable"},
    }
