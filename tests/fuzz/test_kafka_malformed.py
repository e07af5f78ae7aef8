"""Malformed bytes on `tellonce.submissions`: every record is dead-lettered with a reason, the
consumer keeps going, and a valid submission sent after them still starts its bundle.

Real servers: the session's Temporal dev server, a Tansu broker and the streams role
in-process. The hostile records are bytes (whatever the envelope format, they must be refused);
the ones that need a well-formed envelope to reach validation (a script in a name, thousands of
unknown fields) and the final valid submission are built with the streams tests' own helpers,
so they follow the envelope format wherever it goes. Every record goes to one partition: a
record that blocked its partition would hold back the valid one behind it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from temporalio.service import RPCError

from infra.streams.app import Streams
from infra.streams.dlq import H_OFFSET, H_PARTITION, H_REASONS
from infra.streams.records import Record
from infra.streams.submissions import tracking_id_for
from tests.streams.conftest import (
    Lane,
    StreamsProcess,
    base_submission,
    encode,
    envelope,
    read_topic,
    sealed,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

PARTITION = 0
SCRIPTS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')


@dataclass(frozen=True)
class Hostile:
    """One hostile record: what it is, its key, value and headers."""

    name: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def valid_envelope(submission_id: uuid.UUID, submission: dict[str, Any], **overrides: Any) -> bytes:
    """An envelope as the streams tests build a partner's record (sealed when they seal)."""
    return encode(sealed(envelope(submission_id, submission, **overrides)))


def with_name(name: str) -> dict[str, Any]:
    submission = base_submission()
    submission["child"]["given_names"] = name
    return submission


def hostile_records() -> list[Hostile]:
    rng = random.Random(20261206)  # fixed: a failure names the record that caused it
    records = [
        Hostile(f"random bytes {i}", f"random-{i}".encode(), rng.randbytes(rng.randint(1, 4096)))
        for i in range(8)
    ]
    script_ids = [uuid.uuid4() for _ in SCRIPTS]
    records += [
        Hostile("invalid UTF-8", b"bad-utf8", b'{"schema": "tellonce.submission/v1", "channel": "\xff\xfe"}'),
        Hostile("UTF-16", b"utf16", json.dumps({"schema": "tellonce.submission/v1"}).encode("utf-16")),
        Hostile("truncated JSON", b"truncated", valid_envelope(uuid.uuid4(), base_submission())[:-40]),
        Hostile("nested lists 100k deep", b"deep-lists", b"[" * 100_000 + b"]" * 100_000),
        Hostile("nested objects 5000 deep", b"deep-objects", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        Hostile("NaN", b"nan", b'{"schema": NaN}'),
        Hostile("5000-digit number", b"digits", b'{"schema": ' + b"9" * 5000 + b"}"),
        Hostile("empty value", b"empty", b""),
        Hostile("tombstone", b"tombstone", None),
        Hostile("no key, garbage", None, b"\x00\x01\x02"),
        Hostile("a JSON array", b"array", b"[]"),
        Hostile("a JSON string", b"string", b'"<script>alert(1)</script>"'),
        Hostile("null", b"null", b"null"),
        Hostile(
            "wrong types", b"types", b'{"schema": 7, "submission_id": 5, "bundle_id": [], "channel": {}}'
        ),
        Hostile(
            "script in the envelope",
            b"envelope-script",
            json.dumps(
                {
                    "schema": "tellonce.submission/v1",
                    "submission_id": str(uuid.uuid4()),
                    "bundle_id": "<script>alert(1)</script>",
                    "channel": '"><img src=x onerror=alert(1)>',
                    "submission": {"child": {"given_names": "<script>alert(1)</script>"}},
                }
            ).encode(),
        ),
        Hostile("undecodable headers and key", b"\xff\xfe\x00", b"{", (("x-\u00e9", b"\xff\xfe"), ("", b""))),
        *(
            Hostile(f"script in a name {i}", str(sid).encode(), valid_envelope(sid, with_name(script)))
            for i, (sid, script) in enumerate(zip(script_ids, SCRIPTS, strict=True))
        ),
    ]
    return records


async def produce(
    lane: Lane, records: list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]]
) -> None:
    """Send records in order to one partition, as a (careless or hostile) partner's client would."""
    producer = AIOKafkaProducer(bootstrap_servers=lane.settings.kafka_target, max_request_size=2_000_000)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(
                lane.settings.kafka_topic_submissions,
                value,
                key=key,
                partition=PARTITION,
                headers=list(headers),
            )
    finally:
        await producer.stop()


