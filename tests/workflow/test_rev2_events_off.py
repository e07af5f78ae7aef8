"""A bundle that publishes events, run by a worker with events turned off.

Whether a bundle publishes is fixed when it starts (`BundleInput.publish_events`, from intake's
`events_enabled`); the worker's own `events_enabled` decides whether it has an event publisher.
The two can differ: settings that differ between the API and the workers, or events turned off
on the workers during a broker incident. On revision 1 the bundle's batches wait on the events
queue while its steps go on. On revision 2 the bundle worker always has `publish_bundle_events`,
answering "unavailable" without a publisher, so the bundle moves its events to the queue and
completes once workers with a publisher are back. (Before that, the SDK refused the local
activity it did not have, the last workflow task failed again and again, and the history no
longer replayed: found in the review of revision 2.)
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.workflow.support import (
    assert_replays,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
)
from workflows.models import BundleState

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("revision", [1, 2])
async def test_a_bundle_run_by_a_worker_without_an_event_publisher_publishes_once_one_is_back(
    dev_env: WorkflowEnvironment, revision: int
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(dev_env.client, adapters, prefix, with_publisher=False):
        handle = await start_bundle(dev_env.client, plan(), prefix, engine_revision=revision)
        # Its steps go on without a publisher (every system is called); only its events wait.
        for _ in range(100):
            if all(a.submits() for a in adapters.values()):
                break
            await asyncio.sleep(0.1)
        assert all(a.submits() for a in adapters.values())
        await asyncio.sleep(1)

    # Workers with events again: every event goes out, in order, and the bundle completes.
    async with running_workers(dev_env.client, adapters, prefix) as log:
        final = await asyncio.wait_for(handle.result(), 15)

    assert final.state is BundleState.COMPLETED
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data.bundle_state is BundleState.COMPLETED
    await assert_replays(handle)
