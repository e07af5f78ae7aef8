"""The resident's journeys in Chromium, from the start page to a status page in its final state.

A newborn in English (the hospital's matching notice is sent once the form is in, with the
details typed into it) and a change of address in French. Every page is checked by axe-core and
photographed in both languages, at desktop and phone widths; the form pages switch language with
their own button (which keeps the answers), the others with the header's toggle. The status page
must reach the final state by itself: no reload, the URL and a marker left on `window` survive.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from bundles.validators import toronto_today
from tests.browser.conftest import Portal
from tests.browser.journey import check_in_both_languages, fill_page, flatten, page_id, press, ready
from tests.browser.support import check_page

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("completed", "completed_with_exceptions", "failed", "withdrawn")
MAX_PAGES = 12
"""More pages than any journey has: a form that keeps refusing fails the test instead of looping."""


def newborn() -> dict[str, Any]:
    """The newborn example with a name of its own and a birth minute no other test uses."""
    path = ROOT / "examples" / "newborn-on" / "complete.json"
    submission: dict[str, Any] = json.loads(path.read_text())["submission"]
    submission["child"]["given_names"] = "Navigatrice"
    submission["child"]["time_of_birth"] = f"{random.randrange(24):02d}:{random.randrange(60):02d}"
    return submission


def moving_in_french() -> dict[str, Any]:
    """Léa Gagnon, the sandbox's synthetic resident for demos in French, moving within Ottawa today."""
    return {
        "language": "fr",
        "consents": dict.fromkeys(
            (
                "cra_address",
                "service_canada_address",
                "elections_canada",
                "mto_address",
                "ohip_address",
                "municipal_address",
            ),
            True,
        ),
        "resident": {
            "given_names": "Léa",
            "surname": "Gagnon",
            "date_of_birth": "1999-12-01",
            "sin": "141 421 354",
            "health_number": "7012456393",
            "driver_licence_number": "G25007890991201",
        },
        "identity": {
            "document_type": "citizenship_certificate",
            "document_last4": "9904",
            "old_postal_code": "K1N 6N5",
        },
        "old_address": {
            "street": "45 rue de l'Exemple",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "K1N 6N5",
        },
        "new_address": {
            "street": "300 promenade Fictive",
            "unit": "7",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "K2P 2B7",
        },
        "effective_date": toronto_today().isoformat(),
        "contact": {"email": "lea.gagnon@example.ca", "phone": "613-555-0199"},
    }


async def through_the_form(page: Page, bundle_id: str, submission: dict[str, Any]) -> tuple[str, str]:
    """From the bundle's start page to its confirmation; the tracking id and access code shown there."""
    values = flatten(submission)
    assert await page_id(page) == "start"
    await check_in_both_languages(page, f"{bundle_id}-start", toggle="")
    await press(page, "start-now")
    seen: list[str] = []
    for _ in range(MAX_PAGES):
        current = await page_id(page)
        if current == "confirmation":
            break
        seen.append(current)
        summary = await page.locator("#error-summary").count()
        assert not summary, f"{current} refused the answers: {await page.locator('main').inner_text()}"
        if current == "review":
            await check_in_both_languages(page, f"{bundle_id}-review", toggle="switch-language")
            await press(page, "submit")
            continue
        await fill_page(page, values, submission["consents"])
        # Filled first: a form's language button posts the answers, and GCDS lets no form with
        # a required field left empty be posted.
        await check_in_both_languages(page, f"{bundle_id}-{current}", toggle="switch-language")
        await press(page, "continue")
    else:
        pytest.fail(f"no confirmation after {seen}")
    assert seen[-2:] == ["consent", "review"], seen
    await check_page(page, f"{bundle_id}-confirmation")
    tracking_id = (await page.locator("#tracking-id").inner_text()).strip()
    access_code = (await page.locator("#access-code").inner_text()).strip()
    assert tracking_id and access_code
    return tracking_id, access_code


async def states(page: Page) -> dict[str, str]:
    """The overall state and each step's, as the status page shows them now."""
    found: dict[str, str] = await page.evaluate(
        """() => Object.fromEntries([
            ['overall', document.getElementById('overall-state').dataset.state],
            ...[...document.querySelectorAll('tr[data-step]')].map(
                row => [row.dataset.step, row.querySelector('.portal-state').dataset.state]),
        ])"""
    )
    return found


async def follow_to_the_end(page: Page, before_final: Any = None) -> dict[str, str]:
    """Stay on the status page until it shows a final state by itself: same document, same URL.

    With `before_final` (what lets the bundle end, awaited once the page is open) the page must
    have changed in front of the resident; without it the bundle may already have ended.
    """
    url = page.url
    await page.evaluate("window.__tellonceMarker = 'still the same document'")
    first = await states(page)
    if before_final is not None:
        assert first["overall"] not in FINAL, f"the bundle ended before the page could follow it: {first}"
        await before_final
    # A function, not an expression: the page's CSP forbids eval, which an expression would need.
    await page.wait_for_function(
        "(finals) => finals.includes(document.getElementById('overall-state').dataset.state)",
        arg=list(FINAL),
        timeout=90_000,
        polling=250,
    )
    last = await states(page)
    assert page.url == url
    assert await page.evaluate("window.__tellonceMarker") == "still the same document", "the page reloaded"
    if before_final is not None:
        assert last != first
    # A final request no longer updates and can no longer be withdrawn: the page stops saying so.
    assert not await page.locator("#withdraw-link").is_visible()
    return last


