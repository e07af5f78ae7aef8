"""The API docs in a real browser: Swagger UI served by tellonce itself, under the strict CSP.

The real app (`create_app` with an intake on the session's Temporal dev server) runs under
uvicorn; Debian's Chromium loads `/api/v1/docs`, renders every operation and calls one. The
page must request nothing from another host and break no rule of its Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import uvicorn
from playwright.async_api import ConsoleMessage, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.api import create_app
from infra.intake import Intake
from infra.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Reported to the page's console, where the test collects it with everything else.
REPORT_CSP_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', (e) => console.error(
  'CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI + ' at ' + e.sourceFile));
"""


@pytest.fixture(scope="module")
async def served_app(dev_env: WorkflowEnvironment) -> AsyncIterator[str]:
    """The real app on a loopback port; yields its base URL."""
    settings = Settings(
        environment="test",
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=f"websec-{uuid.uuid4().hex[:8]}",
    )
    intake = Intake(dev_env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, intake=intake), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
        if serving.done():
            serving.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_the_api_docs_make_no_third_party_request_and_break_no_csp_rule(served_app: str) -> None:
    requests: list[str] = []
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.on("request", lambda request: requests.append(request.url))

            def collect(message: ConsoleMessage) -> None:
                if message.type in ("error", "warning"):
                    console.append(message.text)

            page.on("console", collect)
            await page.add_init_script(REPORT_CSP_VIOLATIONS)
            answer = await page.goto(f"{served_app}/api/v1/docs")
            assert answer is not None and answer.status == 200
            assert "'nonce-" in (await answer.all_headers())["content-security-policy"]

            # Swagger UI rendered the whole document: one block per operation.
            spec = await (await page.request.get(f"{served_app}/api/v1/openapi.json")).json()
            operations = sum(len(item) for item in spec["paths"].values())
            await expect(page.locator(".opblock")).to_have_count(operations, timeout=15_000)
            # Open the catalogue operation and call it from the page, against the real intake.
            block = page.locator("#operations-catalogue-list_bundles_api_v1_bundles_get")
            await block.locator(".opblock-summary").click()
            await block.get_by_role("button", name="Try it out").click()
            await block.get_by_role("button", name="Execute").click()
            await block.locator(".live-responses-table .response-col_status").first.wait_for()
            assert "newborn-on" in await block.locator(".live-responses-table").inner_text()
            await page.wait_for_timeout(300)  # late violations are reported asynchronously
        finally:
            await browser.close()

    assert requests, "the page made no request at all"
    foreign = [url for url in requests if not url.startswith(f"{served_app}/")]
    assert foreign == []
    assert console == []
