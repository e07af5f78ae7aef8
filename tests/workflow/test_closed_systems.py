"""Closed and throttling systems on the time-skipping server: free waits, Retry-After kept."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from adapters.availability import Availability, MaintenanceWindow
from adapters.sdk import CallContext, ClosedError, StepRequest, SubmitResult, TransientError
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, StepState, WithdrawRequest

from .support import (
    ScriptedAdapter,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    step,
    wait_for,
)


class ClockedAdapter(ScriptedAdapter):
    """A scripted adapter that also notes Temporal's time of each call it receives."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.called_at: list[datetime] = []

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        self.called_at.append(activity.info().started_time)
        return await super().submit(ctx, request)


async def test_a_system_in_maintenance_is_waited_for_without_an_attempt(
    time_env: WorkflowEnvironment,
) -> None:
    client = time_env.client
    adapters: dict[str, ScriptedAdapter] = scripted_adapters()
    cra = adapters["cra"] = ClockedAdapter("cra")
    # The server's clock, not the wall clock: earlier tests may have skipped it far ahead.
    now = await time_env.get_current_time()
    reopens = now + timedelta(hours=2)
    cra.availability = Availability(
        maintenance=(MaintenanceWindow(start=now - timedelta(minutes=1), end=reopens),)
    )
    prefix = new_prefix()

    async with running_workers(client, dict(adapters), prefix):
        handle = await start_bundle(client, plan(), prefix)
        waiting = await wait_for(handle, lambda s: step(s, "ccb").state == StepState.RETRYING)
        ccb = step(waiting, "ccb")
        assert ccb.attempts == 0
        assert ccb.last_error is None
        assert "closed" in ccb.waiting_for
        assert ccb.next_attempt_at is not None
        assert reopens - timedelta(seconds=5) <= ccb.next_attempt_at <= reopens + timedelta(seconds=1)
        assert cra.calls == []
        # Other steps are not held up by one closed system.
        assert step(waiting, "registration").state == StepState.DONE

        done = await wait_for(
            handle,
            lambda s: step(s, "ccb").state == StepState.DONE,
            skip=(time_env, timedelta(hours=1)),
            timeout=60,
        )

    assert step(done, "ccb").attempts == 1
    assert len(cra.submits()) == 1
    assert cra.called_at[0] >= reopens
    final = await handle.result()
    assert final.state == BundleState.COMPLETED


async def test_a_429_retry_after_is_waited_out_before_the_next_attempt(time_env: WorkflowEnvironment) -> None:
    client = time_env.client
    adapters: dict[str, ScriptedAdapter] = scripted_adapters()
    cra = adapters["cra"] = ClockedAdapter("cra")
    cra.script["submit"] = [TransientError("rate_limited", retry_after=timedelta(seconds=90))]
    prefix = new_prefix()

    async with running_workers(client, dict(adapters), prefix):
        handle = await start_bundle(client, plan(), prefix)
        retrying = await wait_for(handle, lambda s: step(s, "ccb").state == StepState.RETRYING)
        ccb = step(retrying, "ccb")
        assert ccb.attempts == 1
        assert ccb.last_error is not None
        assert ccb.last_error.code == "rate_limited"
        assert ccb.last_error.retry_after == timedelta(seconds=90)
        assert ccb.next_attempt_at is not None
        # The step's own backoff would try again after 1 s: the system's hint wins.
        assert ccb.next_attempt_at - ccb.last_error.at >= timedelta(seconds=90)

        done = await wait_for(
            handle, lambda s: step(s, "ccb").state == StepState.DONE, skip=(time_env, timedelta(seconds=30))
        )

    assert step(done, "ccb").attempts == 2
    first, second = cra.called_at
    assert second - first >= timedelta(seconds=90)
    assert len({call.key for call in cra.submits()}) == 1  # the same request, never a new one


async def test_a_withdrawal_while_closed_after_a_failed_call_still_learns_and_undoes_its_effect(
    time_env: WorkflowEnvironment,
) -> None:
    client = time_env.client
    adapters: dict[str, ScriptedAdapter] = scripted_adapters()
    certs = adapters["certs"]
    # The first call fails without an answer (it may have taken effect); the system then closes.
    certs.script["submit"] = [
        TransientError("server_error"),
        ClosedError(reopens_in=timedelta(hours=2)),
    ]
    prefix = new_prefix()

    async with running_workers(client, dict(adapters), prefix):
        handle = await start_bundle(client, plan(), prefix)
        await wait_for(
            handle,
            lambda s: (
                step(s, "certificate").state == StepState.RETRYING
                and "closed" in (step(s, "certificate").waiting_for or "")
            ),
            skip=(time_env, timedelta(seconds=2)),
        )
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        final = await wait_for(
            handle,
            lambda s: s.state == BundleState.WITHDRAWN,
            skip=(time_env, timedelta(hours=1)),
            timeout=60,
        )

    # Asked again once open (same key): it had taken effect, so it is undone, not forgotten.
    assert step(final, "certificate").state == StepState.COMPENSATED
    assert len({call.key for call in certs.submits()}) == 1
    assert [call.operation for call in certs.calls][-1] == "compensate"
