"""Birth notices from `vital-events.birth-notices` reach their matcher workflow; invalid ones go
to the birth-notices DLQ with reasons that never repeat a value, and, with a keyring, notices
whose birth facts are not sealed for them are refused and kept sealed in the DLQ."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from infra.streams.dlq import H_REASONS, H_SEALED
from infra.streams.sealing import seal_notice
from tests.privacy_scan import hits
from tests.streams.conftest import (
    KEYRING,
    ROOT,
    Lane,
    encode,
    kcat_produce,
    original,
    raw_bytes,
    read_topic,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration]


async def test_notices_are_delivered_or_dead_lettered(shared_lane: Lane) -> None:
    lane = shared_lane
    settings = lane.settings
    notice = json.loads((ROOT / "examples" / "birth-notices" / "matching.json").read_text())
    moved = {**seal_notice(KEYRING, notice), "notice_id": "NLB-2026-0009999"}
    records = [
        (notice["notice_id"].encode(), encode(seal_notice(KEYRING, notice))),
        (b"other-schema", encode(seal_notice(KEYRING, {**notice, "schema": "tellonce.birth-notice/v0"}))),
        (b"not-utf8", b'{"schema": "tellonce.birth-notice/v1", "notice_id": "\xff"}'),
        (b"in-the-clear", encode(notice)),
        (b"moved", encode(moved)),
    ]
    assert hits(records[0][1], "sealed notice") == [] and hits(records[3][1], "cleartext notice") != []
    kcat_produce(lane, settings.kafka_topic_birth_notices, records)
    await wait_caught_up(
        lane, settings.kafka_topic_birth_notices, f"{settings.kafka_consumer_group}.birth-notices"
    )

    query = f"TaskQueue = '{lane.bundle_queue}' AND WorkflowType = 'BirthNoticeMatchWorkflow'"
    deadline = time.monotonic() + 20
    while (await lane.client.count_workflows(query)).count != 1:
        assert time.monotonic() < deadline, "no matcher started for the notice"
        await asyncio.sleep(0.3)

    dead = await read_topic(lane, settings.kafka_topic_birth_notices_dlq, 4)
    assert hits(raw_bytes(dead), "notices dlq") == []
    sent = dict(records)
    codes = {}
    for record in dead:
        assert record.key is not None and original(record) == sent[record.key]
        assert record.header(H_SEALED) == b"test-key-1"
        reasons = json.loads(record.header(H_REASONS) or b"")
        assert all("0987654324" not in r["message"] for r in reasons)
        codes[record.key] = {r["code"] for r in reasons}
    assert codes == {
        b"other-schema": {"schema"},
        b"not-utf8": {"encoding"},
        b"in-the-clear": {"not_encrypted"},
        b"moved": {"undecryptable"},
    }
