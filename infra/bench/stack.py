"""The servers and workers of a bench run, as child processes of the bench.

The Temporal server, Tansu, the sandbox, tellonce's worker(s) and the streams process are the
ones `tellonce dev` starts (`infra.devstack.services`), with the same SQLite-with-WAL server, so
the bench measures what development runs; the resident API is left out (the bench submits
through the same `Intake` in process). The raw baseline's workers are started here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from infra.bench.measure import cpu_seconds, rss_mb
from infra.devstack import START_TIMEOUT, STOP_GRACE, DevStack, DevStackError, port_is_free, services
from infra.settings import PORT_OFFSETS, Settings


@dataclass(frozen=True)
class WorkerSettings:
    """Settings both sides' workers share, so the comparison is like for like."""

    processes: int = 1
    max_concurrent_activities: int = 200
    max_concurrent_workflow_tasks: int = 200
    batch_interval: timedelta = timedelta(seconds=0.5)
    """The sandbox's batch run and tellonce's reply collection, both at this interval."""
    profile_to: Path | None = None
    """Record the first tellonce worker with py-spy into this file (speedscope JSON)."""


def free_port_base(host: str = "127.0.0.1") -> int:
    """A port base whose every port is free, chosen at random so parallel runs rarely collide.

    Every port stays below 32768, where Linux's ephemeral range starts: a port there can be taken
    by any outgoing connection between this check and the moment a service binds it.
    """
    for _ in range(50):
        base = 10_000 + secrets.randbelow(20_000)
        if all(port_is_free(host, base + offset) for offset in PORT_OFFSETS.values()):
            return base
    raise DevStackError("no free port range found for the bench's servers")


def _quiet(_: str) -> None:
    """The bench reports on its own; the dev stack's messages are not shown."""


def _seconds(interval: timedelta) -> str:
    return f"PT{interval.total_seconds():g}S"


