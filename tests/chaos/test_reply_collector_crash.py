"""A batch system's reply collection lost with its worker (SIGKILL mid-collection) must be retried
within a minute, not hold every batch reply for five.

Found by the long resilience run: the worker was SIGKILLed while the esdc-sin collector's
activity was in flight; that activity has a 5-minute start-to-close timeout and no heartbeat
timeout, so the server waited the full 5 minutes before retrying it, and every newborn bundle
waiting for its SIN reply waited with it (34 bundles stalled from 180 s to 420 s of the run).

The server notices a lost activity only when its heartbeat timeout (if any) or its start-to-close
timeout passes: that is what this test reads from the collector's history. (The time-skipping
server cannot stand in for the crash: it does not skip time while an activity runs.)
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.replies import CollectorInput
from workflows.names import bundle_task_queue
from workflows.reply_collector import BatchReplyCollectorWorkflow

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

LOST_COLLECTION_NOTICED_WITHIN = timedelta(minutes=1)


async def first_collection(handle: WorkflowHandle[BatchReplyCollectorWorkflow, None]) -> HistoryEvent:
    """The collector's first ActivityTaskScheduled event (no activity worker: it stays scheduled)."""
    for _ in range(100):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                return event
        await asyncio.sleep(0.1)
    pytest.fail("the collector scheduled no collection")


async def test_a_collection_lost_with_its_worker_is_noticed_within_a_minute(
    dev_env: WorkflowEnvironment,
) -> None:
    client, prefix = dev_env.client, f"t-{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=bundle_task_queue(prefix), workflows=[BatchReplyCollectorWorkflow]):
        handle = await client.start_workflow(
            BatchReplyCollectorWorkflow.run,
            CollectorInput(system="esdc-sin", task_queue_prefix=prefix, interval=timedelta(seconds=2)),
            id=f"{prefix}.collector",
            task_queue=bundle_task_queue(prefix),
        )
        try:
            scheduled = (await first_collection(handle)).activity_task_scheduled_event_attributes
        finally:
            await handle.terminate("test over")
    heartbeat = scheduled.heartbeat_timeout.ToTimedelta()
    start_to_close = scheduled.start_to_close_timeout.ToTimedelta()
    noticed_after = heartbeat if heartbeat > timedelta(0) else start_to_close
    assert noticed_after <= LOST_COLLECTION_NOTICED_WITHIN, (
        f"a collection lost with its worker is retried only after {noticed_after} "
        f"(heartbeat timeout {heartbeat}, start-to-close {start_to_close})"
    )
