"""A statement offer that keeps failing for a while does not hold back the rest of the bundle.

While the offer is retried, the rest of the bundle goes on: the certificate order, which does
not wait for the notice, is sent and its answer handled; status events go out; status queries
answer at once. Revision 1 retries the offer as an activity, so these checks hold for it by
construction; revision 2 tries it once inline (a local activity, bounded to
`INLINE_OFFER_TIMEOUT`) and retries it as an activity on the queue. Retried inline, it held the
workflow task open, heartbeating, for as long as the matcher failed (found in the review of
revision 2, with both revisions run side by side).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from bundles.notices import facts_from_statement
from tests.workflow.support import (
    assert_replays,
    new_prefix,
    running_workers,
    start_bundle,
    step,
    wait_for,
)
from tests.workflow.test_notice_gate import REGISTRATION, adapters, newborn_plan
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, StepState, WithdrawRequest

pytestmark = pytest.mark.integration

CERTIFICATE = "birth_certificate"
OUTAGE_S = 6.0
"""Long enough that a task held by the offer shows in its length (the test allows 2 s)."""


@pytest.fixture
def matcher_outage(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every statement offer fails, retryably, for `OUTAGE_S` seconds from the first one."""
    seen = {"failures": 0}
    first: list[float] = []

    def failing(payload: dict[str, Any]) -> Any:
        now = time.monotonic()
        first[:] = first or [now]
        if now - first[0] < OUTAGE_S:
            seen["failures"] += 1
            raise RuntimeError("matcher unreachable")
        return facts_from_statement(payload)

    monkeypatch.setattr("activities.notices.facts_from_statement", failing)
    return seen


async def longest_workflow_task(handle: Any) -> float:
    """Seconds from the start to the completion of the bundle's longest workflow task."""
    started: dict[int, float] = {}
    longest = 0.0
    for event in (await handle.fetch_history()).events:
        at = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started[event.event_id] = at
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            begun = started[event.workflow_task_completed_event_attributes.started_event_id]
            longest = max(longest, at - begun)
    return longest


async def test_a_failing_statement_offer_does_not_hold_back_the_rest_of_the_bundle(
    dev_env: WorkflowEnvironment, matcher_outage: dict[str, int]
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(dev_env.client, systems, prefix, correlation_secret=prefix.encode()) as log:
        handle = await start_bundle(dev_env.client, newborn_plan(), prefix, engine_revision=2)
        # A few seconds into the outage the offer has failed more than once, and the
        # certificate order (sent at once, answered at once) is done.
        await asyncio.sleep(4)
        assert matcher_outage["failures"] >= 2
        asked = time.monotonic()
        during = await handle.query(BundleWorkflow.status)
        query_s = time.monotonic() - asked
        published_during = [e.data.step_id for e in log.events(handle.id)]

        # Once the matcher is back the statement waits for its notice; then the bundle is withdrawn.
        await wait_for(
            handle, lambda s: step(s, REGISTRATION).state is StepState.WAITING_REPLY, timeout=OUTAGE_S + 30
        )
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        final = await handle.result()

    assert final.state is BundleState.WITHDRAWN
    await assert_replays(handle)
    # The outage is the matcher's: the rest of the bundle does not wait for it.
    assert await longest_workflow_task(handle) < 2, "a workflow task was held open by the offer"
    assert query_s < 2, f"a status query waited {query_s:.1f} s for the workflow task"
    assert step(during, CERTIFICATE).state is StepState.DONE
    assert CERTIFICATE in published_during, "no status event went out while the offer was retried"


async def test_a_bundle_cancelled_while_its_offer_is_retried_publishes_every_event_and_replays(
    dev_env: WorkflowEnvironment, matcher_outage: dict[str, int]
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(dev_env.client, systems, prefix, correlation_secret=prefix.encode()) as log:
        handle = await start_bundle(dev_env.client, newborn_plan(), prefix, engine_revision=2)
        await asyncio.sleep(4)
        assert matcher_outage["failures"] >= 2
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), OUTAGE_S + 30)

    # The offer in flight finishes, the statement is taken back, the certificate order undone,
    # and every change goes out, in order, ending with the withdrawal.
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data.bundle_state is BundleState.WITHDRAWN
    assert [c.operation for c in systems["on-certificates"].calls] == ["submit", "compensate"]
    assert not systems["on-registrar-births"].calls
    await assert_replays(handle)
