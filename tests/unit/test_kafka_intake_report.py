"""The Kafka intake benchmark's bookkeeping, without servers: CPU clocks and the report."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kafka_intake.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kafka_intake_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def result(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "submissions": 300,
        "rounds": 3,
        "partitions": 3,
        "batch": 256,
        "concurrency": 64,
        "tellonce_per_s": 90.0,
        "baseline_per_s": 100.0,
        "ratio": 0.9,
        "round_ratios": [0.8, 0.9, 1.0],
        "tellonce_rounds": [80.0, 90.0, 95.0],
        "baseline_rounds": [95.0, 100.0, 110.0],
        "tellonce_cpu_ms": 3.0,
        "baseline_cpu_ms": 1.0,
        "tellonce_loop_cpu_ms": 2.0,
        "baseline_loop_cpu_ms": 0.5,
        "server_pids": [],
        "servers_idle_ms_per_s": [],
        "tellonce_servers_cpu_ms": [],
        "baseline_servers_cpu_ms": [],
        "cpu_ratio": None,
        "load_average": [1.0, 1.0, 1.0, 1.5, 1.2, 1.1],
    }
    return {**base, **overrides}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_servers_cpu_is_read_from_proc_and_only_grows(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "SERVER_PIDS", [os.getpid()])
    (before,) = bench.servers_cpu()
    sum(i * i for i in range(300_000))  # spend some CPU in this process
    (after,) = bench.servers_cpu()
    assert after >= before > 0


def test_without_servers_their_cpu_is_zero(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SERVER_PIDS", [])
    assert bench.servers_cpu() == ()


def test_the_report_shows_the_servers_line_only_when_they_were_measured(bench: ModuleType) -> None:
    without = bench.render(result())
    assert "pid" not in without and "whole-CPU" not in without
    assert "CPU/submission   : tellonce 3.000 ms (loop thread 2.000)" in without
    assert "load average     : 1.00 1.00 1.00 before, 1.50 1.20 1.10 after" in without
    with_servers = bench.render(
        result(
            server_pids=[41, 42],
            servers_idle_ms_per_s=[265.0, 23.0],
            tellonce_servers_cpu_ms=[10.0, 1.0],
            baseline_servers_cpu_ms=[9.0, 0.5],
            cpu_ratio=0.769,
        )
    )
    assert (
        "pid 41          : tellonce 10.000 ms, baseline 9.000 ms CPU per submission "
        "(background 265.0 ms/s subtracted)"
    ) in with_servers
    assert "pid 42          : tellonce 1.000 ms, baseline 0.500 ms CPU per submission" in with_servers
    assert "whole-CPU ratio  :    0.769" in with_servers
