"""The `tellonce dev` stack as separately killable processes, for the resilience suite.

The commands, environments and health probes are `infra.devstack.services` itself: what runs
here is what `tellonce dev` runs. Only the supervision differs: any one service can be killed
(SIGKILL or SIGTERM to its process group) and started again on the same ports and data dir, and
each start appends to the service's log under `<data_dir>/logs/`, so a killed incarnation's last
words stay readable next to its successor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from infra.devstack import PROBE_INTERVAL, START_TIMEOUT, Probe, Service, port_is_free, services
from infra.settings import Settings
from workflows.names import bundle_task_queue

STOP_GRACE = 5.0
"""Seconds a service has after SIGTERM before it is killed (tests do not wait for slow goodbyes)."""

SETPRIV = shutil.which("setpriv")
"""util-linux's `setpriv`: it gives each service a parent-death signal before exec'ing it, so no
service outlives the test process even when that process is killed outright (finalizers cover
every other ending)."""


class StackError(Exception):
    """A service would not start, or died when nobody killed it."""


@dataclass
class Running:
    """One incarnation of a service."""

    service: Service
    proc: subprocess.Popen[bytes]
    stopped_on_purpose: bool = False


class ChaosStack:
    """Start, kill and restart the dev stack's services one at a time.

    Args:
        settings: The stack's settings (host, port base, data dir); children get the same through
            `services`' environment plus `extra_env`.
        extra_env: Variables every child gets on top of the dev stack's own.
    """

    def __init__(self, settings: Settings, extra_env: dict[str, str]) -> None:
        self.settings = settings
        self.stages = services(settings)
        self.by_name = {service.name: service for stage in self.stages for service in stage}
        self.extra_env = extra_env
        self.running: dict[str, Running] = {}
        self.starts: dict[str, int] = dict.fromkeys(self.by_name, 0)
        self.killed_pids: list[int] = []
        """Every process this stack stopped on purpose (a Temporal worker identity starts with it)."""
        self.workers = {"worker"}
        """Worker processes: healthy once the server has seen that very process poll."""
        self._client: Client | None = None
        self.log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def log_dir(self) -> Path:
        """Where each service logs, as under `tellonce dev`."""
        return self.settings.data_dir / "logs"

    def log_path(self, name: str) -> Path:
        """One service's log (every incarnation, appended)."""
        return self.log_dir / f"{name}.log"

    def check_ports(self) -> None:
        """Refuse to start on ports something else holds (the port base is chosen free, so rarely)."""
        for service in self.by_name.values():
            for label, number in service.ports.items():
                if not port_is_free(self.settings.host, number):
                    raise StackError(f"port {number} for {label} is taken")

    async def start_all(self) -> None:
        """Every service, stage by stage, each stage healthy before the next starts."""
        self.check_ports()
        for stage in self.stages:
            for service in stage:
                self.start(service.name)
            await asyncio.gather(*(self.wait_healthy(service.name) for service in stage))

    def add_replica(
        self,
        of: str,
        name: str,
        *,
        env: dict[str, str] | None = None,
        ports: dict[str, int] | None = None,
        healthy: Probe | None = None,
    ) -> None:
        """One more process of a stateless service (a second worker, a second streams process).

        It joins its original's stage, so `stop_all` stops it too; `start`, `kill` and `restart`
        take its name. `env` is added to the original's environment, `ports` replace its ports
        (none by default: a replica must not claim its original's), `healthy` its probe.
        """
        original = self.by_name[of]
        replica = dataclasses.replace(
            original,
            name=name,
            env={**original.env, **(env or {})},
            ports=ports or {},
            healthy=healthy or original.healthy,
            addresses=[],
        )
        next(stage for stage in self.stages if original in stage).append(replica)
        self.by_name[name] = replica
        self.starts[name] = 0
        if of in self.workers:
            self.workers.add(name)

    def start(self, name: str) -> None:
        """Start one service in its own process group, appending to its log."""
        if name in self.running and self.running[name].proc.poll() is None:
            raise StackError(f"{name} is already running")
        service = self.by_name[name]
        self.starts[name] += 1
        with self.log_path(name).open("ab") as out:
            out.write(f"\n=== chaos: start #{self.starts[name]} of {name}\n".encode())
            out.flush()
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *service.argv] if SETPRIV else service.argv
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self._outside_env(), **service.env, **self.extra_env},
                start_new_session=True,
            )
        self.running[name] = Running(service, proc)

    @staticmethod
    def _outside_env() -> dict[str, str]:
        """This process's environment without its TELLONCE_* settings: a service's settings are
        the dev stack's (`services`' environment) and `extra_env`, nothing a test session set."""
        return {key: value for key, value in os.environ.items() if not key.startswith("TELLONCE_")}

    def pid(self, name: str) -> int:
        """The process id of a running service."""
        return self.running[name].proc.pid

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a service's whole process group and wait until it is gone (SIGKILL after a grace)."""
        running = self.running[name]
        proc = running.proc
        running.stopped_on_purpose = True
        self.killed_pids.append(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_GRACE)
        with self.log_path(name).open("ab") as out:
            out.write(f"\n=== chaos: {name} stopped by {sig.name}, exit {proc.returncode}\n".encode())

    async def restart(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill a service, start it again on the same ports and data, and wait until it is healthy."""
        self.kill(name, sig)
        if name == "temporal":
            # The dev server must find its ports free again before it can bind them.
            await self.wait_ports_free(name)
        self.start(name)
        await self.wait_healthy(name)

    async def wait_ports_free(self, name: str, timeout: float = 15.0) -> None:
        """Wait until nothing listens on a stopped service's ports."""
        deadline = time.monotonic() + timeout
        ports = list(self.by_name[name].ports.values())
        while not all(port_is_free(self.settings.host, port) for port in ports):
            if time.monotonic() > deadline:
                raise StackError(f"{name}'s ports {ports} still busy {timeout:.0f}s after it stopped")
            await asyncio.sleep(0.1)

    async def wait_healthy(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Probe a service until it is healthy; raise, with its log's tail, if it dies or times out.

        A restarted worker is healthy only once the server has seen *this* process poll: the dev
        stack's own probe would be satisfied by the dead incarnation's poller, which the server
        keeps listing for a while.
        """
        service = self.by_name[name]
        probe = (lambda: self._new_worker_polls(name)) if name in self.workers else service.healthy
        deadline = time.monotonic() + timeout
        while not await probe():
            if problem := self.died():
                raise StackError(problem)
            if time.monotonic() > deadline:
                raise StackError(f"{name} not healthy after {timeout:.0f}s\n{self.tail(name)}")
            await asyncio.sleep(PROBE_INTERVAL)

    async def _new_worker_polls(self, name: str) -> bool:
        identity = f"{self.pid(name)}@"
        try:
            if self._client is None:
                self._client = await asyncio.wait_for(
                    Client.connect(self.settings.temporal_target, namespace=self.settings.temporal_namespace),
                    timeout=3.0,
                )
            described = await asyncio.wait_for(
                self._client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=self.settings.temporal_namespace,
                        task_queue=TaskQueue(name=bundle_task_queue(self.settings.task_queue_prefix)),
                        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                    )
                ),
                timeout=3.0,
            )
        except (RuntimeError, RPCError, TimeoutError):
            return False
        return any(poller.identity.startswith(identity) for poller in described.pollers)

    def died(self) -> str | None:
        """A message naming a service that exited without being killed, if one did."""
        for name, running in self.running.items():
            proc = running.proc
            if proc.poll() is not None and not running.stopped_on_purpose:
                return f"{name} exited by itself with code {proc.returncode}\n{self.tail(name)}"
        return None

    def stop_all(self) -> None:
        """Stop every service, newest stage first: SIGTERM, then SIGKILL what lingers. Never raises."""
        order = [service.name for stage in reversed(self.stages) for service in stage]
        for name in order:
            running = self.running.get(name)
            if running is None or running.proc.poll() is not None:
                continue
            running.stopped_on_purpose = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.proc.pid, signal.SIGTERM)
        for name in order:
            running = self.running.get(name)
            if running is None:
                continue
            try:
                running.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.proc.wait(timeout=STOP_GRACE)
            # Children of a child (none today) would share its group: make sure none outlives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.proc.pid, signal.SIGKILL)

    def tail(self, name: str, lines: int = 30) -> str:
        """The end of one service's log, for failure messages."""
        try:
            text = self.log_path(name).read_text(errors="replace").rstrip().splitlines()[-lines:]
        except OSError:
            return f"--- {name}: no log"
        return f"--- {name} ({self.log_path(name)}), last {len(text)} lines:\n" + "\n".join(text)

    def tails(self, lines: int = 30) -> str:
        """The end of every service's log."""
        return "\n".join(self.tail(name, lines) for name in self.by_name)
