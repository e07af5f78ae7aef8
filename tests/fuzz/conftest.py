"""Fixtures for the bad-input tests: the real API app on the session's Temporal dev server.

Bundles a fuzzer manages to start run on a task queue of their own that no worker polls; they
are terminated when the test ends, so no other test of the session ever sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.api import create_app
from infra.intake import Intake
from infra.settings import Settings

# The streams tests' broker (behind the shim kcat needs) and lanes of topics, for the Kafka fuzz test.
from tests.streams.conftest import kafka_bootstrap, lane  # noqa: F401 - fixtures, used by name
from workflows.names import bundle_task_queue


@dataclass
class FuzzApi:
    """The API under test, its intake, and every bundle it started (to end them afterwards)."""

    app: FastAPI
    intake: Intake
    settings: Settings
    started: set[str] = field(default_factory=set)

    @property
    def bundle_queue(self) -> str:
        return bundle_task_queue(self.settings.task_queue_prefix)


async def end_bundles(client: Client, api: FuzzApi, settle: float = 2.0) -> set[str]:
    """Terminate the bundles the test started: those it saw accepted, and any visibility finds.

    A bundle may start while its answer is lost (a client gone), so visibility is asked too,
    for a moment, since it lags the starts.
    """
    ended: set[str] = set()
    deadline = time.monotonic() + settle
    while True:
        found = {
            execution.id
            async for execution in client.list_workflows(
                f"TaskQueue = '{api.bundle_queue}' AND ExecutionStatus = 'Running'"
            )
        }
        for workflow_id in (api.started | found) - ended:
            with contextlib.suppress(RPCError):  # already closed
                await client.get_workflow_handle(workflow_id).terminate("bad-input test over")
            ended.add(workflow_id)
        if time.monotonic() > deadline:
            return ended
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def fuzz_api(dev_env: WorkflowEnvironment) -> AsyncIterator[FuzzApi]:
    """`create_app(settings, intake)` with a real intake on the dev server and a task queue of its own.

    One per module: the app keeps no state between requests, and the sweep for bundles takes a
    couple of seconds (visibility lags).
    """
    settings = Settings(
        environment="test",
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=f"fuzz-{uuid.uuid4().hex[:8]}",
    )
    intake = Intake(dev_env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    api = FuzzApi(create_app(settings, intake=intake), intake, settings)
    yield api
    assert api.started <= await end_bundles(dev_env.client, api)
