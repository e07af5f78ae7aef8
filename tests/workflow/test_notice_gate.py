"""`newborn-on`'s registration waits for the hospital's Notice of Live Birth (time-skipping server).

The real definition, the real matcher workflow and its activities; scripted legacy systems.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from activities.notices import deliver_notice
from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.notices import BirthNotice
from bundles.plan import BundlePlan, resolve_plan
from bundles.submissions import validate_submission
from infra.settings import Settings
from tests.workflow.support import (
    ScriptedAdapter,
    assert_replays,
    decide,
    new_prefix,
    running_workers,
    start_bundle,
    step,
    wait_for,
)
from workflows.birth_notice import BirthNoticeMatchWorkflow
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, DecisionAction, StepState, WithdrawRequest

EXAMPLES = Path(__file__).parents[2] / "examples"
TODAY = date(2026, 11, 23)
REGISTRATION = "birth_registration"


def newborn_plan(**changes: Any) -> BundlePlan:
    raw = json.loads((EXAMPLES / "newborn-on" / "complete.json").read_text())["submission"]
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = raw
        for part in parents:
            target = target[part]
        target[leaf] = value
    definition = Catalogue.load(known_adapters=KNOWN_ADAPTERS).get("newborn-on")
    validated = validate_submission(definition, raw, today=TODAY)
    return resolve_plan(definition, validated.data, validated.consents)


def notice(name: str = "matching", **child: Any) -> BirthNotice:
    data = json.loads((EXAMPLES / "birth-notices" / f"{name}.json").read_text())
    data["child"].update(child)
    return BirthNotice.model_validate(data)


def adapters() -> dict[str, ScriptedAdapter]:
    return {system: ScriptedAdapter(system) for system in KNOWN_ADAPTERS}


async def send_notice(env: WorkflowEnvironment, prefix: str, the_notice: BirthNotice) -> str:
    settings = Settings(
        environment="test",
        task_queue_prefix=prefix,
        correlation_secret=prefix,
    )
    return await deliver_notice(env.client, the_notice, settings=settings, upsert_search_attributes=False)


def registration_submits(systems: dict[str, ScriptedAdapter]) -> list[Any]:
    return systems["on-registrar-births"].submits()


async def test_a_notice_that_arrived_first_lets_the_registration_go_at_once(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        await send_notice(own_time_env, prefix, notice())
        handle = await start_bundle(own_time_env.client, newborn_plan(), prefix)
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    sent = registration_submits(systems)
    assert len(sent) == 1
    assert sent[0].fields["birth_notice"] == {"notice_id": "NLB-2026-0001234"}
    await assert_replays(handle)


async def test_a_statement_waits_for_its_notice_and_nothing_is_sent_before(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        handle = await start_bundle(own_time_env.client, newborn_plan(), prefix)
        waiting = await wait_for(
            handle,
            lambda s: step(s, REGISTRATION).state is StepState.WAITING_REPLY,
        )
        assert "notice of live birth" in (step(waiting, REGISTRATION).waiting_for or "")
        # Two days pass without a notice: still waiting, nothing sent to the registrar or beyond.
        await own_time_env.sleep(timedelta(days=2))
        waiting = await handle.query(BundleWorkflow.status)
        assert step(waiting, REGISTRATION).state is StepState.WAITING_REPLY
        assert not registration_submits(systems) and not systems["esdc-sin"].calls

        await send_notice(own_time_env, prefix, notice())
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert len(registration_submits(systems)) == 1
    await assert_replays(handle)


async def test_a_conflicting_notice_parks_the_registration_with_the_differences_named(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        await send_notice(own_time_env, prefix, notice("conflicting"))
        handle = await start_bundle(own_time_env.client, newborn_plan(), prefix)
        parked = await wait_for(handle, lambda s: step(s, REGISTRATION).state is StepState.NEEDS_ATTENTION)
        registration = step(parked, REGISTRATION)
        assert registration.last_error is not None
        assert registration.last_error.code == "birth_notice_conflict"
        assert "child.sex" in (registration.waiting_for or "")
        assert registration.message is not None and "sex" in registration.message.en.lower()
        assert "sexe" in registration.message.fr.lower()
        # Values never appear, only the names of the facts.
        assert "F" not in (registration.waiting_for or "").split() and "05:32" not in str(registration)
        assert not registration_submits(systems)

        # The hospital sends a corrected notice (same number): it matches and the step goes on.
        await send_notice(own_time_env, prefix, notice("conflicting", sex="F", time_of_birth="04:32"))
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert len(registration_submits(systems)) == 1
    await assert_replays(handle)


async def test_no_notice_by_the_deadline_parks_the_registration_for_an_operator(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        handle = await start_bundle(own_time_env.client, newborn_plan(), prefix)
        parked = await wait_for(
            handle,
            lambda s: step(s, REGISTRATION).state is StepState.NEEDS_ATTENTION,
            skip=(own_time_env, timedelta(days=5)),
            timeout=30,
        )
        registration = step(parked, REGISTRATION)
        assert registration.last_error is not None
        assert registration.last_error.code == "birth_notice_overdue"
        assert parked.state is BundleState.NEEDS_ATTENTION
        assert not registration_submits(systems)

        # An operator who matched the paper notice by hand sends the registration.
        await decide(
            handle,
            step_id=REGISTRATION,
            action=DecisionAction.RETRY,
            actor="op-1",
            reason="paper notice NLB-2026-0001234 checked against the statement",
        )
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert len(registration_submits(systems)) == 1
    assert "birth_notice" not in registration_submits(systems)[0].fields
    assert [(a.step_id, a.action) for a in final.actions] == [(REGISTRATION, "retry")]
    await assert_replays(handle)


async def test_a_statement_without_a_health_number_goes_to_an_operator_at_once(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        handle = await start_bundle(
            own_time_env.client, newborn_plan(**{"birth_parent.health_number": None}), prefix
        )
        parked = await wait_for(handle, lambda s: step(s, REGISTRATION).state is StepState.NEEDS_ATTENTION)
        registration = step(parked, REGISTRATION)
        assert registration.last_error is not None
        assert registration.last_error.code == "no_health_number"
        await decide(
            handle, step_id=REGISTRATION, action=DecisionAction.FAIL, actor="op-1", reason="no notice"
        )
        final = await handle.result()

    # Failing the pivot before it is done rolls back the certificate order.
    assert final.state is BundleState.FAILED
    assert step(final, "birth_certificate").state is StepState.COMPENSATED
    assert not registration_submits(systems)


async def test_a_notice_arriving_after_the_deadline_still_releases_the_parked_registration(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        handle = await start_bundle(own_time_env.client, newborn_plan(), prefix)
        await wait_for(
            handle,
            lambda s: step(s, REGISTRATION).state is StepState.NEEDS_ATTENTION,
            skip=(own_time_env, timedelta(days=5)),
            timeout=30,
        )
        await send_notice(own_time_env, prefix, notice())
        final = await handle.result()

    assert final.state is BundleState.COMPLETED
    assert final.actions == []
    assert registration_submits(systems)[0].fields["birth_notice"] == {"notice_id": "NLB-2026-0001234"}


async def test_a_withdrawn_bundle_takes_its_statement_back_and_leaves_the_notice_open(
    own_time_env: WorkflowEnvironment,
) -> None:
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        handle = await start_bundle(own_time_env.client, newborn_plan(), prefix)
        await wait_for(handle, lambda s: step(s, REGISTRATION).state is StepState.WAITING_REPLY)
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        final = await handle.result()
        matcher_id = await send_notice(own_time_env, prefix, notice())
        matcher = own_time_env.client.get_workflow_handle(matcher_id)
        state = await matcher.query(BirthNoticeMatchWorkflow.state)

    assert final.state is BundleState.WITHDRAWN
    assert step(final, REGISTRATION).state is StepState.SKIPPED
    assert step(final, "birth_certificate").state is StepState.COMPENSATED
    assert not registration_submits(systems)
    # The notice waits for a statement (or for operations), rather than being spent on this one.
    assert [n.notice_id for n in state.open_notices] == ["NLB-2026-0001234"]
    assert state.open_statements == [] and state.matched == []


async def test_two_steps_offering_statements_in_one_workflow_task_replay(
    own_time_env: WorkflowEnvironment,
) -> None:
    # Inline offers run one at a time (`BundleWorkflow._inline`): the SDK hands concurrent local
    # activities' results back in the order they finished, and on replay in the order they were
    # scheduled. This bundle has two offers in its first task; the order in which they would
    # have finished cannot be forced from here, so it checks the case, not the race.
    base = newborn_plan()
    registration = next(s for s in base.steps if s.id == REGISTRATION)
    twin = registration.model_copy(update={"id": f"{REGISTRATION}_twin"})
    doubled = base.model_copy(update={"steps": (*base.steps, twin)})
    systems, prefix = adapters(), new_prefix()
    async with running_workers(own_time_env.client, systems, prefix, correlation_secret=prefix.encode()):
        handle = await start_bundle(own_time_env.client, doubled, prefix)
        await wait_for(
            handle,
            lambda s: all(step(s, i).state is StepState.WAITING_REPLY for i in (REGISTRATION, twin.id)),
        )
        await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest())
        final = await handle.result()

    assert final.state is BundleState.WITHDRAWN
    assert not registration_submits(systems)
    await assert_replays(handle)
