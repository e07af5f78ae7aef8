"""Accessibility beyond axe-core: keyboard only, error summaries, 200 % zoom, no JavaScript.

WCAG 2.1 AA asks for things a rule engine cannot see: a whole form completed with the keyboard
(2.1.1), errors listed with links that take focus to the fields (3.3.1, 2.4.3), content that
reflows at 200 % zoom (1.4.4, 1.4.10), and here also a status page that works without scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from bundles.validators import toronto_today
from tests.browser.conftest import Contexts, Portal
from tests.browser.journey import field_id, fields_on, flatten, page_id, ready
from tests.browser.support import assert_reflows, axe_check, snap

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("completed", "completed_with_exceptions", "failed", "withdrawn")
FOCUSED = """() => {
    let element = document.activeElement;
    while (element && element.shadowRoot && element.shadowRoot.activeElement) {
        element = element.shadowRoot.activeElement;
    }
    return element ? element.id || element.tagName.toLowerCase() : null;
}"""
"""The id of the element that has the focus, looking inside GCDS components' shadow roots."""


def example(bundle: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "examples" / bundle / "complete.json").read_text())[
        "submission"
    ]
    return data


async def focused(page: Page) -> str | None:
    value: str | None = await page.evaluate(FOCUSED)
    return value


async def tab_to(page: Page, element_id: str, *, limit: int = 80) -> int:
    """Press Tab until the element has the focus; how many presses it took."""
    for presses in range(1, limit + 1):
        await page.keyboard.press("Tab")
        if await focused(page) == element_id:
            return presses
    pytest.fail(f"Tab never reached #{element_id} on {page.url} in {limit} presses")


async def enter_on(page: Page, element_id: str) -> None:
    """Tab to a button or link and press Enter; wait for the page it leads to."""
    await tab_to(page, element_id)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await ready(page)


async def answer_by_keyboard(page: Page, values: dict[str, str], consents: dict[str, bool]) -> None:
    """Answer the page's fields in Tab order: type text, type-ahead in lists, Space on a choice."""
    for tag, name in await fields_on(page):
        if name.startswith("consents."):
            choice = "yes" if consents[name.removeprefix("consents.")] else "no"
        elif name in values:
            choice = values[name]
        else:
            continue
        fid = field_id(name)
        if tag == "gcds-input":
            await tab_to(page, f"{fid}-input")
            await page.keyboard.type(choice)
        elif tag == "gcds-select":
            label = await page.locator(f"#{fid}-select option[value='{choice}']").inner_text()
            await tab_to(page, f"{fid}-select")
            await page.keyboard.type(label)
            assert await page.locator(f"#{fid}-select").input_value() == choice
        else:
            # Tab enters a group of choices on its first option (or the chosen one).
            await tab_to(page, f"{fid}-{choice}")
            await page.keyboard.press("Space")
            assert await page.locator(f"#{fid}-{choice}").is_checked()


async def test_a_change_of_address_completed_with_the_keyboard_alone(page: Page, portal: Portal) -> None:
    submission = example("address-change-on")
    submission["effective_date"] = toronto_today().isoformat()
    values = flatten(submission)
    await page.goto(f"{portal.url}/en/address-change-on/")
    await ready(page)

    await enter_on(page, "start-now")
    seen: list[str] = []
    while (current := await page_id(page)) != "review":
        assert len(seen) < 8, seen
        seen.append(current)
        await answer_by_keyboard(page, values, submission["consents"])
        await enter_on(page, "continue")
        assert await page.locator("#error-summary").count() == 0, await page.locator("main").inner_text()
    assert seen == ["resident", "identity", "addresses", "contact", "consent"]

    # Focus order runs both ways: back from the send button, then forward to it again.
    await tab_to(page, "submit")
    await page.keyboard.press("Shift+Tab")
    assert await focused(page) != "submit"
    await page.keyboard.press("Tab")
    assert await focused(page) == "submit"
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await ready(page)

    assert await page_id(page) == "confirmation"
    assert (await page.locator("#tracking-id").inner_text()).strip()


