"""Effective-dated steps and bundles that roll back whole: the engine side of a change of address."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from adapters.sdk import RejectedError
from bundles.models import BundleDefinition
from bundles.plan import BundlePlan, resolve_plan
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, StepState, WithdrawRequest

from .support import (
    REFUSED,
    RETRY,
    ScriptedAdapter,
    assert_replays,
    new_prefix,
    running_workers,
    start_bundle,
    states,
    step,
    text,
    wait_for,
)


def address_step(step_id: str, adapter: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "program": text(step_id),
        "organization": text(adapter),
        "level": "provincial",
        "adapter": adapter,
        "fields": ["person", "old_address", "new_address", "move"],
        "needs": ["identity"],
        "retry": RETRY,
        "compensation": {"description": text("Old address restored")},
        **extra,
    }


def definition(*, roll_back: str = "always", **changes: dict[str, Any]) -> BundleDefinition:
    """A change of address: identity first (the pivot), then three reversible updates."""
    steps = {
        "identity": {
            "id": "identity",
            "program": text("Identity"),
            "organization": text("ServiceOntario"),
            "level": "provincial",
            "adapter": "identity",
            "fields": ["person"],
            "pivot": True,
            "retry": RETRY,
        },
        "tax": address_step("tax", "tax", effective_date={"field": "move.date", "months_ahead": 6}),
        "licence": address_step(
            "licence", "licence", effective_date={"field": "move.date", "months_ahead": 0}
        ),
        "city": address_step("city", "city", optional=True),
    }
    for step_id, change in changes.items():
        steps[step_id] = {**steps[step_id], **change}
    return BundleDefinition.model_validate(
        {
            "id": "address-test",
            "version": 1,
            "jurisdiction": "CA-ON",
            "life_event": "address_change",
            "title": text("Address"),
            "description": text("Test change of address"),
            "submission_schema": "address_change/v1",
            "roll_back_on_failure": roll_back,
            "steps": list(steps.values()),
        }
    )


def submission(moving_on: date) -> dict[str, Any]:
    return {
        "person": {"name": "Zoë Bélanger", "health_number": "1234567897"},
        "old_address": {"street": "1 Old Road", "postal_code": "K1A0B1"},
        "new_address": {"street": "2 New Road", "postal_code": "K2P1L4"},
        "move": {"date": moving_on.isoformat()},
    }


def address_plan(moving_on: date, **kwargs: Any) -> BundlePlan:
    return resolve_plan(definition(**kwargs), submission(moving_on), {})


def adapters() -> dict[str, ScriptedAdapter]:
    return {name: ScriptedAdapter(name) for name in ("identity", "tax", "licence", "city")}


def test_the_plan_holds_a_step_until_its_system_takes_the_date() -> None:
    planned = address_plan(date(2026, 8, 31))
    # Six months before August 31st is February 28th (no 31st), from midnight in Toronto.
    tax = planned.step("tax").not_before
    assert tax is not None
    assert tax.isoformat() == "2026-02-28T00:00:00-05:00"
    licence = planned.step("licence").not_before
    assert licence is not None
    assert licence.isoformat() == "2026-08-31T00:00:00-04:00"
    assert planned.step("city").not_before is None
    assert planned.step("identity").not_before is None


def test_only_required_steps_roll_a_bundle_back_when_the_definition_says_always() -> None:
    always = address_plan(date(2026, 1, 1))
    assert [s.id for s in always.steps if s.failure_rolls_back] == ["identity", "tax", "licence"]
    usual = address_plan(date(2026, 1, 1), roll_back="before_pivot")
    assert not any(s.failure_rolls_back for s in usual.steps)


async def test_a_future_move_waits_then_a_withdrawal_undoes_what_was_sent(
    own_time_env: WorkflowEnvironment,
) -> None:
    # A server of its own: on the shared one, another test's wait for a result may skip the 20 days.
    time_env = own_time_env
    systems, prefix = adapters(), new_prefix()
    moving_on = (datetime.now(UTC) + timedelta(days=20)).date()
    async with running_workers(time_env.client, systems, prefix):
        handle = await start_bundle(time_env.client, address_plan(moving_on), prefix)
        waiting = await wait_for(
            handle,
            lambda s: (
                step(s, "tax").state is StepState.DONE and step(s, "licence").next_attempt_at is not None
            ),
        )
        licence = step(waiting, "licence")
        assert licence.state is StepState.PENDING
        assert licence.message is not None and moving_on.isoformat() in licence.message.en
        assert moving_on.isoformat() in (licence.waiting_for or "")
        assert waiting.state is BundleState.IN_PROGRESS
        assert not systems["licence"].calls

        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        final = await handle.result()

    assert final.state is BundleState.WITHDRAWN
    assert states(final) == {
        "identity": StepState.DONE,
        "tax": StepState.COMPENSATED,
        "licence": StepState.SKIPPED,
        "city": StepState.COMPENSATED,
    }
    assert not systems["licence"].calls
    undo = [c for c in systems["tax"].calls if c.operation == "compensate"]
    assert len(undo) == 1 and undo[0].fields["old_address"]["street"] == "1 Old Road"
    await assert_replays(handle)


async def test_a_future_move_is_sent_on_the_day(time_env: WorkflowEnvironment) -> None:
    systems, prefix = adapters(), new_prefix()
    moving_on = (datetime.now(UTC) + timedelta(days=3)).date()
    async with running_workers(time_env.client, systems, prefix):
        handle = await start_bundle(time_env.client, address_plan(moving_on), prefix)
        final = await handle.result()  # the test server skips the three days

    assert final.state is BundleState.COMPLETED
    licence = step(final, "licence")
    not_before = address_plan(moving_on).step("licence").not_before
    assert not_before is not None and licence.finished_at is not None
    assert licence.finished_at >= not_before
    assert len(systems["licence"].submits()) == 1


async def test_a_required_refusal_after_the_pivot_restores_every_system_changed(
    time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    systems["licence"].script["submit"] = [RejectedError("licence_suspended", REFUSED)]
    moving_on = (datetime.now(UTC) - timedelta(days=1)).date()
    async with running_workers(time_env.client, systems, prefix):
        handle = await start_bundle(time_env.client, address_plan(moving_on), prefix)
        final = await handle.result()

    assert final.state is BundleState.FAILED
    assert states(final)["licence"] is StepState.REJECTED
    assert states(final)["identity"] is StepState.DONE  # a check has nothing to undo
    for system in ("tax", "city"):
        if systems[system].submits():
            assert [c.operation for c in systems[system].calls] == ["submit", "compensate"]
            assert states(final)[system] is StepState.COMPENSATED
        else:
            assert states(final)[system] is StepState.SKIPPED
    await assert_replays(handle)


async def test_without_whole_roll_back_a_refusal_after_the_pivot_goes_to_an_operator(
    time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    systems["licence"].script["submit"] = [RejectedError("licence_suspended", REFUSED)]
    moving_on = (datetime.now(UTC) - timedelta(days=1)).date()
    async with running_workers(time_env.client, systems, prefix):
        handle = await start_bundle(
            time_env.client, address_plan(moving_on, roll_back="before_pivot"), prefix
        )
        parked = await wait_for(handle, lambda s: step(s, "licence").state is StepState.NEEDS_ATTENTION)
        assert parked.state is BundleState.NEEDS_ATTENTION
        assert not any(c.operation == "compensate" for a in systems.values() for c in a.calls)
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        await handle.result()


async def test_an_optional_refusal_never_rolls_back(time_env: WorkflowEnvironment) -> None:
    systems, prefix = adapters(), new_prefix()
    systems["city"].script["submit"] = [RejectedError("unknown_roll_number", REFUSED)]
    moving_on = (datetime.now(UTC) - timedelta(days=1)).date()
    async with running_workers(time_env.client, systems, prefix):
        handle = await start_bundle(time_env.client, address_plan(moving_on), prefix)
        final = await handle.result()

    assert final.state is BundleState.COMPLETED_WITH_EXCEPTIONS
    assert states(final)["city"] is StepState.REJECTED
    assert not any(c.operation == "compensate" for a in systems.values() for c in a.calls)