class BenchStack:
    """Starts Temporal and Kafka first, then (for the tellonce phase) sandbox, workers and streams."""

    def __init__(self, settings: Settings, workers: WorkerSettings) -> None:
        self.settings = settings
        self.workers = workers
        self.dev = DevStack(settings, _quiet, _quiet)
        self.raw_processes: list[subprocess.Popen[bytes]] = []
        self.profiler: subprocess.Popen[bytes] | None = None
        by_name = {service.name: service for stage in services(settings) for service in stage}
        overrides = {
            # No legacy system closes (CRA's nightly hours) and none is throttled: the bench
            # measures tellonce, not the calendars or rate limits of the systems it serves.
            "TELLONCE_LEGACY_SYSTEMS": "{}",
            "TELLONCE_BATCH_POLL_INTERVAL": _seconds(workers.batch_interval),
            "TELLONCE_SANDBOX_BATCH_INTERVAL": _seconds(workers.batch_interval),
            "TELLONCE_WORKER_MAX_CONCURRENT_ACTIVITIES": str(workers.max_concurrent_activities),
            "TELLONCE_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": str(workers.max_concurrent_workflow_tasks),
        }
        self.servers = [by_name["temporal"], by_name["kafka"]]
        worker = by_name["worker"]
        tellonce_workers = []
        for index in range(workers.processes):
            tellonce_workers.append(
                replace(worker, name=f"worker-{index + 1}", env={**worker.env, **overrides})
            )
        self.tellonce = [
            replace(by_name["sandbox"], env={**by_name["sandbox"].env, **overrides}),
            *tellonce_workers,
            replace(by_name["streams"], env={**by_name["streams"].env, **overrides}),
        ]

    async def start_servers(self) -> None:
        """Temporal (with the namespace and search attributes) and Kafka (with every topic)."""
        (self.settings.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        for service in self.servers:
            self.dev.start(service)
        await asyncio.gather(*(self.dev.wait_healthy(service) for service in self.servers))

    async def start_tellonce(self) -> None:
        """The sandbox and the worker(s), then the streams process, as `tellonce dev` orders them."""
        first, streams = self.tellonce[:-1], self.tellonce[-1]
        for service in first:
            self.dev.start(service)
        await asyncio.gather(*(self.dev.wait_healthy(service) for service in first))
        self.dev.start(streams)
        await self.dev.wait_healthy(streams)

    def pids(self, prefix: str) -> list[int]:
        """Pids of running services whose name starts with `prefix`; a profiled worker's own pid."""
        found = []
        for service, proc in self.dev.running:
            if service.name.startswith(prefix):
                found.append(proc.pid)
        return found

    def tellonce_worker_pids(self) -> list[int]:
        """The processes of tellonce's workers."""
        return self.pids("worker-")

    def start_profiler(self) -> subprocess.Popen[bytes] | None:
        """Attach py-spy to the first tellonce worker (when asked to), recording until stopped.

        Attached only for the measured phase, so the worker's start-up imports are not in it.
        """
        if self.workers.profile_to is None:
            return None
        pid = self.pids("worker-1")[0]
        argv = [
            _py_spy(), "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
            "--format", "speedscope", "--output", str(self.workers.profile_to),
        ]  # fmt: skip
        with (self.settings.data_dir / "logs" / "py-spy.log").open("wb") as out:
            self.profiler = subprocess.Popen(  # noqa: S603 - py-spy from our own dev extra
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.profiler

    async def raw_client(self) -> Client:
        """A plain client (the SDK's default converter) to the bench's Temporal server."""
        return await Client.connect(self.settings.temporal_target, namespace=self.settings.temporal_namespace)

    def _spawn_raw_worker(self, task_queue: str, log: Path) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable, "-m", "infra.bench.raw_worker",
            "--target", self.settings.temporal_target,
            "--namespace", self.settings.temporal_namespace,
            "--task-queue", task_queue,
            "--max-concurrent-activities", str(self.workers.max_concurrent_activities),
            "--max-concurrent-workflow-tasks", str(self.workers.max_concurrent_workflow_tasks),
        ]  # fmt: skip
        with log.open("wb") as out:
            return subprocess.Popen(  # noqa: S603 - our own module, our own interpreter
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    async def start_raw_workers(self, task_queue: str) -> list[int]:
        """The raw baseline's worker processes, polling `task_queue`; returns their pids."""
        logs = self.settings.data_dir / "logs"
        for index in range(self.workers.processes):
            self.raw_processes.append(
                self._spawn_raw_worker(task_queue, logs / f"raw-worker-{index + 1}.log")
            )
        client = await self.raw_client()
        deadline = time.monotonic() + START_TIMEOUT
        while await _pollers(client, self.settings.temporal_namespace, task_queue) < self.workers.processes:
            if any(proc.poll() is not None for proc in self.raw_processes):
                raise DevStackError(f"a raw baseline worker exited; see {logs}/raw-worker-*.log")
            if time.monotonic() > deadline:
                raise DevStackError("the raw baseline workers did not start polling in time")
            await asyncio.sleep(0.2)
        return [proc.pid for proc in self.raw_processes]

    def stop_raw_workers(self) -> None:
        """Stop the raw baseline's workers (SIGTERM, then SIGKILL after the grace period)."""
        for proc in self.raw_processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.raw_processes:
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.raw_processes.clear()

    def stop_profiler(self) -> None:
        """Stop py-spy as Ctrl-C would, so it writes its recording."""
        if self.profiler is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.profiler.send_signal(signal.SIGINT)
        try:
            self.profiler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.profiler.kill()
            self.profiler.wait()
        self.profiler = None

    def stop(self) -> None:
        """Stop everything this stack started: all at once, since nothing outlives the run."""
        self.stop_raw_workers()
        self.stop_profiler()
        for _, proc in self.dev.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for _, proc in self.dev.running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.dev.running.clear()

    def cpu_by_service(self) -> dict[str, float]:
        """CPU seconds used so far by each running service (a profiled worker counts its child)."""
        used: dict[str, float] = {}
        for service, proc in self.dev.running:
            used[service.name] = cpu_seconds(proc.pid)
        for index, proc in enumerate(self.raw_processes):
            used[f"raw-worker-{index + 1}"] = cpu_seconds(proc.pid)
        return used

    def dead(self) -> str | None:
        """A message naming a service that exited, if any did."""
        return self.dev.died()


async def _pollers(client: Client, namespace: str, task_queue: str) -> int:
    try:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except (RuntimeError, RPCError):
        return 0
    return len(described.pollers)


def _py_spy() -> str:
    found = Path(sys.executable).parent / "py-spy"
    if not found.exists():
        raise DevStackError("py-spy is not installed: it comes with the dev extra (`make install`)")
    return str(found)


def rss_of(pids: list[int]) -> float:
    """Summed resident memory of some processes, MiB."""
    return sum(rss_mb(pid) for pid in pids)
