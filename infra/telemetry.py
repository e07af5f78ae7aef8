"""Metrics and traces: Prometheus series and OpenTelemetry spans for every tellonce process.

Every Temporal client is built by `infra.temporal.connect`, which asks this module for its
interceptors and its SDK runtime, so the API, the streams process and every worker get the same
instrumentation without wiring of their own:

- `TracingInterceptor` (temporalio.contrib.opentelemetry) carries the W3C trace context from
  the API's request span through StartWorkflow and RunWorkflow to RunActivity;
- `TelemetryInterceptor` counts bundles submitted (client side) and finished (workflow side),
  and times every legacy-system call with a span of its own (activity side);
- the API's `/metrics` adds gauges read from Temporal's visibility (bundles by state, stuck
  bundles by reason and system) and task-queue backlogs, refreshed at most every
  `metrics_visibility_ttl`.

Labels are ids of bundles, states, systems and outcomes: never a workflow id or personal data.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import FastAPI, Request, Response
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from temporalio import activity, client, workflow
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.common import TypedSearchAttributes
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from activities.models import (
    STEP_CLOSED,
    STEP_HELD,
    STEP_NEEDS_ATTENTION,
    STEP_REJECTED,
    STEP_TRANSIENT,
    UNKNOWN_SYSTEM,
)
from workflows.models import StuckReason
from workflows.names import (
    SA_BUNDLE_ID,
    SA_STATE,
    SA_STUCK_REASONS,
    SA_STUCK_SYSTEMS,
    bundle_task_queue,
    events_task_queue,
    legacy_task_queue,
)

if TYPE_CHECKING:
    from infra.settings import Settings

log = structlog.get_logger("tellonce.telemetry")

BUNDLE_WORKFLOW = "BundleWorkflow"
STEP_ACTIVITIES = frozenset({"invoke_step", "compensate_step"})
BUNDLE_STATES = (
    "received",
    "in_progress",
    "needs_attention",
    "completed",
    "completed_with_exceptions",
    "failed",
    "withdrawn",
)
"""Bundle states of the contract (DESIGN.md), each a value of the `TellonceState` search attribute."""

VISIBILITY_READ_TIMEOUT = 5.0
"""Seconds one read of the counts may take before the scrape answers without them (Prometheus'
default scrape timeout is 10 s)."""

STEP_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds: legacy calls range from a fast REST answer to a slow SOAP or batch upload."""

BUNDLES_SUBMITTED = Counter(
    "tellonce_bundles_submitted",
    "Bundles started, by catalogue bundle and channel (a duplicate submission is not counted).",
    ["bundle", "channel"],
)
BUNDLES_FINISHED = Counter(
    "tellonce_bundles_finished",
    "Bundles that ended, by catalogue bundle and final state (`error` when the workflow itself failed).",
    ["bundle", "outcome"],
)
STEP_CALLS = Counter(
    "tellonce_step_calls",
    "Calls to legacy systems (each one attempt), by system, operation and outcome.",
    ["system", "operation", "outcome"],
)
STEP_RETRIES = Counter(
    "tellonce_step_retries",
    "Calls to legacy systems that repeat an earlier attempt of the same step, by system and outcome.",
    ["system", "operation", "outcome"],
)
STEP_CALL_SECONDS = Histogram(
    "tellonce_step_call_duration_seconds",
    "Time one call to a legacy system took, by system, operation and outcome.",
    ["system", "operation", "outcome"],
    buckets=STEP_CALL_BUCKETS,
)

_OUTCOMES = {
    STEP_TRANSIENT: "transient",
    STEP_CLOSED: "closed",
    STEP_HELD: "held",
    STEP_REJECTED: "rejected",
    STEP_NEEDS_ATTENTION: "needs_attention",
    UNKNOWN_SYSTEM: "unknown_system",
}


