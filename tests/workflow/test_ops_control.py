"""Operations on the time-skipping server: stuck detection, retry-now, pause/resume with a
gradual release, and the circuit breaker (open, half-open, closed)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from adapters.sdk import TransientError
from infra.worker import build_workers
from tests.workflow.support import (
    TEST_CORRELATION_SECRET,
    EventLog,
    Handle,
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
    BundleState,
    BundleTimelineView,
    DecisionAction,
    StepState,
    StepTimelineView,
    StuckReason,
    TimelineRequest,
)
from workflows.names import bundle_task_queue, system_control_id
from workflows.system_control import (
    BreakerPolicy,
    BreakerState,
    PauseRequest,
    ResumeRequest,
    SystemControlInput,
    SystemControlState,
    SystemControlWorkflow,
)


async def timeline(handle: Handle) -> BundleTimelineView:
    return await handle.query(BundleWorkflow.timeline, TimelineRequest())


async def wait_timeline(
    handle: Handle, predicate: Callable[[BundleTimelineView], bool], timeout: float = 15
) -> BundleTimelineView:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await timeline(handle)
        if predicate(view):
            return view
        assert asyncio.get_running_loop().time() < deadline, view.model_dump_json(indent=1)
        await asyncio.sleep(0.05)


async def control(
    client: Client, prefix: str, system: str, **kwargs: object
) -> WorkflowHandle[SystemControlWorkflow, None]:
    return await client.start_workflow(
        SystemControlWorkflow.run,
        SystemControlInput.model_validate({"system_id": system, **kwargs}),
        id=system_control_id(prefix, system),
        task_queue=bundle_task_queue(prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def test_retrying_past_the_threshold_is_stuck_then_parks_with_the_reason(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].script["submit"] = [TransientError("http_503")] * 5
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        # The plan allows 5 attempts; the default stuck threshold is 5 attempts, so after the
        # fourth failure the step is retrying but not yet stuck.
        view = await wait_timeline(handle, lambda v: _ccb(v).status.attempts == 4)
        assert _ccb(view).stuck_reasons == []
        assert view.stuck_reasons == []
        parked = await wait_for(
            handle,
            lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(seconds=20)),
        )
        assert step(parked, "ccb").attempts == 5
        view = await timeline(handle)
        assert view.stuck_reasons == [StuckReason.NEEDS_ATTENTION, StuckReason.RETRIES_EXCEEDED]
        assert view.stuck_systems == ["cra"]
        assert view.stuck_since is not None
        attempts = _ccb(view).attempts
        assert [a.outcome for a in attempts] == ["failed"] * 5
        assert {a.code for a in attempts} == {"http_503"}
        assert [a.attempt for a in attempts] == [1, 2, 3, 4, 5]
        await decide(handle, step_id="ccb", action=DecisionAction.RETRY, actor="op-7", reason="CRA back")
        final = await handle.result()
        after = await timeline(handle)
    assert final.state is BundleState.COMPLETED
    assert after.stuck_reasons == [] and after.stuck_since is None
    retry = final.actions[0]
    assert (retry.actor, retry.before, retry.after) == ("op-7", "needs_attention", "running")
    await assert_replays(handle)


def _ccb(view: BundleTimelineView) -> StepTimelineView:
    return next(s for s in view.steps if s.status.id == "ccb")


async def test_retry_now_skips_a_long_backoff_without_an_extra_attempt(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    # The system asks for an hour: the operator knows it is back and retries at once.
    adapters["cra"].script["submit"] = [TransientError("http_429", retry_after=timedelta(hours=1))]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        waiting = await wait_for(handle, lambda s: step(s, "ccb").state is StepState.RETRYING)
        next_at = step(waiting, "ccb").next_attempt_at
        assert next_at is not None
        await decide(handle, step_id="ccb", action=DecisionAction.RETRY, actor="op", reason="CRA is back")
        done = await wait_for(handle, lambda s: step(s, "ccb").state is StepState.DONE)
        final = await handle.result()
    ccb = step(done, "ccb")
    assert ccb.attempts == 2  # the failed one and the one retry-now made, nothing more
    assert ccb.finished_at is not None and ccb.finished_at < next_at
    assert final.actions[0].before == "retrying"
    assert len({c.key for c in adapters["cra"].submits()}) == 1
    await assert_replays(handle)


async def test_skip_applies_to_a_retrying_step(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["resp"].script["submit"] = [TransientError("http_500")] * 3
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "resp").state is StepState.RETRYING)
        await decide(handle, step_id="resp", action=DecisionAction.SKIP, actor="op", reason="promoter gone")
        final = await handle.result()
    assert step(final, "resp").state is StepState.SKIPPED
    assert final.actions[0].after == "skipped"
    assert len(adapters["resp"].submits()) == 1


async def test_paused_system_holds_calls_without_attempts_then_releases_them_gradually(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(time_env.client, adapters, prefix):
        ctl = await control(time_env.client, prefix, "cra", release_per_s=1.0)
        paused = await ctl.execute_update(
            SystemControlWorkflow.pause, PauseRequest(actor="ops-lead", reason="planned outage")
        )
        assert paused.paused
        handles = []
        for _ in range(3):
            handles.append(await start_bundle(time_env.client, plan(), prefix))
            # Held in this order: the release follows it.
            await wait_timeline(handles[-1], lambda v: _ccb(v).held_by is not None)
        for handle in handles:
            view = await timeline(handle)
            ccb = _ccb(view)
            assert ccb.status.state is StepState.RETRYING
            assert ccb.status.attempts == 0
            assert "cra system paused by ops-lead (planned outage) since" in (ccb.held_by or "")
            assert ccb.status.waiting_for == f"waiting: {ccb.held_by}"
            assert ccb.stuck_reasons == [StuckReason.SYSTEM_PAUSED]
            assert view.stuck_systems == ["cra"]
        state: SystemControlState = await ctl.query(SystemControlWorkflow.state)
        assert state.held == 3
        assert adapters["cra"].submits() == []
        # The pause outlasts every backoff: still nothing sent, no attempt counted.
        await time_env.sleep(timedelta(minutes=5))
        assert adapters["cra"].submits() == []
        resumed = await ctl.execute_update(
            SystemControlWorkflow.resume, ResumeRequest(actor="ops-lead", reason="back", release_per_s=1.0)
        )
        assert not resumed.paused
        finals = [await h.result() for h in handles]
    assert all(f.state is BundleState.COMPLETED for f in finals)
    assert all(step(f, "ccb").attempts == 1 for f in finals)
    done_at = [step(f, "ccb").finished_at for f in finals]
    assert done_at == sorted(done_at)  # in the order they were held
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(done_at) if a and b]
    assert all(gap >= 0.9 for gap in gaps), gaps  # one a second
    assert len(adapters["cra"].submits()) == 3
    for handle in handles:
        await assert_replays(handle)
    await ctl.terminate("test over")


async def test_breaker_opens_on_failures_probes_half_open_and_closes(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    # Four failures open the breaker (min 4 calls, half failing); the probe after 30 s succeeds.
    adapters["resp"].script["submit"] = [TransientError("http_503")] * 4
    policy = BreakerPolicy(
        window=timedelta(minutes=5), min_calls=4, failure_rate=0.5, open_for=timedelta(seconds=30)
    )
    async with workers(time_env.client, adapters, prefix):
        ctl = await control(time_env.client, prefix, "resp", breaker=policy.model_dump(), release_per_s=2.0)
        handles = [await start_bundle(time_env.client, plan(), prefix) for _ in range(4)]
        await wait_control(ctl, lambda c: c.breaker is BreakerState.OPEN)
        state: SystemControlState = await ctl.query(SystemControlWorkflow.state)
        assert state.error_rate == 1.0
        # Attempts after the breaker opened meet it: held, not counted, and saying why.
        await wait_control(ctl, lambda c: c.held >= 1)
        held = [v for v in [await timeline(h) for h in handles] if _resp(v).held_by is not None]
        assert held
        for view in held:
            assert "resp system circuit breaker open (100% of calls failing)" in (_resp(view).held_by or "")
            assert _resp(view).stuck_reasons == [StuckReason.BREAKER_OPEN]
        attempts_when_held = {v.status.submission_id: _resp(v).status.attempts for v in held}
        finals = [await h.result() for h in handles]
        state = await ctl.query(SystemControlWorkflow.state)
    assert state.breaker is BreakerState.CLOSED
    assert [e.kind for e in state.history] == ["breaker_opened", "breaker_half_open", "breaker_closed"]
    assert all(f.state is BundleState.COMPLETED for f in finals)
    # Four failures and one success per bundle reached the system; held calls never did.
    assert len(adapters["resp"].submits()) == 8
    assert sum(step(f, "resp").attempts for f in finals) == 8
    for final in finals:
        if final.submission_id in attempts_when_held:
            assert step(final, "resp").attempts == attempts_when_held[final.submission_id] + 1
    await ctl.terminate("test over")


async def wait_control(
    ctl: WorkflowHandle[SystemControlWorkflow, None],
    predicate: Callable[[SystemControlState], bool],
    timeout: float = 20,
) -> SystemControlState:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await ctl.query(SystemControlWorkflow.state)
        if predicate(state):
            return state
        assert asyncio.get_running_loop().time() < deadline, state.model_dump_json(indent=1)
        await asyncio.sleep(0.05)


@asynccontextmanager
async def workers(client: Client, adapters: dict[str, Any], prefix: str) -> AsyncIterator[None]:
    """The production workers, each call checking its system's control state afresh."""
    async with AsyncExitStack() as stack:
        for worker in build_workers(
            client,
            adapters,
            task_queue_prefix=prefix,
            correlation_secret=TEST_CORRELATION_SECRET,
            upsert_search_attributes=False,
            control_refresh=timedelta(0),
            event_publisher=EventLog(),
        ):
            await stack.enter_async_context(worker)
        yield


def _resp(view: BundleTimelineView) -> StepTimelineView:
    return next(s for s in view.steps if s.status.id == "resp")