async def test_newborn_in_english_from_the_start_page_to_a_final_status(page: Page, portal: Portal) -> None:
    submission = newborn()
    await page.goto(f"{portal.url}/")
    await ready(page)
    await check_page(page, "splash")
    async with page.expect_navigation():
        await page.locator('a[href="/en/"]').click()
    await ready(page)
    await check_in_both_languages(page, "home", toggle="")
    async with page.expect_navigation():
        await page.locator('a[href="/en/newborn-on/"]').click()
    await ready(page)

    tracking_id, _ = await through_the_form(page, "newborn-on", submission)
    async with page.expect_navigation():
        await page.locator("#status-link").click()
    await ready(page)
    assert await page_id(page) == "status"
    assert tracking_id in page.url and await page.evaluate("document.documentElement.lang") == "en"

    # Registration waits for the hospital's notice: it arrives while the resident watches.
    final = await follow_to_the_end(page, portal.send_birth_notice(submission, tracking_id))
    assert final["overall"] == "completed", final
    assert set(final) - {"overall"} == {
        "birth_registration",
        "birth_certificate",
        "social_insurance_number",
        "canada_child_benefit",
        "education_savings_referral",
    }
    assert {v for k, v in final.items() if k != "overall"} == {"done"}
    await check_in_both_languages(page, "status-final", toggle="")


async def test_change_of_address_in_french_from_the_start_page_to_a_final_status(
    page: Page, portal: Portal
) -> None:
    await page.goto(f"{portal.url}/fr/")
    await ready(page)
    assert await page.evaluate("document.documentElement.lang") == "fr"
    async with page.expect_navigation():
        await page.locator('a[href="/fr/address-change-on/"]').click()
    await ready(page)

    tracking_id, _ = await through_the_form(page, "address-change-on", moving_in_french())
    async with page.expect_navigation():
        await page.locator("#status-link").click()
    await ready(page)
    assert tracking_id in page.url and await page.evaluate("document.documentElement.lang") == "fr"

    final = await follow_to_the_end(page)
    assert final["overall"] == "completed", final
    assert {v for k, v in final.items() if k != "overall"} == {"done"}
    # The French journey's last page, in its own language.
    await check_page(page, "status-final")


async def test_switching_language_keeps_every_answer_of_a_form_page(page: Page, portal: Portal) -> None:
    submission = newborn()
    await page.goto(f"{portal.url}/en/newborn-on/form")
    await ready(page)
    filled = await fill_page(page, flatten(submission), submission["consents"])
    assert "child.sex" in filled and "child.place_of_birth.province" in filled

    for lang in ("fr", "en"):
        # The header's toggle, as a resident uses it; the page's script posts the answers along.
        async with page.expect_navigation():
            await page.locator("gcds-lang-toggle a").click()
        await ready(page)
        assert await page.evaluate("document.documentElement.lang") == lang
        assert await page_id(page) == "child"
    await press(page, "continue")

    assert await page.locator("#error-summary").count() == 0, await page.locator("main").inner_text()
    assert await page_id(page) == "birth_parent"


async def test_an_empty_form_page_can_switch_language(page: Page, portal: Portal) -> None:
    await page.goto(f"{portal.url}/fr/address-change-on/form")
    await ready(page)
    assert await page_id(page) == "resident"

    await press(page, "switch-language")

    assert await page.evaluate("document.documentElement.lang") == "en"
    assert await page_id(page) == "resident"
    assert await page.locator("#error-summary").count() == 0


async def test_withdrawal_asks_first_then_confirms_and_the_other_pages_pass_too(
    page: Page, portal: Portal
) -> None:
    # A newborn whose hospital notice never comes: registration waits, so it can be withdrawn.
    submission = newborn()
    async with httpx.AsyncClient(base_url=portal.url) as api:
        response = await api.post("/api/v1/bundles/newborn-on/submissions", json=submission)
    assert response.status_code == 202, response.text
    accepted = response.json()

    await page.goto(f"{portal.url}/en/status")
    await ready(page)
    await check_in_both_languages(page, "status-access", toggle="")
    await page.locator("#tracking-id-input").fill(accepted["tracking_id"])
    await page.locator("#access-code-input").fill(accepted["access_code"])
    await press(page, "check-status")
    assert await page_id(page) == "status"
    assert (await states(page))["overall"] not in FINAL
    await check_in_both_languages(page, "status-in-progress", toggle="")

    async with page.expect_navigation():
        await page.locator("#withdraw-link").click()
    await ready(page)
    assert await page_id(page) == "withdraw"
    await check_in_both_languages(page, "withdraw", toggle="")
    await press(page, "confirm-withdraw")
    await check_page(page, "withdrawn")
    assert await page_id(page) == "withdrawn"

    async with httpx.AsyncClient(base_url=portal.url) as api:
        for _ in range(100):
            status = await api.get(accepted["status_url"], headers={"X-Access-Code": accepted["access_code"]})
            if status.json()["state"] in FINAL:
                break
            await asyncio.sleep(0.2)
    assert status.json()["state"] == "withdrawn"

    # A page that does not exist answers in the site's own layout, in the path's language.
    for lang in ("en", "fr"):
        answer = await page.goto(f"{portal.url}/{lang}/no-such-service/")
        assert answer is not None and answer.status == 404
        await ready(page)
        await check_page(page, "not-found")
