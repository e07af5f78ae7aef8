"""Engine revision 2: a signal that arrives while a bundle's last inline batch is out.

The server refuses to complete a workflow whose task missed a new signal (a redelivered reply,
say): the task fails as an unhandled command and runs again, and its inline batch, already
published, is published again. Consumers de-duplicate by event id (docs/events.md); what must
hold is that no event is lost and none arrives out of order, duplicates aside.
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.workflow.support import (
    EventLog,
    assert_replays,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    step,
    wait_for,
)
from tests.workflow.test_events_and_replies import reply
from workflows.models import SIGNAL_LEGACY_REPLY, BundleState, StepState

pytestmark = pytest.mark.integration


async def test_a_reply_redelivered_while_the_last_batch_is_out_loses_and_reorders_no_event(
    dev_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    log = EventLog()
    async with running_workers(dev_env.client, adapters, prefix, events=log):
        handle = await start_bundle(dev_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        # A slow broker (within the inline bound) keeps the last task open long enough for the
        # reply's redelivery to arrive during it.
        log.slow_publishes_to_come, log.delay = 5, 1.5
        key = adapters["cra"].submits()[0].key
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, reference="CRA-1", reply_id="r-1"))
        await asyncio.sleep(0.3)
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, reference="CRA-1", reply_id="r-1"))
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    published = [e.data.sequence for e in log.events(handle.id)]
    first_seen = list(dict.fromkeys(published))
    assert first_seen == list(range(1, len(first_seen) + 1)), published
    assert log.events(handle.id)[-1].data.bundle_state is BundleState.COMPLETED
    await assert_replays(handle)
