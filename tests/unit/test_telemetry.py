"""Telemetry without servers: outcome labels, the request span's scrubbing, trace export set-up,
what `/metrics` shows when Temporal cannot be read; and the Temporal client's TLS settings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.workflowservice.v1 import CountWorkflowExecutionsResponse
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from activities.models import (
    STEP_CLOSED,
    STEP_HELD,
    STEP_NEEDS_ATTENTION,
    STEP_REJECTED,
    STEP_TRANSIENT,
    StepCallResult,
)
from infra import telemetry
from infra.settings import Settings
from infra.temporal import tls_config


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ApplicationError("transient: unavailable", type=STEP_TRANSIENT), "transient"),
        (ApplicationError("closed", type=STEP_CLOSED, non_retryable=True), "closed"),
        (ApplicationError("held", type=STEP_HELD, non_retryable=True), "held"),
        (ApplicationError("rejected: x", type=STEP_REJECTED, non_retryable=True), "rejected"),
        (ApplicationError("review", type=STEP_NEEDS_ATTENTION, non_retryable=True), "needs_attention"),
        (ApplicationError("something else", type="Mystery"), "error"),
        (TimeoutError(), "error"),
    ],
)
def test_a_failed_call_is_labelled_by_its_classification(error: BaseException, outcome: str) -> None:
    assert telemetry.call_outcome(error) == outcome


def test_a_successful_call_is_accepted_or_acknowledged() -> None:
    assert telemetry.call_outcome(None, StepCallResult(reference="R-1")) == "accepted"
    assert telemetry.call_outcome(None, StepCallResult(reference="R-1", pending_reply=True)) == "acknowledged"


async def test_the_request_span_keeps_no_query_client_address_or_browser() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()

    @app.get("/api/v1/submissions/{tracking_id}")
    async def status(tracking_id: str) -> dict[str, str]:
        return {"id": tracking_id}

    telemetry._instrument(app, tracer_provider=provider)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as http:
        response = await http.get(
            "/api/v1/submissions/abc?surname=Tremblay", headers={"User-Agent": "Firefox/140 (Jo's laptop)"}
        )
    assert response.status_code == 200
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/api/v1/submissions/{tracking_id}"
    assert attributes["http.status_code"] == 200
    shown = " ".join(str(v) for v in attributes.values())
    for secret in ("Tremblay", "203.0.113.7", "Firefox", "laptop"):
        assert secret not in shown


def test_no_collector_means_no_tracer_provider() -> None:
    assert telemetry.build_tracer_provider(Settings(environment="test")) is None


def test_a_collector_gets_spans_over_otlp_http_at_its_traces_path() -> None:
    settings = Settings(
        environment="test",
        otel_exporter_otlp_endpoint="http://collector.internal:4318/",
        otel_service_name="tellonce-worker",
    )
    provider = telemetry.build_tracer_provider(settings)
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "tellonce-worker"
        (processor,) = provider._active_span_processor._span_processors
        assert isinstance(processor, BatchSpanProcessor)
        exporter: Any = processor._batch_processor._exporter
        assert exporter._endpoint == "http://collector.internal:4318/v1/traces"
    finally:
        provider.shutdown()


def test_no_sdk_metrics_port_means_the_default_runtime() -> None:
    assert telemetry.process_runtime(Settings(environment="test")) is None


class _Unreachable:
    """A client whose every visibility read fails, as when Temporal is down."""

    namespace = "default"

    async def count_workflows(self, query: str) -> CountWorkflowExecutionsResponse:
        raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")


async def test_when_temporal_cannot_be_read_the_page_says_so_and_shows_no_stale_counts() -> None:
    gauges = telemetry.VisibilityMetrics(
        _as_client(_Unreachable()), task_queue_prefix="tellonce", systems=["esdc-sin"], ttl=60
    )
    await gauges.refresh_if_stale()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(gauges)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["tellonce_visibility_up"].samples[0].value == 0
    assert "tellonce_bundles" not in families
    assert "tellonce_bundles_stuck" not in families


def _as_client(fake: object) -> Client:
    client: Client = fake  # type: ignore[assignment]  # only count_workflows and namespace are read
    return client


class _Hanging:
    """A client whose visibility reads never answer, as behind a black-holed network."""

    namespace = "default"

    async def count_workflows(self, query: str) -> CountWorkflowExecutionsResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_hanging_temporal_does_not_hang_the_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "VISIBILITY_READ_TIMEOUT", 0.05)
    gauges = telemetry.VisibilityMetrics(
        _as_client(_Hanging()), task_queue_prefix="tellonce", systems=[], ttl=60
    )
    await asyncio.wait_for(gauges.refresh_if_stale(), timeout=2)
    assert gauges.snapshot.read_ok is False


# --- the client factory's connection settings (infra/temporal.py builds clients and their telemetry)


def test_temporal_without_tls_by_default_with_it_for_an_api_key() -> None:
    assert tls_config(Settings(environment="test")) is False
    keyed = tls_config(Settings(environment="test", temporal_api_key="k"))
    assert isinstance(keyed, TLSConfig)
    assert keyed.server_root_ca_cert is None  # the system's CAs, as Temporal Cloud needs
    assert keyed.client_cert is None


def test_mutual_tls_reads_the_ca_certificate_and_key_files(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_bytes(f"-----{name}-----".encode())
    settings = Settings(
        environment="test",
        temporal_tls_ca_file=tmp_path / "ca.pem",
        temporal_tls_cert_file=tmp_path / "client.pem",
        temporal_tls_key_file=tmp_path / "client.key",
        temporal_tls_server_name="frontend.temporal.internal",
    )
    tls = tls_config(settings)
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == b"-----ca.pem-----"
    assert tls.client_cert == b"-----client.pem-----"
    assert tls.client_private_key == b"-----client.key-----"
    assert tls.domain == "frontend.temporal.internal"
