"""One trace from the resident's request to each legacy call, on the session's Temporal dev server.

The API app, its Temporal client and the workers are wired as in production
(`infra.temporal.connect`, `create_app`); only the exporter is the SDK's in-memory one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from adapters.registry import ADAPTER_TYPES, KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.validators import toronto_today
from infra.api import create_app
from infra.intake import Intake
from infra.temporal import connect
from infra.worker import build_workers
from tests.conftest import SandboxProcess

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
EXAMPLE = Path(__file__).parents[2] / "examples" / "address-change-on" / "complete.json"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, as `configure_tracing` would install it, exporting to memory.

    OpenTelemetry allows one global provider per process: a later test module reuses it.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later tests' spans are dropped, not kept in memory


@pytest.fixture
async def api(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess, spans: InMemorySpanExporter
) -> AsyncIterator[tuple[httpx.AsyncClient, Intake]]:
    prefix = f"tracing-{uuid.uuid4().hex[:8]}"
    settings = sandbox.settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=prefix,
        correlation_secret=prefix,
        events_enabled=False,
    )
    client = await connect(settings)
    intake = Intake(client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    async with AsyncExitStack() as exits:
        adapters = {system: ADAPTER_TYPES[system].from_settings(settings) for system in SYSTEMS}
        for adapter in adapters.values():
            exits.push_async_callback(adapter.aclose)
        for worker in build_workers(
            client, adapters, task_queue_prefix=prefix, correlation_secret=prefix.encode()
        ):
            await exits.enter_async_context(worker)
        http = await exits.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(settings, intake=intake)),
                base_url="http://tellonce.test",
            )
        )
        yield http, intake


def personal_values(data: Any) -> set[str]:
    """Every value the resident typed that could identify them (strings of 3+ characters)."""
    if isinstance(data, dict):
        return set().union(*(personal_values(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(personal_values(v) for v in data)) if data else set()
    if isinstance(data, str) and len(data) >= 3:
        return {data}
    return set()


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Names of the span's parents, nearest first, within what was exported."""
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        above = by_id[parent.span_id]
        names.append(above.name)
        parent = above.parent
    return names


async def test_one_trace_from_the_request_to_every_legacy_call(
    api: tuple[httpx.AsyncClient, Intake], spans: InMemorySpanExporter
) -> None:
    http, intake = api
    spans.clear()
    submission: dict[str, Any] = json.loads(EXAMPLE.read_text())["submission"]
    submission["effective_date"] = toronto_today().isoformat()
    response = await http.post(f"/api/v1/bundles/{BUNDLE}/submissions", json=submission)
    assert response.status_code == 202, response.text
    tracking_id = response.json()["tracking_id"]
    result = await intake.handle(tracking_id).result()
    assert result.state == "completed"

    request = next(
        s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER and s.name.startswith("POST")
    )
    assert request.attributes is not None
    assert request.attributes.get("http.route") == "/api/v1/bundles/{bundle_id}/submissions"
    trace_id = request.context.trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    names = {s.name for s in in_trace}
    run = next(s for s in in_trace if s.name == "RunWorkflow:BundleWorkflow")
    assert ancestors(run, by_id) == ["StartWorkflow:BundleWorkflow", request.name]
    assert {"StartWorkflow:BundleWorkflow", "CompleteWorkflow:BundleWorkflow"} <= names, sorted(names)

    adapter_spans = [s for s in in_trace if s.name == "adapter.submit"]
    # Ottawa's revenue system gets the new address; Toronto's is never called.
    systems = {s.attributes["tellonce.system"] for s in adapter_spans if s.attributes}
    assert systems == set(SYSTEMS) - {"toronto-revenue"}
    for span in adapter_spans:
        chain = ancestors(span, by_id)
        # The workflow schedules its activities in the context StartWorkflow sent it.
        assert chain == [
            "RunActivity:invoke_step",
            "StartActivity:invoke_step",
            "StartWorkflow:BundleWorkflow",
            request.name,
        ]
        assert span.attributes is not None
        assert span.attributes["tellonce.outcome"] == "accepted"
        assert span.attributes["tellonce.bundle_id"] == BUNDLE

    # Ids, states and names only: nothing the resident typed, anywhere in the trace.
    # A city also names its municipality's system (`ottawa-revenue`): that is not the resident's.
    secrets = {v for v in personal_values(submission) if not any(v.lower() in s for s in KNOWN_ADAPTERS)}
    assert len(secrets) >= 10  # names, birth date, SIN, health number, licence, both addresses
    for span in in_trace:
        shown = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        for event in span.events:
            shown += [str(v) for v in (event.attributes or {}).values()]
        leaked = {value for value in secrets for text in shown if value.lower() in text.lower()}
        assert not leaked, (span.name, leaked)
