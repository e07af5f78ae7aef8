"""Metrics scraped while a real bundle runs: the API's `/metrics`, a role's own metrics port and
the Temporal SDK's endpoint, on the session's Temporal dev server and legacy sandbox.

The client comes from `infra.temporal.connect`, as in every tellonce process, so the series move
because of the production wiring (its interceptors and runtime), not a test double.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from adapters.registry import ADAPTER_TYPES, KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.validators import toronto_today
from infra.api import create_app
from infra.intake import Intake
from infra.sandbox.client import SandboxAdmin
from infra.settings import Settings
from infra.telemetry import TelemetryInterceptor
from infra.temporal import connect
from infra.worker import build_workers
from tests.conftest import SandboxProcess, free_port
from workflows.names import bundle_task_queue

pytestmark = pytest.mark.integration

BUNDLE = "address-change-on"
SYSTEMS = (
    "on-identity",
    "cra-address",
    "esdc-address",
    "elections-canada",
    "on-mto",
    "on-health",
    "ottawa-revenue",
    "toronto-revenue",
)
FLAKY = "elections-canada"
EXAMPLE = Path(__file__).parents[2] / "examples" / "address-change-on" / "complete.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(page: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 for a series not (yet) exported, as Prometheus' `or vector(0)`."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Scraped:
    """The three endpoints of this test's process."""

    api: httpx.AsyncClient
    metrics_port: int
    sdk_metrics_port: int

    async def api_page(self) -> Samples:
        response = await self.api.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    async def port_page(self, port: int) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        return response.text


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess
) -> AsyncIterator[tuple[Scraped, Intake, SandboxAdmin]]:
    prefix = f"metrics-{uuid.uuid4().hex[:8]}"
    settings: Settings = sandbox.settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=prefix,
        correlation_secret=prefix,
        events_enabled=False,
        metrics_port=free_port(),
        sdk_metrics_port=free_port(),
        metrics_visibility_ttl=timedelta(milliseconds=200),
    )
    client: Client = await connect(settings)
    intake = Intake(client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    async with AsyncExitStack() as exits:
        adapters = {system: ADAPTER_TYPES[system].from_settings(settings) for system in SYSTEMS}
        for adapter in adapters.values():
            exits.push_async_callback(adapter.aclose)
        for worker in build_workers(
            client, adapters, task_queue_prefix=prefix, correlation_secret=prefix.encode()
        ):
            await exits.enter_async_context(worker)
        api = await exits.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(settings, intake=intake)),
                base_url="http://tellonce.test",
            )
        )
        admin = await exits.enter_async_context(SandboxAdmin(sandbox.url))
        try:
            yield Scraped(api, settings.metrics_port, settings.sdk_metrics_port), intake, admin
        finally:
            await admin.clear_faults(FLAKY)


def submission() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())["submission"]
    data["effective_date"] = toronto_today().isoformat()
    return data