async def test_an_invalid_page_lists_its_errors_and_each_link_takes_focus_to_its_field(
    page: Page, portal: Portal
) -> None:
    await page.goto(f"{portal.url}/en/newborn-on/form")
    await ready(page)
    # Answers the browser accepts and the service does not: a birth in the future, a 25th hour.
    values = {
        "child.surname": "Exemple",
        "child.date_of_birth": "2099-01-01",
        "child.time_of_birth": "25:61",
        "child.place_of_birth.municipality": "Ottawa",
    }
    for path, value in values.items():
        await page.locator(f"#{field_id(path)}-input").fill(value)
    await page.locator('label[for="child-sex-X"]').click()
    await page.locator("#child-place-of-birth-province-select").select_option("ON")
    async with page.expect_navigation():
        await page.locator("#continue").click()
    await ready(page)

    assert await page_id(page) == "child"
    assert (await page.title()).startswith("Error: 2 problems"), await page.title()
    links = page.locator("gcds-error-summary a")
    hrefs = [await links.nth(i).get_attribute("href") for i in range(await links.count())]
    assert hrefs == ["#child-date-of-birth", "#child-time-of-birth"]
    # The summary is where the focus starts, so a screen reader reads it first.
    await page.wait_for_function(
        "() => document.activeElement && document.activeElement.id === 'error-summary'", timeout=5000
    )
    await axe_check(page, "newborn-on-child-errors")
    await snap(page, "newborn-on-child-errors")

    # Each field says what is wrong with it, next to it.
    for path in ("child.date_of_birth", "child.time_of_birth"):
        host = page.locator(f"#{field_id(path)}")
        markup = await host.evaluate("element => element.outerHTML")
        assert await host.get_attribute("error-message"), f"{path} shows no error of its own: {markup}"
        message = await page.locator(f"#{field_id(path)} gcds-error-message").inner_text()
        assert message.strip(), path
    for i, href in enumerate(hrefs):
        await links.nth(i).click()
        assert href is not None
        assert await focused(page) == f"{href.removeprefix('#')}-input"


async def test_pages_reflow_at_200_percent_zoom(contexts: Contexts, portal: Portal) -> None:
    # A 1280-px-wide window at 200 % zoom lays pages out in 640 CSS pixels, each two device pixels.
    context, _ = await contexts.new(viewport={"width": 640, "height": 400}, device_scale_factor=2)
    page = await context.new_page()
    for path in (
        "/en/",
        "/fr/newborn-on/",
        "/en/newborn-on/form",
        "/fr/address-change-on/form",
        "/en/status",
    ):
        await page.goto(f"{portal.url}{path}")
        await ready(page)
        await assert_reflows(page, f"{path} at 200 %")


async def test_the_status_page_works_without_javascript(contexts: Contexts, portal: Portal) -> None:
    submission = example("newborn-on")
    submission["child"]["given_names"] = "Sansscript"
    submission["child"]["time_of_birth"] = "23:17"
    async with httpx.AsyncClient(base_url=portal.url) as api:
        response = await api.post("/api/v1/bundles/newborn-on/submissions", json=submission)
    assert response.status_code == 202, response.text
    accepted = response.json()
    await portal.send_birth_notice(submission, accepted["tracking_id"])

    context, _ = await contexts.new(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{portal.url}/en/status")
    # GCDS draws its fields with scripts: without them the form needs native controls of its own.
    for control in ("input[name=tracking_id]", "input[name=access_code]", "main form button[type=submit]"):
        assert await page.locator(control).count() == 1, (
            f"without JavaScript the status form has no {control}"
        )
    await page.locator("input[name=tracking_id]").fill(accepted["tracking_id"])
    await page.locator("input[name=access_code]").fill(accepted["access_code"])
    async with page.expect_navigation():
        await page.locator("main form button[type=submit]").click()
    assert await page_id(page) == "status"

    for _ in range(60):
        state = await page.get_attribute("#overall-state", "data-state")
        if state in FINAL:
            break
        # Without scripts the page offers a plain link to itself (and refreshes in <noscript>).
        async with page.expect_navigation():
            await page.locator("#refresh-link").click()
    assert state == "completed"
    rows = await page.locator("tr[data-step] .portal-state").all_inner_texts()
    assert len(rows) == 5 and all(text.strip() == "Done" for text in rows), rows
    # Screenshots only: axe-core itself needs scripts (its checks wait on timers that never fire
    # here); the same page with scripts is checked by the journeys.
    await snap(page, "status-without-javascript")
