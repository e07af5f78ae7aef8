"""Moving through the portal's pages as a resident does: fill a page's fields, press its buttons.

Fields are found the way the pages name them (`infra/portal/forms.py`): each GCDS field element
carries `name` = the submission path and `id` = the path with dashes; the native control inside
it is `<id>-input` (text), `<id>-select` (a list) or `<id>-<value>` (a choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.support import check_page


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A submission as the strings a browser posts, by dotted path (consents left out)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path == "consents":
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        elif value is not None:
            flat[path] = str(value)
    return flat


def field_id(path: str) -> str:
    """The element id the portal gives the field at a submission path."""
    return path.replace(".", "-").replace("_", "-")


async def page_id(page: Page) -> str:
    """Which page of the portal this is (`<main data-page>`)."""
    value = await page.get_attribute("main", "data-page")
    assert value, f"{page.url} has no data-page on <main>"
    return value


async def fields_on(page: Page) -> list[tuple[str, str]]:
    """(element, submission path) of every field of the page's form, in order."""
    found: list[list[str]] = await page.eval_on_selector_all(
        "main form gcds-input[name], main form gcds-radios[name], main form gcds-select[name]",
        "els => els.map(e => [e.tagName.toLowerCase(), e.getAttribute('name')])",
    )
    return [(tag, name) for tag, name in found]


async def fill_page(page: Page, values: Mapping[str, str], consents: Mapping[str, bool]) -> list[str]:
    """Answer every field of the page that `values` (or, on the consent page, `consents`) has."""
    filled = []
    for tag, name in await fields_on(page):
        if name.startswith("consents."):
            purpose = name.removeprefix("consents.")
            choice = "yes" if consents[purpose] else "no"
            await choose(page, f"{field_id(name)}-{choice}")
        elif name not in values:
            continue
        elif tag == "gcds-input":
            await page.locator(f"#{field_id(name)}-input").fill(values[name])
        elif tag == "gcds-select":
            await page.locator(f"#{field_id(name)}-select").select_option(values[name])
        else:
            await choose(page, f"{field_id(name)}-{values[name]}")
        filled.append(name)
    return filled


async def choose(page: Page, option_id: str) -> None:
    """Pick a radio option by clicking its label, as a resident does (GCDS draws over the input)."""
    await page.locator(f'label[for="{option_id}"]').click()
    assert await page.locator(f"#{option_id}").is_checked(), option_id


async def press(page: Page, button_id: str) -> None:
    """Press a GCDS button (by its `button-id`) and wait for the page it leads to."""
    try:
        async with page.expect_navigation(timeout=10_000):
            await page.locator(f"#{button_id}").click()
    except PlaywrightTimeoutError:
        # GCDS refuses to submit a form its own checks find incomplete: say what it showed.
        shown = await page.locator("main").inner_text()
        raise AssertionError(
            f"pressing #{button_id} on {page.url} led nowhere; the page shows:\n{shown}"
        ) from None
    await ready(page)


async def ready(page: Page) -> None:
    """Wait until GCDS has drawn the page's components (they are all defined)."""
    await page.wait_for_load_state("load")
    await page.wait_for_function(
        """() => [...document.querySelectorAll(':not(:defined)')]
                  .every(e => !e.tagName.startsWith('GCDS-'))"""
    )


async def check_in_both_languages(page: Page, name: str, *, toggle: str) -> None:
    """Check a page (axe, screenshots), switch language, check it again, switch back.

    `toggle` is the button id of a form's own language button (it posts the answers), or ""
    for the header's language link.
    """
    start = await page.evaluate("document.documentElement.lang")
    await check_page(page, name)
    for _ in range(2):
        if toggle:
            await press(page, toggle)
        else:
            async with page.expect_navigation():
                await page.locator("gcds-lang-toggle a").click()
            await ready(page)
        lang = await page.evaluate("document.documentElement.lang")
        if lang != start:
            await check_page(page, name)
    assert await page.evaluate("document.documentElement.lang") == start
