"""The portal on the real servers: a change of address sent from the pages, followed to its end, withdrawn.

Temporal dev server, the legacy sandbox and tellonce's workers, as in
tests/integration/test_address_change.py, with the pages driven over HTTP as a browser would.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from infra.portal.forms import journey_for
from tests.conftest import SandboxProcess
from tests.integration.test_address_change import Stack, example, resident, stack_for
from tests.portal.conftest import CATALOGUE
from tests.portal.support import Browser, Page, flatten

pytestmark = pytest.mark.integration

BUNDLE = "address-change-on"
TRACKING = re.compile(r'id="tracking-id" class="portal-code">([0-9a-f-]{36})<')
ACCESS = re.compile(r'id="access-code" class="portal-code">([A-Z0-9-]{19})<')


@pytest.fixture(scope="module")
async def stack(dev_env: WorkflowEnvironment, sandbox: SandboxProcess) -> AsyncIterator[Stack]:
    """One set of workers and one app for this module's journeys (each bundle has its own id)."""
    async with stack_for(dev_env, sandbox) as shared:
        yield shared


def found(pattern: re.Pattern[str], page: Page) -> str:
    """The first group of a pattern the page must hold."""
    match = pattern.search(page.text)
    assert match is not None, page.text[:2000]
    return match.group(1)


async def follow(
    browser: Browser, lang: str, tracking_id: str, until: set[str], timeout: float = 60
) -> dict[str, Any]:
    """Poll the status page's JSON, as its script does, until the overall state is one of `until`."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen: list[str] = []
    while True:
        response = await browser.client.get(f"/{lang}/status/{tracking_id}/live")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if not seen or seen[-1] != status["state"]:
            seen.append(status["state"])
        if status["state"] in until:
            status["seen"] = seen
            return status
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"status stayed {seen}")
        await asyncio.sleep(0.3)


async def send(browser: Browser, lang: str, submission: dict[str, Any]) -> tuple[Page, Page]:
    """Fill every page with a submission and send it: (review page, confirmation page)."""
    definition = CATALOGUE.get(BUNDLE)
    review = await browser.fill_journey(
        lang, BUNDLE, journey_for(definition), flatten(submission), submission["consents"]
    )
    confirmation = await browser.submit(lang, BUNDLE, review)
    assert confirmation.status == 200, confirmation.text[:2000]
    assert confirmation.page == "confirmation"
    return review, confirmation


async def test_a_change_of_address_sent_in_french_from_the_pages_reaches_every_program(stack: Stack) -> None:
    browser = Browser(stack.api)
    submission = example("complete")
    review, confirmation = await send(browser, "fr", submission)
    tracking_id = found(TRACKING, confirmation)
    access_code = found(ACCESS, confirmation)
    assert stack.intake.check_access(tracking_id, access_code)
    assert '<html lang="fr">' in confirmation.text
    # A second click on "send" (the same review page again) is the same request, not a second one.
    again = await browser.submit("fr", BUNDLE, review)
    assert found(TRACKING, again) == tracking_id
    # The same form sent again with other answers is refused, not made into a second request.
    change = await browser.post(f"/fr/{BUNDLE}/form", review, {"goto": "contact"})
    assert change.page == "contact"
    edited = await browser.post(f"/fr/{BUNDLE}/form", change, {"contact.phone": "613-555-0199"})
    assert edited.page == "review"
    refused = await browser.submit("fr", BUNDLE, edited)
    assert refused.status == 409
    assert "Ce formulaire a déjà été envoyé" in refused.text

    # The confirmation granted this browser the status page: it moves to the end by itself.
    page = await browser.get(f"/fr/status/{tracking_id}")
    assert page.status == 200
    assert page.page == "status"
    assert 'aria-live="polite"' in page.text
    assert '<meta http-equiv="refresh"' in page.text  # without JavaScript, it refreshes itself
    final = await follow(browser, "fr", tracking_id, {"completed", "completed_with_exceptions", "failed"})
    assert final["state"] == "completed", final
    assert len(final["seen"]) >= 2, final["seen"]  # it was seen moving, not only at its end
    assert {s["state"] for s in final["steps"]} == {"done"}
    assert final["state_label"] == "Terminée"
    ended = await browser.get(f"/fr/status/{tracking_id}")
    assert 'data-final="true"' in ended.text
    assert "Terminée" in ended.text
    assert '<meta http-equiv="refresh"' not in ended.text
    # A finished request cannot be withdrawn; the page says so in plain words.
    confirm = await browser.get(f"/fr/status/{tracking_id}/withdraw")
    refused = await browser.post(f"/fr/status/{tracking_id}/withdraw", confirm, {})
    assert refused.status == 409
    assert 'data-outcome="refused"' in refused.text
    # The code never appeared in any address the browser used.
    assert all(access_code not in url for url in browser.visited)


async def test_a_resident_checks_a_request_with_its_code_then_withdraws_it(stack: Stack) -> None:
    old = {
        "street": "18 Placeholder Avenue",
        "municipality": "Toronto",
        "province": "ON",
        "postal_code": "M4C 1B5",
    }
    new = {
        "street": "400 Fictional Road",
        "municipality": "Toronto",
        "province": "ON",
        "postal_code": "M5V 2T6",
    }
    submission = resident("future-move", old=old, new=new, effective_in_days=10)
    _, confirmation = await send(Browser(stack.api), "en", submission)
    tracking_id = found(TRACKING, confirmation)
    access_code = found(ACCESS, confirmation)

    # Another browser (no grant yet) proves the code through the form, never in a URL.
    stack.api.cookies.clear()
    browser = Browser(stack.api)
    form = await browser.get(f"/en/status/{tracking_id}")
    assert form.status == 303
    form = await browser.get("/en/status")
    granted = await browser.client.post(
        "/en/status", data={**form.hidden, "tracking_id": tracking_id, "access_code": access_code.lower()}
    )
    assert granted.status_code == 303
    assert granted.headers["location"] == f"/en/status/{tracking_id}"
    cookie = granted.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert access_code not in cookie

    # The programs that take the move only on its day wait; the resident withdraws meanwhile.
    await follow(browser, "en", tracking_id, {"in_progress"})
    confirm = await browser.get(f"/en/status/{tracking_id}/withdraw")
    assert confirm.page == "withdraw"
    done = await browser.post(f"/en/status/{tracking_id}/withdraw", confirm, {})
    assert done.status == 200, done.text[:1000]
    assert 'data-outcome="withdrawn"' in done.text
    final = await follow(browser, "en", tracking_id, {"withdrawn"}, timeout=90)
    assert final["state_label"] == "Withdrawn"
