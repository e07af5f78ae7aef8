"""Engine revision 2 leaves answered deadlines running: a later wait of the same step is its own.

On revision 2 `_wait_until` does not cancel a reply's deadline when the reply comes. A step that
waits again (a refused request amended and sent anew) must be timed by its new deadline only: the
old one firing in the middle of the new wait wakes the bundle and changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from tests.workflow.support import (
    assert_replays,
    decide,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    step,
    wait_for,
)
from tests.workflow.test_events_and_replies import reply
from workflows.bundle import BundleWorkflow
from workflows.models import SIGNAL_LEGACY_REPLY, BundleState, DecisionAction, StepState

pytestmark = pytest.mark.integration

REPLY_TIMEOUT = timedelta(days=7)  # the plan's default


@pytest.mark.parametrize("revision", [1, 2])
async def test_an_old_reply_deadline_firing_during_a_new_wait_of_the_step_changes_nothing(
    time_env: WorkflowEnvironment, revision: int
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    async with running_workers(time_env.client, adapters, prefix) as log:
        handle = await start_bundle(time_env.client, plan(), prefix, engine_revision=revision)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        first_key = adapters["cra"].submits()[0].key
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(first_key, outcome="rejected", code="name_mismatch"))
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION)

        # Three days later an operator corrects the name: a new request, with a deadline of its own.
        await time_env.sleep(timedelta(days=3))
        await decide(
            handle,
            step_id="ccb",
            action=DecisionAction.AMEND,
            reason="name as on the SIN record",
            amended_fields={"parent": {"name": "Marie Belanger"}},
        )
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        assert len(adapters["cra"].submits()) == 2

        # Past the first request's deadline (day 7), within the second's (day 10): still waiting.
        await time_env.sleep(timedelta(days=5))
        waiting = await handle.query(BundleWorkflow.status)
        assert step(waiting, "ccb").state is StepState.WAITING_REPLY
        assert step(waiting, "ccb").last_error.code == "name_mismatch"

        # Past the second request's deadline: overdue, for an operator.
        parked = await wait_for(
            handle,
            lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(days=1)),
        )
        assert step(parked, "ccb").last_error.code == "reply_overdue"
        await decide(handle, step_id="ccb", action=DecisionAction.SKIP, reason="applied by phone")
        final = await handle.result()

    assert final.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    ccb_states = [e.data.step_state for e in events if e.data.step_id == "ccb"]
    # One overdue park only (after the second wait), never one for the first request.
    assert ccb_states.count(StepState.NEEDS_ATTENTION) == 2  # the refusal, then the overdue reply
    history = await handle.fetch_history()
    fired = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED)
    # Revision 1 cancelled the first deadline; revision 2 let it fire, for nothing.
    assert fired == (1 if revision == 1 else 2)
    await assert_replays(handle)
