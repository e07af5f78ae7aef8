"""Fixtures of the browser tests: one Chromium for the session, the portal on real servers.

The portal is the HTTP app (`infra.api.create_app`, which mounts the pages) served by uvicorn on
a loopback port, over the session's Temporal dev server, legacy sandbox and Kafka-protocol broker,
with workers and the streams role for CRA's replies: bundles submitted in the browser reach
their final state. Everything runs on the session's event loop, so the tests use Playwright's
async API.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.events import KafkaEventPublisher
from activities.notices import deliver_notice
from adapters.registry import KNOWN_ADAPTERS, build_adapters
from bundles.catalogue import Catalogue
from bundles.notices import BirthNotice
from infra.api import create_app
from infra.intake import Intake
from infra.notices_cli import hospital_notice
from infra.sandbox.client import SandboxAdmin
from infra.settings import Settings
from infra.worker import build_workers, start_reply_collectors
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, DESKTOP, RequestLog
from tests.conftest import SandboxProcess, free_port
from tests.integration.streams_support import reply_streams
from workflows.names import reply_collector_id

BATCH_POLL = timedelta(milliseconds=500)


class _QuietServer(uvicorn.Server):
    """uvicorn inside the test session: Ctrl-C stays pytest's, not the server's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Portal:
    """The running portal: its address, the Temporal client behind it and the sandbox's admin."""

    url: str
    client: Client
    settings: Settings
    sandbox: SandboxAdmin

    async def send_birth_notice(self, submission: dict[str, Any], tracking_id: str) -> None:
        """Deliver the hospital's Notice of Live Birth matching a newborn submission's facts."""
        notice = BirthNotice.model_validate(
            hospital_notice(submission, notice_id=f"NLB-{tracking_id[:8].upper()}")
        )
        await deliver_notice(self.client, notice, settings=self.settings)


@pytest.fixture(scope="package")
async def portal(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess, kafka_port: int
) -> AsyncIterator[Portal]:
    """The HTTP app with the portal on a free loopback port, and workers that run its bundles.

    Package scope: its ESDC reply collector must stop with the browser tests, or it would take
    the reply files that later tests of the same sandbox wait for.
    """
    prefix = f"browser-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = Settings(
        environment="test",
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=prefix,
        sandbox_url=sandbox.url,
        sftp_host="127.0.0.1",
        sftp_port=sandbox.sftp_port,
        batch_poll_interval=BATCH_POLL,
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        kafka_idempotent_producer=False,
        # Birth notices find their statement by a digest of the facts under this secret.
        correlation_secret=prefix,
    )
    intake = Intake(dev_env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    app = create_app(settings, intake=intake)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(reply_streams(dev_env.client, settings.kafka_target, ["cra-aba"]))
        adapters = build_adapters(settings.model_copy(update={"legacy_systems": {}}))
        publisher = KafkaEventPublisher(settings, idempotent=False)
        stack.push_async_callback(publisher.close)
        for worker in build_workers(
            dev_env.client,
            adapters,
            task_queue_prefix=prefix,
            event_publisher=publisher,
            correlation_secret=prefix.encode(),
        ):
            await stack.enter_async_context(worker)
        await start_reply_collectors(dev_env.client, adapters, task_queue_prefix=prefix, interval=BATCH_POLL)
        stack.push_async_callback(_stop_reply_collector, dev_env.client, prefix)

        server = _QuietServer(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
                pytest.fail("the portal's HTTP server stopped while starting")
            await asyncio.sleep(0.05)

        async def stop_server() -> None:
            server.should_exit = True
            await serving

        stack.push_async_callback(stop_server)
        admin = await stack.enter_async_context(SandboxAdmin(sandbox.url))
        yield Portal(f"http://127.0.0.1:{port}", dev_env.client, settings, admin)


async def _stop_reply_collector(client: Client, prefix: str) -> None:
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(reply_collector_id(prefix, "esdc-sin")).terminate("tests over")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, launched once for the whole session."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Contexts:
    """Opens browser contexts that record their requests; each log is checked when the test ends."""

    browser: Browser
    origin: str
    logs: list[RequestLog]
    opened: list[BrowserContext]

    async def new(self, **options: Any) -> tuple[BrowserContext, RequestLog]:
        """A fresh context (desktop viewport unless told otherwise) and its request log."""
        context = await self.browser.new_context(**{"viewport": DESKTOP, **options})
        # Pages answer in well under a second here: a missing element fails fast, not after 30 s.
        context.set_default_timeout(10_000)
        log = RequestLog(self.origin)
        log.attach(context)
        self.logs.append(log)
        self.opened.append(context)
        return context, log


@pytest.fixture
async def contexts(browser: Browser, portal: Portal) -> AsyncIterator[Contexts]:
    """Browser contexts for one test; fails it if any of them reached another host."""
    made = Contexts(browser, portal.url, [], [])
    yield made
    for context in made.opened:
        await context.close()
    for log in made.logs:
        log.assert_clean()


@pytest.fixture
async def page(contexts: Contexts) -> Page:
    """A page in a fresh desktop context whose requests are checked when the test ends."""
    context, _ = await contexts.new()
    return await context.new_page()
