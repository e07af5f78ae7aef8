"""The ops console in Chromium, on the browser session's real servers.

A birth-certificate order is sent to the sandbox's `on-certificates`, which asks for a person
(its review rule matches the child's surname, for this bundle's keys only). An operator signs in
with a token of the local issuer, finds the bundle in the stuck list, reads why it waits in its
timeline, amends the surname once with a value the submission rules refuse (the error summary
links to the field), then with a valid one: the step is sent again and the bundle completes.
Every page passes axe-core and no request leaves the app's host (the `contexts` fixture checks).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.plan import BundlePlan, resolve_plan
from bundles.submissions.validation import validate_submission
from infra.ops.auth import LocalIssuer, Role
from infra.ops.console import field_id
from infra.ops.engine import OpsEngine
from tests.browser.conftest import Contexts, Portal
from tests.browser.journey import ready
from tests.browser.support import axe_check
from workflows.bundle import BundleWorkflow
from workflows.models import BundleInput, BundleState, BundleStatus
from workflows.names import SA_BUNDLE_ID, SA_JURISDICTION, SA_STATE, bundle_task_queue

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SYSTEM = "on-certificates"
STEP = "birth_certificate"
EXAMPLE = Path(__file__).parents[2] / "examples" / "newborn-on" / "complete.json"
SURNAME = "child.surname"


def certificate_plan() -> tuple[BundlePlan, str]:
    """The newborn bundle's certificate order alone, and the child's surname in it."""
    definition = Catalogue.load(known_adapters=KNOWN_ADAPTERS).get("newborn-on")
    submission = json.loads(EXAMPLE.read_text())["submission"]
    validated = validate_submission(definition, submission)
    plan = resolve_plan(definition, validated.data, validated.consents)
    step = next(s for s in plan.steps if s.id == STEP)
    return plan.model_copy(update={"steps": (step,)}), submission["child"]["surname"]


async def start(
    client: Client, plan: BundlePlan, prefix: str, tracking_id: str
) -> WorkflowHandle[BundleWorkflow, BundleStatus]:
    return await client.start_workflow(
        BundleWorkflow.run,
        BundleInput(
            submission_id=tracking_id, plan=plan, received_at=datetime.now(UTC), task_queue_prefix=prefix
        ),
        id=tracking_id,
        task_queue=bundle_task_queue(prefix),
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_BUNDLE_ID, plan.bundle_id),
                SearchAttributePair(SA_JURISDICTION, plan.jurisdiction),
                SearchAttributePair(SA_STATE, "received"),
            ]
        ),
    )


async def submit(page: Page, button_id: str) -> None:
    """Press a GCDS submit button and wait for the page the form leads to."""
    async with page.expect_navigation(timeout=15_000):
        await page.locator(f"#{button_id}").click()
    await ready(page)


async def needs_attention(handle: WorkflowHandle[BundleWorkflow, BundleStatus]) -> None:
    """Wait until the sandbox's review rule has put the step in an operator's hands."""
    for _ in range(100):
        status = await handle.query(BundleWorkflow.status)
        if status.state is BundleState.NEEDS_ATTENTION:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"the bundle never needed attention: {status.model_dump_json()}")


async def open_stuck_list_until_listed(page: Page, url: str, tracking_id: str) -> None:
    """Visibility lags the workflow by seconds: reload the filtered list until the bundle shows."""
    for _ in range(40):
        await page.goto(url)
        await ready(page)
        if await page.locator(f"#bundle-{tracking_id}").count():
            return
        await page.wait_for_timeout(500)
    pytest.fail(f"{tracking_id} never appeared in the stuck list")


async def test_stuck_list_timeline_then_an_amend_refused_then_accepted(
    portal: Portal, contexts: Contexts
) -> None:
    plan, surname = certificate_plan()
    tracking_id = str(uuid.uuid4())
    await portal.sandbox.set_faults(
        SYSTEM,
        review_when={"field": "subject.surname", "equals": surname, "code": "name_check"},
        key_prefix=tracking_id,
    )
    try:
        handle = await start(portal.client, plan, portal.settings.task_queue_prefix, tracking_id)
        await needs_attention(handle)
        issuer = LocalIssuer.for_settings(portal.settings)
        token = issuer.mint("operator-ana", Role.OPERATOR, timedelta(minutes=10))
        context, _ = await contexts.new()
        page = await context.new_page()

        # Not signed in: the console sends the browser to its sign-in page.
        await page.goto(f"{portal.url}/ops/en/")
        await ready(page)
        assert page.url.endswith("/ops/en/sign-in")
        await axe_check(page, "console sign-in")
        await page.locator("#token-input").fill(token)
        await submit(page, "sign-in")
        cookies = {c["name"]: c for c in await context.cookies()}
        session = cookies["tellonce-ops-session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert token not in session["value"]

        await open_stuck_list_until_listed(
            page, f"{portal.url}/ops/en/?system={SYSTEM}&reason=needs_attention", tracking_id
        )
        row = await page.locator(f"#bundle-{tracking_id}").inner_text()
        assert "A step needs a person to decide" in row and STEP in row
        await axe_check(page, "console stuck list")

        await page.locator(f"#bundle-{tracking_id} a").click()
        await ready(page)
        step = await page.locator(f"#step-{STEP}").inner_text()
        assert "needs attention" in step.lower() and "name_check" in step
        assert surname not in await page.locator("main").inner_text()  # no data until asked for
        await axe_check(page, "console timeline")

        # A surname the submission rules refuse: the summary links to the field, nothing is sent.
        await page.goto(f"{portal.url}/ops/en/bundles/{tracking_id}/steps/{STEP}/amend")
        await ready(page)
        await axe_check(page, "console amend form")
        await page.locator(f"#{field_id(SURNAME)}-input").fill("Tr3mbl@y")
        await page.locator("#reason-amend-input").fill("surname typed wrong at the hospital")
        await submit(page, "amend-submit")
        summary = page.locator("gcds-error-summary")
        links = json.loads(await summary.get_attribute("error-links") or "{}")
        assert list(links) == [f"#{field_id(SURNAME)}"]
        assert await page.locator(f"#{field_id(SURNAME)}").get_attribute("error-message")
        await axe_check(page, "console amend form with errors")
        assert (await handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION

        await page.locator(f"#{field_id(SURNAME)}-input").fill("Tremblay")
        await submit(page, "amend-submit")
        assert page.url.endswith(f"/bundles/{tracking_id}?done=amend")
        assert await page.locator("#done").count() == 1
        decisions = await page.locator("#decisions").inner_text()
        assert "operator-ana" in decisions and "surname typed wrong at the hospital" in decisions
        await axe_check(page, "console timeline after amend")

        final = await handle.result()
        assert final.state is BundleState.COMPLETED
        ledger = await portal.sandbox.ledger(SYSTEM, key_prefix=tracking_id)
        assert [entry["fields"]["subject"]["surname"] for entry in ledger] == ["Tremblay"]
    finally:
        await portal.sandbox.clear_faults(SYSTEM)


async def listed_all(page: Page, url: str, tracking_ids: list[str]) -> None:
    """Reload the filtered stuck list until every bundle shows (visibility lags by seconds)."""
    for _ in range(40):
        await page.goto(url)
        await ready(page)
        counts = [await page.locator(f"#bundle-{t}").count() for t in tracking_ids]
        if all(counts):
            return
        await page.wait_for_timeout(500)
    pytest.fail(f"{tracking_ids} never all appeared in the stuck list")


async def test_supervisor_bulk_retries_after_a_preview_then_pauses_and_resumes_a_system(
    portal: Portal, contexts: Contexts
) -> None:
    plan, surname = certificate_plan()
    # Tracking ids sharing a prefix, so the sandbox's review rule holds these two bundles only.
    shared = uuid.uuid4().hex[:12]
    tracking_ids = [f"{shared[:8]}-{shared[8:]}-{str(uuid.uuid4())[14:]}" for _ in range(2)]
    prefix = tracking_ids[0][:13]
    await portal.sandbox.set_faults(
        SYSTEM,
        review_when={"field": "subject.surname", "equals": surname, "code": "name_check"},
        key_prefix=prefix,
    )
    try:
        handles = [
            await start(portal.client, plan, portal.settings.task_queue_prefix, t) for t in tracking_ids
        ]
        for handle in handles:
            await needs_attention(handle)
        # The name check is settled at the source: a retry now goes through.
        await portal.sandbox.clear_faults(SYSTEM)
        token = LocalIssuer.for_settings(portal.settings).mint(
            "supervisor-zoe", Role.SUPERVISOR, timedelta(minutes=10)
        )
        context, _ = await contexts.new()
        page = await context.new_page()
        await page.goto(f"{portal.url}/ops/en/sign-in")
        await ready(page)
        await page.locator("#token-input").fill(token)
        await submit(page, "sign-in")

        await listed_all(page, f"{portal.url}/ops/en/?system={SYSTEM}&reason=needs_attention", tracking_ids)
        async with page.expect_navigation():
            await page.locator("#bulk-link").click()
        await ready(page)
        assert "/ops/en/bulk?system=on-certificates&reason=needs_attention" in page.url
        await axe_check(page, "console bulk form")
        await page.locator("#reason-bulk-input").fill("name check settled with the registrar")
        await submit(page, "bulk-preview")
        assert page.url.endswith("/ops/en/bulk/preview")  # the filter went in the body
        for tracking_id in tracking_ids:
            row = await page.locator(f"#target-{tracking_id}-{STEP}").inner_text()
            assert "Needs attention" in row and "same idempotency key" in row
        assert int(await page.locator("#bulk-count").get_attribute("data-count") or 0) >= 2
        await axe_check(page, "console bulk preview")
        for handle in handles:  # a preview changes nothing
            assert (await handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION

        await submit(page, "bulk-confirm")
        for tracking_id in tracking_ids:
            outcome = page.locator(f"#outcome-{tracking_id}-{STEP}")
            assert await outcome.get_attribute("data-accepted") == "true"
        await axe_check(page, "console bulk report")
        for handle, tracking_id in zip(handles, tracking_ids, strict=True):
            assert (await handle.result()).state is BundleState.COMPLETED
            # The retry reused the step's idempotency key: one effect per bundle.
            assert len(await portal.sandbox.ledger(SYSTEM, key_prefix=tracking_id)) == 1

        async with page.expect_navigation():
            await page.locator(".console-nav a[href='/ops/en/systems']").click()
        await ready(page)
        health_row = page.locator(f"#system-{SYSTEM}")
        assert await health_row.get_attribute("data-paused") == "false"
        await axe_check(page, "console legacy systems")
        await page.locator("#pause-system-select").select_option(SYSTEM)
        await page.locator("#pause-reason-input").fill("registrar maintenance tonight")
        await submit(page, "pause")
        assert await health_row.get_attribute("data-paused") == "true"
        assert "registrar maintenance tonight" in await health_row.inner_text()
        assert await page.locator("#done").count() == 1
        await axe_check(page, "console legacy systems, one paused")

        await page.locator(f"#resume-{SYSTEM}-rate-input").fill("3")
        await submit(page, f"resume-{SYSTEM}")
        assert await health_row.get_attribute("data-paused") == "false"
        assert "3 per second" in await health_row.inner_text()  # the rate given on resume
    finally:
        await portal.sandbox.clear_faults(SYSTEM)
        state = await OpsEngine(portal.client, portal.settings).system_state(SYSTEM)
        if state.paused:  # leave the session's other tests a system that answers
            await OpsEngine(portal.client, portal.settings).resume(SYSTEM, "tests", "test over")