async def poll(scraped: Scraped, predicate: Any, budget: float = 30) -> Samples:
    """Scrape until the predicate holds: visibility lags the workflow by up to seconds."""
    deadline = asyncio.get_running_loop().time() + budget
    while True:
        samples = await scraped.api_page()
        if predicate(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("metrics did not reach the expected values in time")
        await asyncio.sleep(0.3)


async def test_series_move_when_a_bundle_runs(stack: tuple[Scraped, Intake, SandboxAdmin]) -> None:
    scraped, intake, sandbox = stack
    before = await scraped.api_page()
    # Nothing of this deployment's has run yet: its state gauges read zero, and were read at all.
    assert value(before, "tellonce_visibility_up") == 1
    assert value(before, "tellonce_bundles", state="completed") == 0

    tracking_id = str(uuid.uuid4())
    # One failed call on one system, so the retry series have something to count.
    await sandbox.set_faults(FLAKY, fail_next=1, key_prefix=tracking_id)
    await intake.submit(BUNDLE, submission(), channel="api", submission_id=tracking_id)
    result = await intake.handle(tracking_id).result()
    assert result.state == "completed"

    after = await poll(scraped, lambda s: value(s, "tellonce_bundles", state="completed") == 1)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("tellonce_bundles_submitted_total", bundle=BUNDLE, channel="api") == 1
    assert moved("tellonce_bundles_finished_total", bundle=BUNDLE, outcome="completed") == 1
    assert value(after, "tellonce_bundles", state="in_progress") == 0
    # Ottawa is the new address: Toronto's revenue system is never called.
    called = set(SYSTEMS) - {"toronto-revenue"}
    for system in called:
        labels = {"system": system, "operation": "submit", "outcome": "accepted"}
        assert moved("tellonce_step_calls_total", **labels) == 1, system
        assert moved("tellonce_step_call_duration_seconds_count", **labels) == 1, system
        assert value(after, "tellonce_step_call_duration_seconds_sum", **labels) > 0, system
    assert (
        moved("tellonce_step_calls_total", system="toronto-revenue", operation="submit", outcome="accepted")
        == 0
    )
    flaky = {"system": FLAKY, "operation": "submit"}
    assert moved("tellonce_step_calls_total", **flaky, outcome="transient") == 1
    assert moved("tellonce_step_retries_total", **flaky, outcome="accepted") == 1
    assert moved("tellonce_step_retries_total", system="on-mto", operation="submit", outcome="accepted") == 0
    # Backlog of this deployment's queues, as Temporal reports it (nothing waits once it is done).
    assert (
        value(
            after,
            "tellonce_task_queue_backlog",
            task_queue=bundle_task_queue(intake.settings.task_queue_prefix),
        )
        == 0
    )
    assert (
        "tellonce_task_queue_backlog_age_seconds",
        frozenset({("task_queue", f"{intake.settings.task_queue_prefix}.legacy.{FLAKY}")}),
    ) in after

    # A worker or streams process has only its own port: the same counters, no visibility gauges.
    own = parse(await scraped.port_page(scraped.metrics_port))
    assert value(own, "tellonce_bundles_finished_total", bundle=BUNDLE, outcome="completed") >= 1
    assert not any(name == "tellonce_bundles" for name, _ in own)
    # The Temporal SDK's own series, from the runtime the client was built with.
    sdk = await scraped.port_page(scraped.sdk_metrics_port)
    sdk_names = {family.name for family in text_string_to_metric_families(sdk)}
    assert {"temporal_workflow_completed", "temporal_activity_execution_latency"} <= sdk_names, sorted(
        sdk_names
    )
    # No label anywhere carries the bundle's id (or anything else of the resident's).
    for page in (await scraped.api.get("/metrics")).text, sdk:
        assert tracking_id not in page


async def test_a_step_needing_attention_shows_as_stuck(stack: tuple[Scraped, Intake, SandboxAdmin]) -> None:
    scraped, intake, sandbox = stack
    tracking_id = str(uuid.uuid4())
    await sandbox.set_faults(
        FLAKY,
        key_prefix=tracking_id,
        review_when={"field": "language", "equals": "en", "code": "elector_review"},
    )
    await intake.submit(BUNDLE, submission(), channel="api", submission_id=tracking_id)
    try:
        after = await poll(
            scraped,
            lambda s: (
                value(s, "tellonce_bundles_stuck", reason="needs_attention") == 1
                and value(s, "tellonce_bundles_stuck_by_system", system=FLAKY) == 1
            ),
        )
        assert value(after, "tellonce_bundles", state="needs_attention") == 1
        assert value(after, "tellonce_bundles_stuck", reason="retries_exceeded") == 0
        assert value(after, "tellonce_bundles_stuck_by_system", system="on-mto") == 0
        calls = {"system": FLAKY, "operation": "submit", "outcome": "needs_attention"}
        assert value(after, "tellonce_step_calls_total", **calls) >= 1
    finally:
        await intake.handle(tracking_id).terminate("test over")


class _Plan(BaseModel):
    bundle_id: str


class _Input(BaseModel):
    plan: _Plan
    ending: str


_FAILED_ONCE: set[str] = set()


@workflow.defn(name="BundleWorkflow")
class _EndingBundle:
    """Stands in for BundleWorkflow (same type name) to end in each way a workflow can."""

    @workflow.run
    async def run(self, bundle: _Input) -> _Plan:
        if bundle.ending == "fails":
            raise ApplicationError("the bundle could not go on", non_retryable=True)
        # A bug (not a FailureError) fails the workflow task, which Temporal retries with a fresh
        # instance: the first try raises, the retry completes (the flag outlives the instance,
        # the runner being unsandboxed).
        if bundle.ending == "task_fails_once" and workflow.info().workflow_id not in _FAILED_ONCE:
            _FAILED_ONCE.add(workflow.info().workflow_id)
            raise RuntimeError("a bug in this worker's code")
        return _Plan(bundle_id="completed")


def finished(bundle: str, outcome: str) -> float:
    page = parse(generate_latest(REGISTRY).decode())
    return value(page, "tellonce_bundles_finished_total", bundle=bundle, outcome=outcome)


async def test_a_bundle_is_counted_once_as_it_ends_never_per_retried_task(
    time_env: WorkflowEnvironment,
) -> None:
    bundle = f"test-{uuid.uuid4().hex[:6]}"
    queue = f"finished-{uuid.uuid4().hex[:6]}"
    async with Worker(
        time_env.client,
        task_queue=queue,
        workflows=[_EndingBundle],
        interceptors=[TelemetryInterceptor()],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for ending in ("completes", "task_fails_once"):
            result = await time_env.client.execute_workflow(
                "BundleWorkflow",
                _Input(plan=_Plan(bundle_id=bundle), ending=ending),
                id=f"{queue}-{ending}",
                task_queue=queue,
                result_type=_Plan,
            )
            assert result.bundle_id == "completed"
        with pytest.raises(WorkflowFailureError):
            await time_env.client.execute_workflow(
                "BundleWorkflow",
                _Input(plan=_Plan(bundle_id=bundle), ending="fails"),
                id=f"{queue}-fails",
                task_queue=queue,
            )
    # The stand-in's result has no `state`: its completions count under `unknown`.
    assert finished(bundle, "unknown") == 2
    assert finished(bundle, "error") == 1
