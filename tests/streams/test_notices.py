"""Birth notices from `vital-events.birth-notices` reach their matcher workflow; invalid ones go
to the birth-notices DLQ with reasons that never repeat a value."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from infra.streams.dlq import H_REASONS
from tests.streams.conftest import ROOT, Lane, kcat_produce, read_topic, wait_caught_up

pytestmark = [pytest.mark.integration]


async def test_notices_are_delivered_or_dead_lettered(shared_lane: Lane) -> None:
    lane = shared_lane
    settings = lane.settings
    notice = json.loads((ROOT / "examples" / "birth-notices" / "matching.json").read_text())
    records = [
        (notice["notice_id"].encode(), json.dumps(notice, ensure_ascii=False).encode()),
        (b"other-schema", json.dumps({**notice, "schema": "tellonce.birth-notice/v0"}).encode()),
        (b"not-utf8", b'{"schema": "tellonce.birth-notice/v1", "notice_id": "\xff"}'),
    ]
    kcat_produce(lane, settings.kafka_topic_birth_notices, records)
    await wait_caught_up(
        lane, settings.kafka_topic_birth_notices, f"{settings.kafka_consumer_group}.birth-notices"
    )

    query = f"TaskQueue = '{lane.bundle_queue}' AND WorkflowType = 'BirthNoticeMatchWorkflow'"
    deadline = time.monotonic() + 20
    while (await lane.client.count_workflows(query)).count != 1:
        assert time.monotonic() < deadline, "no matcher started for the notice"
        await asyncio.sleep(0.3)

    dead = await read_topic(lane, settings.kafka_topic_birth_notices_dlq, 2)
    sent = dict(records)
    codes = {}
    for record in dead:
        assert record.key is not None and record.value == sent[record.key]
        reasons = json.loads(record.header(H_REASONS) or b"")
        assert all("0987654324" not in r["message"] for r in reasons)
        codes[record.key] = {r["code"] for r in reasons}
    assert codes == {b"other-schema": {"schema"}, b"not-utf8": {"encoding"}}
