"""A `tellonce dev` stack run as a child process, for tests that need the whole product running."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from infra.devstack import port_is_free
from infra.settings import PORT_OFFSETS

ROOT = Path(__file__).resolve().parents[2]
TELLONCE = [sys.executable, "-m", "infra.cli"]


def free_port_base() -> int:
    """A port base in 20000-40000 whose every port is free right now."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        if all(port_is_free("127.0.0.1", base + offset) for offset in PORT_OFFSETS.values()):
            return base
    pytest.fail("no free port base found in 20000-40000")


class Stack:
    """A `tellonce dev` subprocess whose stdout lines arrive on a queue (read by a thread)."""

    def __init__(self, port_base: int, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.stderr_path = data_dir.parent / f"dev-{port_base}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*TELLONCE, "dev", "--port-base", str(port_base), "--data-dir", str(data_dir)],
                cwd=ROOT,
                env=None if env is None else dict(env),
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