def call_outcome(error: BaseException | None, result: object = None) -> str:
    """The `outcome` label of one legacy call: how the step activity ended.

    `accepted` (a reference or a synchronous answer), `acknowledged` (the answer comes later, as a
    reply), or the error's class: `transient`, `closed`, `held` (the system is paused or its
    breaker open: nothing was sent), `rejected`, `needs_attention`, and `error` for anything the
    activity did not classify (cancellation, a worker shutting down).
    """
    if error is None:
        return "acknowledged" if getattr(result, "pending_reply", False) else "accepted"
    if isinstance(error, ApplicationError):
        return _OUTCOMES.get(error.type or "", "error")
    return "error"


# --- interceptors ---------------------------------------------------------------------------------


class TelemetryInterceptor(client.Interceptor, Interceptor):
    """Counts bundles and times legacy calls; applies to a client and to every worker built from it.

    Args:
        tracer: Where adapter-call spans go; default the process's global tracer provider.
    """

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer or trace.get_tracer("tellonce.adapters")

    def intercept_client(self, nxt: client.OutboundInterceptor) -> client.OutboundInterceptor:
        """Count each bundle the client starts."""
        return _SubmissionCounter(nxt)

    def intercept_activity(self, nxt: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Time and trace each step activity (one call to one legacy system)."""
        return _StepCallRecorder(nxt, self.tracer)

    def workflow_interceptor_class(
        self, request: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """Count each bundle as it ends."""
        return _FinishedCounter


class _SubmissionCounter(client.OutboundInterceptor):
    async def start_workflow(self, request: client.StartWorkflowInput) -> client.WorkflowHandle[Any, Any]:
        handle = await super().start_workflow(request)
        # Counted only once Temporal took it: a duplicate (REJECT_DUPLICATE, FAIL) raises above.
        if request.workflow == BUNDLE_WORKFLOW:
            BUNDLES_SUBMITTED.labels(
                bundle=_bundle_label(request), channel=_channel_label(request.args)
            ).inc()
        return handle


def _bundle_label(request: client.StartWorkflowInput) -> str:
    attributes = request.search_attributes
    if isinstance(attributes, TypedSearchAttributes):
        bundle = attributes.get(SA_BUNDLE_ID)
        if bundle:
            return str(bundle)
    plan = getattr(request.args[0], "plan", None) if request.args else None
    return str(getattr(plan, "bundle_id", "unknown"))


def _channel_label(args: Sequence[Any]) -> str:
    return str(getattr(args[0], "channel", "unknown")) if args else "unknown"


class _StepCallRecorder(ActivityInboundInterceptor):
    def __init__(self, nxt: ActivityInboundInterceptor, tracer: trace.Tracer) -> None:
        super().__init__(nxt)
        self._tracer = tracer

    async def execute_activity(self, request: ExecuteActivityInput) -> Any:
        info = activity.info()
        call = request.args[0] if request.args else None
        system = getattr(call, "system", None)
        if info.activity_type not in STEP_ACTIVITIES or not isinstance(system, str):
            return await super().execute_activity(request)
        operation = "submit" if info.activity_type == "invoke_step" else "compensate"
        step_attempt = int(getattr(call, "attempt", 1))
        # Ids and names only: the call's fields never reach a span or a label.
        attributes: dict[str, str | int] = {
            "tellonce.system": system,
            "tellonce.operation": operation,
            "tellonce.bundle_id": str(getattr(call, "bundle_id", "")),
            "tellonce.step": str(getattr(call, "step_id", "")),
            "tellonce.attempt": step_attempt,
        }
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"adapter.{operation}",
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await super().execute_activity(request)
            except BaseException as exc:
                outcome = call_outcome(exc)
                span.set_attribute("tellonce.outcome", outcome)
                span.set_status(trace.StatusCode.ERROR, outcome)
                _record_call(system, operation, outcome, step_attempt, time.perf_counter() - started)
                raise
            outcome = call_outcome(None, result)
            span.set_attribute("tellonce.outcome", outcome)
            _record_call(system, operation, outcome, step_attempt, time.perf_counter() - started)
            return result


def _record_call(system: str, operation: str, outcome: str, attempt: int, seconds: float) -> None:
    STEP_CALLS.labels(system, operation, outcome).inc()
    STEP_CALL_SECONDS.labels(system, operation, outcome).observe(seconds)
    if attempt > 1:
        STEP_RETRIES.labels(system, operation, outcome).inc()


class _FinishedCounter(WorkflowInboundInterceptor):
    """Counts a bundle's end once: never while Temporal replays history it already ran.

    Runs inside the workflow sandbox, where the workflow's own models are re-imported: the
    input and result are read by attribute, not by type.
    """

    async def execute_workflow(self, request: ExecuteWorkflowInput) -> Any:
        if workflow.info().workflow_type != BUNDLE_WORKFLOW:
            return await super().execute_workflow(request)
        plan = getattr(request.args[0], "plan", None) if request.args else None
        bundle = str(getattr(plan, "bundle_id", "unknown"))
        try:
            result = await super().execute_workflow(request)
        except FailureError:
            # Only these fail the workflow; any other exception fails the workflow task, which
            # Temporal retries, and would be counted again on every retry.
            if not workflow.unsafe.is_replaying():
                BUNDLES_FINISHED.labels(bundle=bundle, outcome="error").inc()
            raise
        if not workflow.unsafe.is_replaying():
            BUNDLES_FINISHED.labels(bundle=bundle, outcome=str(getattr(result, "state", "unknown"))).inc()
        return result


def client_interceptors(tracer_provider: trace.TracerProvider | None = None) -> list[client.Interceptor]:
    """Interceptors of every tellonce Temporal client (workers built from it inherit them).

    Tracing comes first so the adapter span is a child of Temporal's RunActivity span.
    """
    provider = tracer_provider or trace.get_tracer_provider()
    return [
        TracingInterceptor(provider.get_tracer("temporalio")),
        TelemetryInterceptor(provider.get_tracer("tellonce.adapters")),
    ]


# --- process set-up ---------------------------------------------------------------------------------

_lock = threading.Lock()
_runtimes: dict[str, Runtime] = {}
_metrics_servers: set[tuple[str, int]] = set()
_tracing_configured = False


def process_runtime(settings: Settings) -> Runtime | None:
    """The Temporal SDK runtime exporting its own metrics on `sdk_metrics_port`, or None (the default).

    One per process and address: the runtime owns a thread pool and the endpoint's socket.
    """
    if not settings.sdk_metrics_port:
        return None
    address = f"{settings.metrics_host or settings.host}:{settings.sdk_metrics_port}"
    with _lock:
        runtime = _runtimes.get(address)
        if runtime is None:
            runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
            _runtimes[address] = runtime
            log.info("metrics.sdk_endpoint", address=address)
        return runtime


def start_metrics_server(settings: Settings) -> None:
    """Serve this process's `tellonce_*` series on `metrics_port` (once per process and port)."""
    if not settings.metrics_port:
        return
    host = settings.metrics_host or settings.host
    with _lock:
        if (host, settings.metrics_port) in _metrics_servers:
            return
        start_http_server(settings.metrics_port, addr=host)
        _metrics_servers.add((host, settings.metrics_port))
    log.info("metrics.endpoint", host=host, port=settings.metrics_port)


def build_tracer_provider(settings: Settings) -> TracerProvider | None:
    """A tracer provider exporting over OTLP/HTTP to the configured collector, or None without one."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    # Imported only when traces leave the process: the exporter pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def configure_tracing(settings: Settings) -> None:
    """Install the OTLP tracer provider as the process's global one (once), when a collector is set."""
    global _tracing_configured  # noqa: PLW0603 - one tracer provider per process, by OpenTelemetry's design
    with _lock:
        if _tracing_configured:
            return
        provider = build_tracer_provider(settings)
        if provider is None:
            return
        trace.set_tracer_provider(provider)
        _tracing_configured = True
    log.info("tracing.otlp", service=settings.otel_service_name)


def start_process_telemetry(settings: Settings) -> Runtime | None:
    """Everything a long-running role needs before its first Temporal client: the metrics endpoint,
    trace export, and the SDK runtime to connect with (None: the default runtime)."""
    start_metrics_server(settings)
    configure_tracing(settings)
    return process_runtime(settings)


# --- gauges read from Temporal ------------------------------------------------------------------


@dataclass
class VisibilitySnapshot:
    """Counts read from Temporal at one moment."""

    states: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, int] = field(default_factory=dict)
    stuck_by_system: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, tuple[int, float]] = field(default_factory=dict)
    read_ok: bool = False
    read_at: float = 0.0


