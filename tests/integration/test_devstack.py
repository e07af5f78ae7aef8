"""`tellonce dev` end to end: the whole stack as child processes, a real bundle through it, a
second stack refused on the same ports, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.devstack import port_is_free
from infra.settings import PORT_OFFSETS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(360)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "newborn-on" / "complete.json"
NOTICE = ROOT / "examples" / "birth-notices" / "matching.json"
TELLONCE = [sys.executable, "-m", "infra.cli"]
EXPECTED_SERVICES = ("api", "temporal-ui", "temporal", "kafka", "streams", "sandbox", "sandbox-sftp")


def free_port_base() -> int:
    """A port base in 20000-40000 whose every port is free right now."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        if all(port_is_free("127.0.0.1", base + offset) for offset in PORT_OFFSETS.values()):
            return base
    pytest.fail("no free port base found in 20000-40000")


class Stack:
    """A `tellonce dev` subprocess whose stdout lines arrive on a queue (read by a thread)."""

    def __init__(self, port_base: int, data_dir: Path) -> None:
        self.stderr_path = data_dir.parent / f"dev-{port_base}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*TELLONCE, "dev", "--port-base", str(port_base), "--data-dir", str(data_dir)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, last: str, timeout: float) -> list[str]:
        """Lines up to and including `last`; fails with stderr if the process ends first."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if line == last:
                return seen
        pytest.fail(f"no {last!r} line after {seen!r}; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def started(stack_dir: Path) -> Iterator[tuple[Stack, int]]:
    base = free_port_base()
    stack = Stack(base, stack_dir)
    try:
        yield stack, base
    finally:
        stack.kill()


def test_dev_runs_the_stack_and_stops_cleanly(started: tuple[Stack, int], stack_dir: Path) -> None:
    stack, base = started
    lines = stack.read_until("ready", timeout=90)

    addresses = dict(line.split(": ", 1) for line in lines[:-1])
    assert tuple(addresses) == EXPECTED_SERVICES, lines
    assert addresses == {
        "api": f"http://127.0.0.1:{base + PORT_OFFSETS['api']}",
        "temporal-ui": f"http://127.0.0.1:{base + PORT_OFFSETS['temporal-ui']}",
        "temporal": f"127.0.0.1:{base + PORT_OFFSETS['temporal']}",
        "kafka": f"127.0.0.1:{base + PORT_OFFSETS['kafka']}",
        "streams": f"http://127.0.0.1:{base + PORT_OFFSETS['streams']}",
        "sandbox": f"http://127.0.0.1:{base + PORT_OFFSETS['sandbox']}",
        "sandbox-sftp": f"sftp://127.0.0.1:{base + PORT_OFFSETS['sandbox-sftp']}",
    }
    assert (stack_dir / "temporal.db").is_file()
    for name in ("temporal", "kafka", "sandbox", "worker", "api", "streams"):
        assert (stack_dir / "logs" / f"{name}.log").is_file()

    # A real bundle through the whole stack: five programs, five references. The registration
    # waits for the hospital's notice, which arrives through Kafka and the streams process.
    submitted = subprocess.Popen(
        [*TELLONCE, "submit", str(EXAMPLE), "--follow", "--json", "--api", addresses["api"]],
        cwd=ROOT,
        env={**os.environ, "TELLONCE_DATA_DIR": str(stack_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent = subprocess.run(
        [*TELLONCE, "notices", "send", str(NOTICE), "--kafka", addresses["kafka"]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    out, err = submitted.communicate(timeout=180)
    assert submitted.returncode == 0, out + err
    final = json.loads(out)
    assert final["state"] == "completed"
    references = [step["reference"] for step in final["steps"] if step["reference"]]
    assert len(references) == 5, final

    # `status` finds the access code `submit` remembered.
    status = subprocess.run(
        [*TELLONCE, "status", final["tracking_id"], "--json", "--api", addresses["api"]],
        cwd=ROOT,
        env={**os.environ, "TELLONCE_DATA_DIR": str(stack_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "completed"

    # A second stack on the same ports is refused before it starts anything.
    second = subprocess.run(
        [*TELLONCE, "dev", "--port-base", str(base), "--data-dir", str(stack_dir.parent / "second")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert "already in use" in second.stderr
    assert "--port-base" in second.stderr
    assert "Traceback" not in second.stderr

    # Ctrl-C: every child stops, `stopped` is printed, exit 0, and the ports are free again.
    stack.proc.send_signal(signal.SIGINT)
    assert stack.read_until("stopped", timeout=60)[-1] == "stopped"
    assert stack.proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 5
    busy = list(PORT_OFFSETS)
    while busy and time.monotonic() < deadline:
        busy = [name for name, offset in PORT_OFFSETS.items() if not port_is_free("127.0.0.1", base + offset)]
        time.sleep(0.2)
    assert busy == [], f"still in use after stop: {busy}"
