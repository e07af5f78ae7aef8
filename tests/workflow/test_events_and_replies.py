"""Status events and asynchronous legacy replies, on the time-skipping test server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.events import INLINE_PUBLISH_BOUND
from adapters.sdk import NeedsAttentionError, TransientError
from bundles.models import LocalizedText
from tests.encryption import TEST_DATA_CONVERTER
from tests.workflow.support import (
    SUBMISSION,
    EventLog,
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
from workflows.bundle import BundleWorkflow
from workflows.models import (
    BUNDLE_STATE_CHANGED,
    SIGNAL_LEGACY_REPLY,
    STEP_STATE_CHANGED,
    BundleState,
    DecisionAction,
    LegacyReply,
    StepState,
    WithdrawRequest,
)

REVIEW = LocalizedText(en="An agent reviews it", fr="Un agent l'examine")


def reply(key: str, outcome: str = "accepted", **fields: object) -> LegacyReply:
    return LegacyReply.model_validate(
        {"correlation_id": key, "system": "cra", "outcome": outcome, "received_at": datetime.now(UTC)}
        | fields
    )


async def test_events_follow_every_state_change_in_order_and_end_with_the_final_status(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["sin"].script["submit"] = [TransientError("http_503")]
    async with running_workers(time_env.client, adapters, prefix) as log:
        handle = await start_bundle(time_env.client, plan(), prefix)
        final = await handle.result()

    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.id for e in events] == [f"{handle.id}:{n}" for n in range(1, len(events) + 1)]
    assert {e.subject for e in events} == {handle.id}
    # Each step's own events trace its path, and the last one is its final state.
    for status in final.steps:
        path = [e.data.step_state for e in events if e.data.step_id == status.id]
        assert path[0] is StepState.PENDING
        assert path[-1] is status.state
    sin_path = [e.data.step_state for e in events if e.data.step_id == "sin"]
    assert sin_path == [
        StepState.PENDING,
        StepState.RUNNING,
        StepState.RETRYING,
        StepState.RUNNING,
        StepState.DONE,
    ]
    bundle_events = [e for e in events if e.type == BUNDLE_STATE_CHANGED]
    assert [e.data.bundle_state for e in bundle_events] == [
        BundleState.RECEIVED,
        BundleState.IN_PROGRESS,
        BundleState.COMPLETED,
    ]
    assert events[-1].type == BUNDLE_STATE_CHANGED and events[-1].data.bundle_state is final.state
    assert all(e.type in (BUNDLE_STATE_CHANGED, STEP_STATE_CHANGED) for e in events)
    # Ids and states only: nothing the resident wrote travels in an event.
    published = "".join(e.model_dump_json() for e in events)
    for secret in ("Zoë", "Bélanger", SUBMISSION["parent"]["sin"], "2026-11-10"):
        assert secret not in published
    # Changes are coalesced: far fewer publications than events.
    assert len([b for b in log.batches if b.tracking_id == handle.id]) < len(events)
    await assert_replays(handle)


async def test_a_broker_outage_delays_events_without_holding_up_the_bundle(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(time_env.client, adapters, prefix) as log:
        log.failures_to_come = 4
        handle = await start_bundle(time_env.client, plan(), prefix)
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert all(len(a.submits()) == 1 for a in adapters.values())
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data.bundle_state is BundleState.COMPLETED


async def test_events_can_be_switched_off(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(time_env.client, adapters, prefix) as log:
        handle = await start_bundle(time_env.client, plan(), prefix, publish_events=False)
        final = await handle.result()
    assert final.state is BundleState.COMPLETED
    assert log.events(handle.id) == []


async def test_a_step_waits_for_its_reply_then_completes_with_the_replys_reference(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        waiting = await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        assert waiting.state is BundleState.IN_PROGRESS
        assert "waiting for cra to reply" in (step(waiting, "ccb").waiting_for or "")
        key = adapters["cra"].submits()[0].key
        # A reply for a step the bundle does not have, and one from another bundle, change nothing.
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(f"{handle.id}:nope:submit"))
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key.replace(handle.id, "another-bundle")))
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, reference="CRA-FINAL-1"))
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, outcome="rejected", code="late_duplicate"))
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    ccb = step(final, "ccb")
    assert (ccb.state, ccb.reference, ccb.attempts) == (StepState.DONE, "CRA-FINAL-1", 1)
    assert len(adapters["cra"].submits()) == 1
    await assert_replays(handle)


async def test_a_refusing_reply_after_the_pivot_parks_the_step_with_the_systems_reason(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    refused = LocalizedText(en="Parent not found", fr="Parent introuvable")
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        key = adapters["cra"].submits()[0].key
        await handle.signal(
            SIGNAL_LEGACY_REPLY, reply(key, outcome="rejected", code="parent_not_found", message=refused)
        )
        parked = await wait_for(handle, lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION)
        ccb = step(parked, "ccb")
        assert ccb.last_error is not None
        assert (ccb.last_error.kind, ccb.last_error.code) == ("rejected", "parent_not_found")
        assert "parent_not_found" in (ccb.waiting_for or "")
        await decide(
            handle, step_id="ccb", action=DecisionAction.SKIP, actor="op-1", reason="applied by phone"
        )
        final = await handle.result()
    assert final.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert step(final, "ccb").state is StepState.SKIPPED
    assert len(adapters["cra"].submits()) == 1


async def test_an_overdue_reply_asks_an_operator_and_a_late_reply_still_completes_the_step(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        parked = await wait_for(
            handle,
            lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(days=2)),
        )
        ccb = step(parked, "ccb")
        assert ccb.last_error is not None and ccb.last_error.code == "reply_overdue"
        assert "has not replied" in (ccb.waiting_for or "")
        assert parked.state is BundleState.NEEDS_ATTENTION

        key = adapters["cra"].submits()[0].key
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, reference="CRA-LATE"))
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert step(final, "ccb").reference == "CRA-LATE"
    assert len(adapters["cra"].submits()) == 1
    await assert_replays(handle)


async def test_a_reply_that_overtakes_the_acknowledgement_is_kept_for_its_step(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    adapters["cra"].delay = 1.0  # the acknowledgement is slow; the reply arrives first
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: bool(adapters["cra"].calls))
        key = adapters["cra"].submits()[0].key
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, reference="CRA-FAST"))
        final = await handle.result()

    assert step(final, "ccb").reference == "CRA-FAST"
    assert final.state is BundleState.COMPLETED


async def test_a_redelivered_reply_is_not_taken_for_the_answer_to_a_retry(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    asks = {"outcome": "needs_attention", "code": "identity_check", "reply_id": "replies:0:7"}
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        key = adapters["cra"].submits()[0].key
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, **asks))
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION)
        # The streams process crashed before committing: the same record is signalled again.
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, **asks))
        await decide(
            handle, step_id="ccb", action=DecisionAction.RETRY, actor="op-1", reason="checked by phone"
        )
        resent = await wait_for(handle, lambda s: len(adapters["cra"].submits()) == 2)
        assert step(resent, "ccb").state in (StepState.RUNNING, StepState.WAITING_REPLY)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(key, reference="CRA-OK", reply_id="replies:0:9"))
        final = await handle.result()

    assert step(final, "ccb").reference == "CRA-OK"
    assert final.state is BundleState.COMPLETED
    await assert_replays(handle)


async def test_withdrawing_while_an_undoable_request_is_unanswered_waits_for_the_answer_and_undoes_it(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["certs"].pending_reply = True
    adapters["registrar"].script["submit"] = [NeedsAttentionError("review", REVIEW)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(
            handle,
            lambda s: step(s, "certificate").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(days=2)),
        )
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        stopping = await handle.query(BundleWorkflow.status)
        assert step(stopping, "certificate").state is StepState.NEEDS_ATTENTION
        key = adapters["certs"].submits()[0].key
        await handle.signal(
            SIGNAL_LEGACY_REPLY, reply(key, system="certs", reference="CERT-LATE", reply_id="r:1")
        )
        final = await handle.result()

    assert final.state is BundleState.WITHDRAWN
    assert step(final, "certificate").state is StepState.COMPENSATED
    assert [c.operation for c in adapters["certs"].calls] == ["submit", "compensate"]


async def test_on_engine_revision_1_events_wait_for_the_calls_in_flight_and_go_out_in_few_batches(
    dev_env: WorkflowEnvironment,
) -> None:
    # Bundles started before revision 2 still run this way until they end.
    # On the dev server: the time-skipping server would skip the events' hold while calls run.
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(dev_env.client, adapters, prefix) as log:
        handle = await start_bundle(dev_env.client, plan(), prefix, engine_revision=1)
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    batches = [b for b in log.batches if b.tracking_id == handle.id]
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    # Events wait for the calls in flight, so each wave of calls (certificate and registration,
    # then the three that need the registration) goes out with its answers: with the first
    # batch, three at most (one publication per change of state gave four), plus one for each
    # hold that outlasted EVENTS_HOLD_MAX on a busy machine (its timer fired).
    history = await handle.fetch_history()
    holds_expired = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED)
    assert len(batches) <= 3 + holds_expired, [
        [(e.data.step_id, e.data.step_state) for e in b.events] for b in batches
    ]
    await assert_replays(handle)


def _activities_scheduled(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def _count(history: WorkflowHistory, event_type: EventType.ValueType) -> int:
    return sum(1 for e in history.events if e.event_type == event_type)


async def test_events_go_out_inline_and_cost_the_history_no_activity_or_workflow_task(
    dev_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(dev_env.client, adapters, prefix) as log:
        inline = await start_bundle(dev_env.client, plan(), prefix)
        queued = await start_bundle(dev_env.client, plan(), prefix, engine_revision=1)
        assert (await inline.result()).state is BundleState.COMPLETED
        assert (await queued.result()).state is BundleState.COMPLETED

    events = log.events(inline.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data.bundle_state is BundleState.COMPLETED

    # The same changes as a revision 1 bundle of the same plan publishes (steps that run at
    # once may interleave differently).
    def paths(tracking_id: str) -> dict[str | None, list[object]]:
        by_step: dict[str | None, list[object]] = {}
        for e in log.events(tracking_id):
            by_step.setdefault(e.data.step_id, []).append(e.data.step_state or e.data.bundle_state)
        return by_step

    assert paths(inline.id) == paths(queued.id)
    history = await inline.fetch_history()
    # Only the five step calls are activities; each batch is one local-activity marker.
    assert sorted(_activities_scheduled(history)) == ["invoke_step"] * 5
    batches = [b for b in log.batches if b.tracking_id == inline.id]
    assert _count(history, EventType.EVENT_TYPE_MARKER_RECORDED) == len(batches)
    # No patch marker, no change-version upsert, no hold timers: the two state upserts only.
    assert _count(history, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 0
    assert _count(history, EventType.EVENT_TYPE_TIMER_STARTED) == 0
    old_history = await queued.fetch_history()
    assert len(history.events) < len(old_history.events)
    completed_tasks = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    assert _count(history, completed_tasks) <= _count(old_history, completed_tasks)
    await assert_replays(inline)
    await assert_replays(queued)


async def test_an_answered_reply_wait_leaves_its_deadline_to_run_out_instead_of_cancelling_it(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    async with running_workers(time_env.client, adapters, prefix):
        handles = {}
        for revision in (1, 2):
            handle = await start_bundle(time_env.client, plan(), prefix, engine_revision=revision)
            await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)
            await handle.signal(SIGNAL_LEGACY_REPLY, reply(adapters["cra"].submits()[-1].key))
            assert (await handle.result()).state is BundleState.COMPLETED
            handles[revision] = await handle.fetch_history()

    # Revision 1 cancels the reply's deadline when the reply comes (and its events' holds when
    # their calls are answered); revision 2 starts the deadline and writes nothing more.
    assert _count(handles[1], EventType.EVENT_TYPE_TIMER_CANCELED) >= 1
    assert _count(handles[2], EventType.EVENT_TYPE_TIMER_STARTED) == 1
    assert _count(handles[2], EventType.EVENT_TYPE_TIMER_CANCELED) == 0
    assert _count(handles[2], EventType.EVENT_TYPE_TIMER_FIRED) == 0


async def test_a_broker_too_slow_for_inline_publishing_moves_the_bundles_events_to_the_queue(
    dev_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    log = EventLog()
    log.slow_publishes_to_come, log.delay = 1, INLINE_PUBLISH_BOUND + 1
    async with running_workers(dev_env.client, adapters, prefix, events=log):
        handle = await start_bundle(dev_env.client, plan(), prefix)
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert all(len(a.submits()) == 1 for a in adapters.values())
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data.bundle_state is BundleState.COMPLETED
    history = await handle.fetch_history()
    # The first batch timed out inline (one marker, failed); every batch after it was queued.
    assert _count(history, EventType.EVENT_TYPE_MARKER_RECORDED) == 1
    assert set(_activities_scheduled(history)) == {"invoke_step", "publish_bundle_events"}
    assert _activities_scheduled(history).count("publish_bundle_events") == len(
        [b for b in log.batches if b.tracking_id == handle.id]
    )
    await assert_replays(handle)


async def test_a_step_waiting_for_a_reply_is_published_before_the_reply_comes(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True
    async with running_workers(time_env.client, adapters, prefix) as log:
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY)

        def published_waiting() -> bool:
            return any(
                e.data.step_id == "ccb" and e.data.step_state is StepState.WAITING_REPLY
                for e in log.events(handle.id)
            )

        # The wait can last days: its event is not held for the reply.
        await wait_for(handle, lambda _: published_waiting())
        await handle.signal(SIGNAL_LEGACY_REPLY, reply(adapters["cra"].submits()[0].key))
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    events = log.events(handle.id)
    assert [e.data.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data.bundle_state is BundleState.COMPLETED
    await assert_replays(handle)


async def test_a_bundle_started_before_events_were_coalesced_replays_on_todays_code() -> None:
    # Recorded at commit 54b49e7 (one publication per change): the test bundle, run to completion
    # on the dev server, its events in 4 batches. Payloads are sealed with the tests' fixed key.
    recorded = Path(__file__).parent / "histories" / "bundle-before-events-coalesced.json"
    history = WorkflowHistory.from_json("bundle-before-events-coalesced", recorded.read_text())
    await Replayer(workflows=[BundleWorkflow], data_converter=TEST_DATA_CONVERTER).replay_workflow(history)


async def test_a_bundle_on_engine_revision_2_replays_on_todays_code() -> None:
    # Recorded at commit 65be992: the test bundle with the CRA's reply awaited, on the dev server,
    # with the workflow id below (the reply names it); events published inline (local-activity
    # markers), the reply's deadline left running. Payloads are sealed with the tests' fixed key.
    recorded = Path(__file__).parent / "histories" / "bundle-engine-revision-2.json"
    history = WorkflowHistory.from_json("bundle-engine-revision-2", recorded.read_text())
    await Replayer(workflows=[BundleWorkflow], data_converter=TEST_DATA_CONVERTER).replay_workflow(history)