class VisibilityMetrics(Collector):
    """Bundles by state, stuck bundles and task-queue backlogs, as Prometheus gauges.

    Temporal is asked at most once per `ttl` seconds however often Prometheus scrapes, and the
    counts are scoped to this deployment's task queues (its `task_queue_prefix`).
    """

    def __init__(
        self, temporal: client.Client, *, task_queue_prefix: str, systems: Iterable[str], ttl: float
    ) -> None:
        self.client = temporal
        self.prefix = task_queue_prefix
        self.systems = sorted(systems)
        self.ttl = ttl
        self.snapshot = VisibilitySnapshot()
        self._refreshing = asyncio.Lock()

    async def refresh_if_stale(self) -> None:
        """Read the counts again unless the last read is younger than the TTL."""
        async with self._refreshing:
            if self.snapshot.read_at and time.monotonic() - self.snapshot.read_at < self.ttl:
                return
            self.snapshot = await self._read()

    async def _read(self) -> VisibilitySnapshot:
        snapshot = VisibilitySnapshot(read_at=time.monotonic())
        base = f"WorkflowType = '{BUNDLE_WORKFLOW}' AND TaskQueue = '{bundle_task_queue(self.prefix)}'"
        open_base = f"{base} AND ExecutionStatus = 'Running'"
        try:
            async with asyncio.timeout(VISIBILITY_READ_TIMEOUT):
                await self._read_into(snapshot, base, open_base)
            snapshot.read_ok = True
        except (RPCError, TimeoutError) as exc:
            # A scrape still answers (with `tellonce_visibility_up 0`); the alert on it says why.
            status = exc.status.name if isinstance(exc, RPCError) else "TIMEOUT"
            log.warning("metrics.visibility_unavailable", rpc_status=status)
        return snapshot

    async def _read_into(self, snapshot: VisibilitySnapshot, base: str, open_base: str) -> None:
        states = await asyncio.gather(
            *(self._count(f"{base} AND {SA_STATE.name} = '{state}'") for state in BUNDLE_STATES)
        )
        snapshot.states = dict(zip(BUNDLE_STATES, states, strict=True))
        snapshot.stuck, snapshot.stuck_by_system = await self._stuck(open_base)
        snapshot.backlog = await self._backlogs()

    async def _count(self, query: str) -> int:
        return (await self.client.count_workflows(query)).count

    async def _stuck(self, open_base: str) -> tuple[dict[str, int], dict[str, int]]:
        reasons = [reason.value for reason in StuckReason]
        by_reason = await asyncio.gather(
            *(self._count(f"{open_base} AND {SA_STUCK_REASONS.name} = '{reason}'") for reason in reasons)
        )
        by_system = await asyncio.gather(
            *(self._count(f"{open_base} AND {SA_STUCK_SYSTEMS.name} = '{system}'") for system in self.systems)
        )
        return dict(zip(reasons, by_reason, strict=True)), dict(zip(self.systems, by_system, strict=True))

    async def _backlogs(self) -> dict[str, tuple[int, float]]:
        queues = [(bundle_task_queue(self.prefix), TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)]
        queues.append((events_task_queue(self.prefix), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
        queues += [
            (legacy_task_queue(self.prefix, system), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
            for system in self.systems
        ]
        results = await asyncio.gather(*(self._backlog(name, kind) for name, kind in queues))
        return {name: result for (name, _), result in zip(queues, results, strict=True) if result is not None}

    async def _backlog(self, name: str, kind: TaskQueueType.ValueType) -> tuple[int, float] | None:
        request = DescribeTaskQueueRequest(
            namespace=self.client.namespace,
            task_queue=TaskQueue(name=name),
            task_queue_type=kind,
            report_stats=True,
        )
        response = await self.client.workflow_service.describe_task_queue(request)
        if not response.HasField("stats"):
            return None  # a server too old to report backlogs
        stats = response.stats
        return stats.approximate_backlog_count, stats.approximate_backlog_age.ToTimedelta().total_seconds()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The last snapshot's gauges (Prometheus calls this on each scrape)."""
        snap = self.snapshot
        yield GaugeMetricFamily(
            "tellonce_visibility_up",
            "1 when the last read of bundle counts from Temporal succeeded.",
            value=1 if snap.read_ok else 0,
        )
        if not snap.read_ok:
            return
        states = GaugeMetricFamily(
            "tellonce_bundles", "Bundles by state (Temporal visibility, within retention).", labels=["state"]
        )
        for state, count in snap.states.items():
            states.add_metric([state], count)
        yield states
        stuck = GaugeMetricFamily(
            "tellonce_bundles_stuck", "Open bundles stuck, by reason.", labels=["reason"]
        )
        for reason, count in snap.stuck.items():
            stuck.add_metric([reason], count)
        yield stuck
        by_system = GaugeMetricFamily(
            "tellonce_bundles_stuck_by_system",
            "Open stuck bundles waiting on each system.",
            labels=["system"],
        )
        for system, count in snap.stuck_by_system.items():
            by_system.add_metric([system], count)
        yield by_system
        backlog = GaugeMetricFamily(
            "tellonce_task_queue_backlog", "Tasks waiting for a worker, by task queue.", labels=["task_queue"]
        )
        age = GaugeMetricFamily(
            "tellonce_task_queue_backlog_age_seconds",
            "Age of the oldest task waiting for a worker, by task queue.",
            labels=["task_queue"],
        )
        for queue, (count, seconds) in snap.backlog.items():
            backlog.add_metric([queue], count)
            age.add_metric([queue], seconds)
        yield backlog
        yield age


# --- the API ---------------------------------------------------------------------------------------


def mount_metrics(app: FastAPI, settings: Settings) -> None:
    """Trace the app's requests and, unless `api_metrics` is off, serve `/metrics` on it.

    The page holds this process's series and the gauges read from Temporal (through the API's
    own client, once it has connected).
    """
    _instrument(app)
    start_metrics_server(settings)
    if not settings.api_metrics:
        return
    from adapters.registry import KNOWN_ADAPTERS  # noqa: PLC0415 - the API has loaded it already

    ttl = settings.metrics_visibility_ttl.total_seconds()
    state: dict[str, VisibilityMetrics] = {}

    async def metrics(request: Request) -> Response:
        page = generate_latest(REGISTRY)
        intake = getattr(request.app.state, "intake", None)
        if intake is not None:
            gauges = state.get("gauges")
            if gauges is None or gauges.client is not intake.client:
                gauges = VisibilityMetrics(
                    intake.client,
                    task_queue_prefix=settings.task_queue_prefix,
                    systems=KNOWN_ADAPTERS,
                    ttl=ttl,
                )
                state["gauges"] = gauges
            await gauges.refresh_if_stale()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(gauges)
            page += generate_latest(registry)
        return Response(page, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


def _instrument(app: FastAPI, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Give each request a server span, continuing the caller's W3C trace context if it sent one."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415 - API only

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls="/metrics,/api/v1/health",
        exclude_spans=["receive", "send"],
        server_request_hook=_scrub_server_span,
    )


_CLIENT_ATTRIBUTES = (
    "net.peer.ip",
    "net.peer.port",
    "client.address",
    "client.port",
    "http.client_ip",
    "http.user_agent",
    "user_agent.original",
)
_QUERY_ATTRIBUTES = ("http.url", "http.target", "url.query", "url.full")


def _scrub_server_span(span: trace.Span, scope: dict[str, Any]) -> None:
    """Keep who asked and what they asked about out of the request span.

    A resident's address and browser identify them, and a query string may carry a value they
    typed: the span keeps the method, route template, path and status only.
    """
    present = getattr(span, "attributes", None) or {}
    if not span.is_recording():
        return
    path = str(scope.get("path", ""))
    for name in _QUERY_ATTRIBUTES:
        if name in present:
            span.set_attribute(name, path)
    for name in _CLIENT_ATTRIBUTES:
        if name in present:
            span.set_attribute(name, "")
