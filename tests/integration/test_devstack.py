"""`tellonce dev` end to end: the whole stack as child processes, a real bundle through it, a
second stack refused on the same ports, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.devstack import port_is_free
from infra.settings import PORT_OFFSETS
from tests.integration.devstack_support import ROOT, TELLONCE, Stack, free_port_base

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(360)]

EXAMPLE = ROOT / "examples" / "newborn-on" / "complete.json"
NOTICE = ROOT / "examples" / "birth-notices" / "matching.json"
EXPECTED_SERVICES = (
    "portal", "api", "ops", "temporal-ui", "temporal", "kafka",
    "streams", "sandbox", "sandbox-sftp", "ops-token",
)  # fmt: skip


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
    ops_token = addresses.pop("ops-token")
    assert addresses == {
        "portal": f"http://127.0.0.1:{base + PORT_OFFSETS['api']}/en/",
        "api": f"http://127.0.0.1:{base + PORT_OFFSETS['api']}",
        "ops": f"http://127.0.0.1:{base + PORT_OFFSETS['api']}/ops/",
        "temporal-ui": f"http://127.0.0.1:{base + PORT_OFFSETS['temporal-ui']}",
        "temporal": f"127.0.0.1:{base + PORT_OFFSETS['temporal']}",
        "kafka": f"127.0.0.1:{base + PORT_OFFSETS['kafka']}",
        "streams": f"http://127.0.0.1:{base + PORT_OFFSETS['streams']}",
        "sandbox": f"http://127.0.0.1:{base + PORT_OFFSETS['sandbox']}",
        "sandbox-sftp": f"sftp://127.0.0.1:{base + PORT_OFFSETS['sandbox-sftp']}",
    }
    # The printed token is a supervisor's, accepted by the API; the UI decodes through the API.
    whoami = httpx.get(
        f"{addresses['api']}/api/v1/ops/whoami", headers={"Authorization": f"Bearer {ops_token}"}, timeout=10
    )
    assert whoami.json() == {"subject": "dev-supervisor", "role": "supervisor"}
    ui_settings = httpx.get(f"{addresses['temporal-ui']}/api/v1/settings", timeout=10).json()
    assert ui_settings["Codec"]["Endpoint"] == f"{addresses['api']}/api/v1/ops/codec"
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
