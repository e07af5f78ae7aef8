"""The browser checks themselves can fail: each is shown a page that breaks its rule.

Pages are served by Playwright's request interception with the portal's kind of CSP (scripts
and styles by nonce only), so these tests need Chromium but none of the servers.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route

from tests.browser.support import (
    AXE_TAGS,
    DESKTOP,
    PHONE,
    RequestLog,
    assert_reflows,
    axe_check,
    axe_violations,
    snap,
)

pytestmark = pytest.mark.browser

ORIGIN = "http://portal.test"
# Images from anywhere: the request-log test needs the browser to try the other host.
STRICT_CSP = "default-src 'self'; script-src 'nonce-n0nce'; style-src 'self' 'nonce-n0nce'; img-src *"


def document(body: str, *, lang: str = "en") -> str:
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>Harness</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f"<body><main><h1>Harness</h1>{body}</main></body></html>"
    )


@pytest.fixture
async def served(browser: Browser) -> AsyncIterator[tuple[BrowserContext, RequestLog, dict[str, str]]]:
    """A context where `http://portal.test/<path>` serves the page registered under that path."""
    context = await browser.new_context(viewport=DESKTOP)
    log = RequestLog(ORIGIN)
    log.attach(context)
    pages: dict[str, str] = {}

    async def fulfil(route: Route) -> None:
        url = route.request.url
        if url.startswith(ORIGIN + "/") and url.removeprefix(ORIGIN) in pages:
            await route.fulfill(
                status=200,
                headers={"content-type": "text/html; charset=utf-8", "content-security-policy": STRICT_CSP},
                body=pages[url.removeprefix(ORIGIN)],
            )
        else:
            # Nothing leaves the machine, but the attempt is on the log.
            await route.abort()

    await context.route("**/*", fulfil)
    yield context, log, pages
    await context.close()


async def open_page(served: tuple[BrowserContext, RequestLog, dict[str, str]], body: str, **kw: str) -> Page:
    context, _, pages = served
    pages["/"] = document(body, **kw)
    page = await context.new_page()
    await page.goto(f"{ORIGIN}/")
    return page


async def test_a_request_to_another_host_is_on_the_log(
    served: tuple[BrowserContext, RequestLog, dict[str, str]],
) -> None:
    _, log, _ = served
    await open_page(served, '<img alt="logo" src="https://fonts.example.net/logo.png">')

    assert log.foreign() == ["https://fonts.example.net/logo.png"]
    with pytest.raises(AssertionError, match="left tellonce's own host"):
        log.assert_clean()
    # The same host on another port is another server.
    assert RequestLog("http://127.0.0.1:8000", ["http://127.0.0.1:8001/x"]).foreign() == [
        "http://127.0.0.1:8001/x"
    ]
    assert RequestLog("http://127.0.0.1:8000", ["http://127.0.0.1:8000/x", "data:,"]).foreign() == []


async def test_a_csp_violation_is_on_the_log(
    served: tuple[BrowserContext, RequestLog, dict[str, str]],
) -> None:
    _, log, _ = served
    page = await open_page(served, "<script>document.title = 'inline'</script>")

    assert await page.title() == "Harness", "the CSP let an inline script without the nonce run"
    assert log.csp_violations
    with pytest.raises(AssertionError, match="Content Security Policy"):
        log.assert_clean()


async def test_axe_runs_under_the_strict_csp_and_names_what_fails(
    served: tuple[BrowserContext, RequestLog, dict[str, str]],
) -> None:
    page = await open_page(served, '<form><input id="postal" name="postal"></form>')

    violations = await axe_violations(page)
    assert {v["id"] for v in violations} == {"label"}
    with pytest.raises(AssertionError) as failure:
        await axe_check(page, "unlabelled field")
    report = str(failure.value)
    assert "label (critical)" in report and '["#postal"]' in report
    # Only WCAG 2.x A/AA rules: a best practice (a landmark-less region) is not reported.
    assert set(AXE_TAGS) == {"wcag2a", "wcag2aa", "wcag21a", "wcag21aa"}

    fixed = await open_page(served, '<form><label for="p">Postal code</label><input id="p" name="p"></form>')
    await axe_check(fixed, "labelled field")


async def test_snap_saves_both_widths_and_refuses_sideways_scrolling(
    served: tuple[BrowserContext, RequestLog, dict[str, str]], tmp_path: Path
) -> None:
    page = await open_page(served, "<p>Bonjour</p>", lang="fr")

    saved = await snap(page, "harness", folder=tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in saved] == [
        "fr/harness-desktop.png",
        "fr/harness-phone.png",
    ]
    assert [png_width(p) for p in saved] == [DESKTOP["width"], PHONE["width"]]
    assert page.viewport_size == DESKTOP

    wide = await open_page(served, "<pre>" + "x" * 400 + "</pre>")
    await wide.set_viewport_size(PHONE)
    with pytest.raises(AssertionError, match="scrolls sideways"):
        await assert_reflows(wide, "wide")
    with pytest.raises(AssertionError, match="scrolls sideways"):
        await snap(wide, "wide", folder=tmp_path)


def png_width(path: Path) -> int:
    """The width in a PNG's IHDR chunk (bytes 16-20)."""
    width: int = struct.unpack(">I", path.read_bytes()[16:20])[0]
    return width