async def started(lane: Lane, tracking_id: str, budget: float) -> bool:
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        try:
            await lane.client.get_workflow_handle(tracking_id).describe()
        except RPCError:
            await asyncio.sleep(0.3)
        else:
            return True
    return False


@asynccontextmanager
async def in_process(lane: Lane) -> AsyncIterator[None]:
    async with Streams(lane.settings, client=lane.client).running():
        yield


@asynccontextmanager
async def killed_after(lane: Lane, tmp_path: Path) -> AsyncIterator[None]:
    """The role as a process, killed at the end: a stuck batch would hold a graceful stop for 30 s."""
    process = StreamsProcess(lane, tmp_path / "streams.log")
    try:
        await process.wait_healthy()
        yield
    finally:
        process.kill()


async def assert_dead_lettered_and_consumer_goes_on(
    lane: Lane, hostile: list[Hostile], budget: float, streams: AbstractAsyncContextManager[None]
) -> None:
    """Send the hostile records then a valid submission; each hostile one must be dead-lettered
    with a reason, every record committed past, and the valid one started."""
    valid_id = uuid.uuid4()
    valid = (str(valid_id).encode(), valid_envelope(valid_id, base_submission()), ())
    topic = lane.settings.kafka_topic_submissions
    await produce(lane, [(h.key, h.value, h.headers) for h in hostile] + [valid])

    async with streams:
        assert await started(lane, tracking_id_for(valid_id), budget), "the valid submission never started"
        await wait_caught_up(lane, topic, lane.settings.kafka_consumer_group, timeout=budget)

    dead = await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, len(hostile))
    reasons = {int(r.header(H_OFFSET) or b"-1"): reasons_of(r) for r in dead if r.header(H_PARTITION) == b"0"}
    missing = [h.name for offset, h in enumerate(hostile) if not reasons.get(offset)]
    assert not missing, f"not dead-lettered with a reason: {missing}"
    assert len(dead) == len(hostile), "the valid submission was dead-lettered, or a record twice"
    for record in dead:
        shown = b"".join(value for name, value in record.headers if name.startswith("tellonce-dlq-"))
        assert b"<script" not in shown and b"onerror" not in shown
    for offset, h in enumerate(hostile):
        if h.name.startswith("script in a name"):
            assert ("name_characters", "submission.child.given_names") in reasons[offset], reasons[offset]
            assert h.key is not None
            assert not await started(lane, tracking_id_for(uuid.UUID(h.key.decode())), budget=0.1), h.name


async def test_malformed_records_are_dead_lettered_and_the_next_valid_one_starts(lane: Lane) -> None:
    await assert_dead_lettered_and_consumer_goes_on(lane, hostile_records(), 60, in_process(lane))


async def test_records_whose_dead_letter_would_be_too_large_do_not_block_their_partition(
    lane: Lane, tmp_path: Path
) -> None:
    many_fields = base_submission()
    many_fields["consents"] = {f"k{i}": True for i in range(10_000)}
    many_id = uuid.uuid4()
    oversize = [
        Hostile("800 kB value", b"oversize", b'{"pad": "' + b"a" * 800_000 + b'"}'),
        Hostile("10,000 unknown fields", str(many_id).encode(), valid_envelope(many_id, many_fields)),
    ]
    await assert_dead_lettered_and_consumer_goes_on(lane, oversize, 10, killed_after(lane, tmp_path))


def reasons_of(record: Record) -> set[tuple[str, str]]:
    return {(r["code"], r["path"]) for r in json.loads(record.header(H_REASONS) or b"[]")}
