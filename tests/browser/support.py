"""What every browser test checks on a page: its requests, axe-core's verdict, screenshots, reflow.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright's bundled driver; Playwright's
own browser download is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, ConsoleMessage, Page, Request, ViewportSize

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_SOURCE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
"""Where `snap` saves each page's screenshots (README names it; CI keeps it as an artifact)."""

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 740}
LOCAL_SCHEMES = {"data", "blob", "about"}
"""Schemes a page may use without any request leaving the browser."""


@dataclass
class RequestLog:
    """Every request a browser context made, and what its pages reported as CSP violations."""

    origin: str
    """The app's own scheme, host and port, e.g. `http://127.0.0.1:41234`."""
    urls: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        """Start recording the context's requests and its pages' console reports."""
        context.on("request", self._request)
        context.on("console", self._console)

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium reports a blocked script, style or connection on the console and nowhere else
        # that Playwright can see.
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def foreign(self) -> list[str]:
        """Requests to any host other than the app's own (host and port both count)."""
        own = urlsplit(self.origin)
        outside = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in LOCAL_SCHEMES:
                continue
            if (parts.scheme, parts.hostname, parts.port) != (own.scheme, own.hostname, own.port):
                outside.append(url)
        return outside

    def assert_clean(self) -> None:
        """Fail on any request to another host, and on any CSP violation a page reported."""
        outside = self.foreign()
        assert not outside, f"{len(outside)} request(s) left tellonce's own host:\n" + "\n".join(outside)
        assert not self.csp_violations, "Content Security Policy violations:\n" + "\n".join(
            self.csp_violations
        )


def format_violations(violations: list[dict[str, Any]]) -> str:
    """One block per axe-core violation: id, impact, help and each offending element."""
    lines = []
    for violation in violations:
        lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']}")
        lines.append(f"  {violation['helpUrl']}")
        for node in violation["nodes"]:
            lines.append(f"    target {json.dumps(node['target'])}: {node.get('failureSummary', '')}")
    return "\n".join(lines)


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now.

    axe is evaluated over DevTools rather than added as a `<script>` tag: the portal's CSP admits
    only scripts carrying the request's nonce, and it stays in force while axe runs (no
    `bypass_csp`), so the page is audited exactly as residents get it.
    """
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(AXE_SOURCE.read_text() + "\n;undefined")
    result: list[dict[str, Any]] = await page.evaluate(
        """async (tags) => {
            const result = await window.axe.run(document, {runOnly: {type: 'tag', values: tags}});
            return result.violations;
        }""",
        list(AXE_TAGS),
    )
    return result


async def axe_check(page: Page, name: str) -> None:
    """Assert that axe-core finds no WCAG 2.1 A/AA violation on the page."""
    violations = await axe_violations(page)
    assert not violations, f"axe-core on {name} ({page.url}):\n{format_violations(violations)}"


async def page_language(page: Page) -> str:
    """The page's `<html lang>`, as the folder of its screenshots."""
    lang: str = await page.evaluate("document.documentElement.lang")
    assert lang in {"en", "fr"}, f"{page.url} declares lang={lang!r}"
    return lang


async def horizontal_overflow(page: Page) -> dict[str, int]:
    """How far the page and its `<main>` are wider than the viewport (0 when they fit)."""
    widths: dict[str, int] = await page.evaluate(
        """() => {
            const main = document.querySelector('main');
            const viewport = document.documentElement.clientWidth;
            return {
                viewport,
                page: Math.max(0, document.documentElement.scrollWidth - viewport),
                main: main ? Math.max(0, main.scrollWidth - main.clientWidth,
                                      main.getBoundingClientRect().right - viewport) : -1,
            };
        }"""
    )
    return widths


async def assert_reflows(page: Page, name: str) -> None:
    """WCAG 1.4.10: the page needs no horizontal scrolling at its current width."""
    widths = await horizontal_overflow(page)
    assert widths["main"] >= 0, f"{name} has no <main> landmark"
    assert widths["page"] == 0 and widths["main"] <= 0, f"{name} scrolls sideways: {widths}"


async def snap(page: Page, name: str, folder: Path = SCREENSHOTS) -> list[Path]:
    """Save full-page screenshots at desktop and phone widths; the phone one must reflow.

    Files go to `artifacts/screenshots/<lang>/<name>-desktop.png` and `…-phone.png`. The page's
    viewport is restored afterwards.
    """
    lang = await page_language(page)
    folder = folder / lang
    folder.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size or DESKTOP
    saved = []
    sizes: tuple[tuple[str, ViewportSize], ...] = (("desktop", DESKTOP), ("phone", PHONE))
    try:
        for label, size in sizes:
            await page.set_viewport_size(size)
            if label == "phone":
                await assert_reflows(page, f"{name} ({lang}) at {size['width']} px")
            path = folder / f"{name}-{label}.png"
            await page.screenshot(path=path, full_page=True, animations="disabled")
            saved.append(path)
    finally:
        await page.set_viewport_size(before)
    return saved


async def check_page(page: Page, name: str) -> None:
    """axe-core, then the screenshots, for one page in its current language."""
    await axe_check(page, name)
    await snap(page, name)
