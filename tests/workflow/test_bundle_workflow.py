"""BundleWorkflow's orchestration rules on the time-skipping test server, with scripted adapters.

Backoffs and deadlines here are minutes of workflow time that the test server skips.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from adapters.sdk import NeedsAttentionError, RejectedError, TransientError
from tests.workflow.support import (
    REFUSED,
    assert_replays,
    decide,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    states,
    step,
    wait_for,
)
from workflows.bundle import BundleWorkflow
from workflows.models import (
    FINAL_STEP_STATES,
    BundleState,
    DecisionAction,
    StepDecision,
    StepState,
    WithdrawRequest,
)


async def test_happy_path_runs_every_step_once_in_dependency_order(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        result = await handle.result()

    assert result.state is BundleState.COMPLETED
    assert set(states(result).values()) == {StepState.DONE}
    assert all(s.reference for s in result.steps)
    assert all(len(a.submits()) == 1 for a in adapters.values())
    # The SIN request carries the registration number, and only the data the step may receive.
    sin_fields = adapters["sin"].submits()[0].fields
    assert sin_fields["references"] == {"registration": step(result, "registration").reference}
    assert set(sin_fields) == {"child", "references"}
    assert "marital_status" not in str(adapters["cra"].submits()[0].fields)
    keys = [c.key for a in adapters.values() for c in a.calls]
    assert len(set(keys)) == 5
    assert all(k.startswith(f"{handle.id}:") and k.endswith(":submit") for k in keys)
    await assert_replays(handle)


async def test_transient_errors_are_retried_with_the_same_idempotency_key(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["sin"].script["submit"] = [TransientError("http_503")] * 3
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        result = await handle.result()

    assert result.state is BundleState.COMPLETED
    sin = step(result, "sin")
    assert (sin.state, sin.attempts) == (StepState.DONE, 4)
    assert sin.last_error is not None and sin.last_error.code == "http_503"
    assert len({c.key for c in adapters["sin"].submits()}) == 1
    await assert_replays(handle)


async def test_rejected_registration_fails_the_bundle_and_refunds_the_certificate(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["registrar"].script["submit"] = [RejectedError("nolb_mismatch", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        result = await handle.result()

    assert result.state is BundleState.FAILED
    assert states(result) == {
        "certificate": StepState.COMPENSATED,
        "registration": StepState.REJECTED,
        "sin": StepState.SKIPPED,
        "ccb": StepState.SKIPPED,
        "resp": StepState.SKIPPED,
    }
    assert step(result, "registration").message == REFUSED
    assert [c.operation for c in adapters["certs"].calls] == ["submit", "compensate"]
    assert adapters["certs"].calls[1].key.endswith(":certificate:compensate")
    assert not adapters["sin"].calls and not adapters["cra"].calls and not adapters["resp"].calls
    await assert_replays(handle)


async def test_refusal_after_the_pivot_parks_for_an_operator_who_skips_it(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].script["submit"] = [RejectedError("aba_refused", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        parked = await wait_for(handle, lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION)
        assert parked.state is BundleState.NEEDS_ATTENTION
        assert "refused" in (step(parked, "ccb").waiting_for or "")
        assert step(parked, "registration").state is StepState.DONE
        await wait_for(handle, lambda s: step(s, "sin").state is StepState.DONE)

        result = await decide(
            handle, step_id="ccb", action=DecisionAction.SKIP, actor="op-1", reason="apply by RC66"
        )
        assert result.accepted
        final = await handle.result()

    assert final.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert step(final, "ccb").state is StepState.SKIPPED
    assert step(final, "registration").state is StepState.DONE
    assert step(final, "sin").state is StepState.DONE
    assert not any(c.operation == "compensate" for a in adapters.values() for c in a.calls)
    assert [(a.step_id, a.action, a.actor) for a in final.actions] == [("ccb", "skip", "op-1")]
    await assert_replays(handle)


async def test_needs_attention_resolved_by_amending_the_data(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["sin"].script["submit"] = [NeedsAttentionError("name_mismatch", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "sin").state is StepState.NEEDS_ATTENTION)

        with pytest.raises(WorkflowUpdateFailedError):
            # The SIN step never receives the parent's SIN, so it cannot be amended there.
            await decide(
                handle,
                step_id="sin",
                action=DecisionAction.AMEND,
                actor="op",
                reason="typo",
                amended_fields={"parent": {"sin": "046454286"}},
            )
        await decide(
            handle,
            step_id="sin",
            action=DecisionAction.AMEND,
            actor="op",
            reason="registry spelling",
            amended_fields={"child": {"name": "Zoe-Chloe O'Neil"}},
        )
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    first, second = adapters["sin"].submits()
    assert second.fields["child"]["name"] == "Zoe-Chloe O'Neil"
    assert second.fields["child"]["date_of_birth"] == "2026-11-10"
    assert second.key == first.key + ":r1"
    await assert_replays(handle)


async def test_retries_are_bounded_then_an_operator_retries(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].script["submit"] = [TransientError("http_500")] * 5
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        parked = await wait_for(
            handle,
            lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(seconds=20)),
        )
        ccb = step(parked, "ccb")
        assert ccb.attempts == 5
        assert "after 5 attempts" in (ccb.waiting_for or "")
        await decide(handle, step_id="ccb", action=DecisionAction.RETRY, actor="op", reason="CRA is back")
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert step(final, "ccb").attempts == 6
    assert len({c.key for c in adapters["cra"].submits()}) == 1
    await assert_replays(handle)


async def test_deadline_parks_the_step_even_with_attempts_left(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    # Retry-After of 4 minutes on each try: the 10-minute deadline passes before 5 attempts.
    adapters["sin"].script["submit"] = [TransientError("http_429", retry_after=timedelta(minutes=4))] * 5
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        parked = await wait_for(
            handle,
            lambda s: step(s, "sin").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(minutes=2)),
        )
        sin = step(parked, "sin")
        assert sin.attempts < 5
        assert "deadline" in (sin.waiting_for or "")
        await decide(handle, step_id="sin", action=DecisionAction.FAIL, actor="op", reason="ESDC will call")
        final = await handle.result()

    # After the pivot, failing a step does not roll anything back.
    assert final.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert step(final, "sin").state is StepState.FAILED
    assert step(final, "registration").state is StepState.DONE
    assert not any(c.operation == "compensate" for c in adapters["certs"].calls)
    await assert_replays(handle)


async def test_withdrawal_stops_unsent_steps_and_undoes_reversible_ones(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["registrar"].script["submit"] = [NeedsAttentionError("nolb_review", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(
            handle,
            lambda s: (
                step(s, "registration").state is StepState.NEEDS_ATTENTION
                and step(s, "certificate").state is StepState.DONE
            ),
        )
        answer = await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        assert answer.accepted
        final = await handle.result()
        # A closed bundle takes no more updates (the server refuses them outright).
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())

    assert final.state is BundleState.WITHDRAWN
    assert states(final) == {
        "certificate": StepState.COMPENSATED,
        "registration": StepState.SKIPPED,
        "sin": StepState.SKIPPED,
        "ccb": StepState.SKIPPED,
        "resp": StepState.SKIPPED,
    }
    assert not adapters["sin"].calls and not adapters["cra"].calls
    await assert_replays(handle)


async def test_no_consent_means_no_call_and_guidance(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    consents = {"certificate_order": True, "sin": True, "ccb": False, "resp": False}
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(consents), prefix)
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    ccb = step(final, "ccb")
    assert ccb.state is StepState.SKIPPED and ccb.message is not None
    assert ccb.message.en == "Apply through My Account"
    assert not adapters["cra"].calls and not adapters["resp"].calls
    await assert_replays(handle)


async def test_ineligible_parent_gets_guidance_instead_of_a_sin_request(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    parent = {
        "name": "Ana Souza",
        "sin": "912345675",
        "status": "temporary_resident",
        "marital_status": "single",
    }
    async with running_workers(time_env.client, adapters, prefix):
        final = await (await start_bundle(time_env.client, plan(parent=parent), prefix)).result()

    sin = step(final, "sin")
    assert sin.state is StepState.SKIPPED and sin.message is not None
    assert sin.message.en == "Apply at Service Canada"
    assert not adapters["sin"].calls
    assert final.state is BundleState.COMPLETED


async def test_optional_step_refusal_completes_with_exceptions(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["resp"].script["submit"] = [RejectedError("promoter_closed", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        final = await (await start_bundle(time_env.client, plan(), prefix)).result()

    assert final.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert step(final, "resp").state is StepState.REJECTED
    assert step(final, "resp").message == REFUSED


async def test_decisions_for_steps_not_waiting_are_refused(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["registrar"].script["submit"] = [NeedsAttentionError("nolb_review", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "registration").state is StepState.NEEDS_ATTENTION)
        for bad in (
            StepDecision(step_id="sin", action=DecisionAction.SKIP, actor="op", reason="x"),
            StepDecision(step_id="nope", action=DecisionAction.SKIP, actor="op", reason="x"),
            StepDecision(step_id="registration", action=DecisionAction.AMEND, actor="op", reason="x"),
        ):
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(BundleWorkflow.decide, bad)
        await decide(
            handle, step_id="registration", action=DecisionAction.RETRY, actor="op", reason="NoLB arrived"
        )
        final = await handle.result()
    assert final.state is BundleState.COMPLETED
    assert [a.action for a in final.actions] == ["retry"]


async def test_cancelling_lets_calls_in_flight_finish_and_undoes_them(time_env: WorkflowEnvironment) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["certs"].delay = 1.5
    adapters["registrar"].script["submit"] = [NeedsAttentionError("nolb_review", REFUSED)]
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(
            handle,
            lambda s: step(s, "certificate").state is StepState.RUNNING and bool(adapters["certs"].calls),
        )
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await handle.query(BundleWorkflow.status)

    assert final.state is BundleState.WITHDRAWN
    assert step(final, "certificate").state is StepState.COMPENSATED
    assert [c.operation for c in adapters["certs"].calls] == ["submit", "compensate"]
    assert all(s.state in FINAL_STEP_STATES for s in final.steps)


async def test_a_reversible_call_with_an_unknown_outcome_is_settled_then_undone(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    # The certificate order times out (it may have been placed); then the registration is refused.
    adapters["certs"].script["submit"] = [TransientError("timeout")] * 2
    adapters["registrar"].script["submit"] = [
        TransientError("http_503"),
        RejectedError("nolb_mismatch", REFUSED),
    ]
    async with running_workers(time_env.client, adapters, prefix):
        final = await (await start_bundle(time_env.client, plan(), prefix)).result()

    assert final.state is BundleState.FAILED
    assert step(final, "certificate").state is StepState.COMPENSATED
    submits = adapters["certs"].submits()
    # Two timeouts, then asked once more with the same key while stopping, so no second order.
    assert len(submits) == 3
    assert len({c.key for c in submits}) == 1
    assert adapters["certs"].calls[-1].operation == "compensate"


async def test_amending_is_refused_when_the_request_may_already_have_arrived(
    time_env: WorkflowEnvironment,
) -> None:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].script["submit"] = [TransientError("timeout")] * 5
    async with running_workers(time_env.client, adapters, prefix):
        handle = await start_bundle(time_env.client, plan(), prefix)
        await wait_for(
            handle,
            lambda s: step(s, "ccb").state is StepState.NEEDS_ATTENTION,
            skip=(time_env, timedelta(seconds=20)),
        )
        with pytest.raises(WorkflowUpdateFailedError):
            await decide(
                handle,
                step_id="ccb",
                action=DecisionAction.AMEND,
                actor="op",
                reason="x",
                amended_fields={"child": {"name": "Other"}},
            )
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        # Once the bundle is stopping, no decision can send anything more.
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await decide(handle, step_id="ccb", action=DecisionAction.RETRY, actor="op", reason="x")
        final = await handle.result()

    assert final.state is BundleState.WITHDRAWN
    assert len({c.key for c in adapters["cra"].submits()}) == 1
