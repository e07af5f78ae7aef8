"""`tellonce bench` with a tiny N, so the benchmark never rots: both sides run every bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIDE_KEYS = {
    "bundles_per_s",
    "activities_per_s",
    "p50_s",
    "p95_s",
    "p99_s",
    "history_events",
    "payload_bytes",
    "worker_rss_mb",
    "completed",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One `tellonce bench --bundles 3 --json` run, on servers of its own."""
    # The bench starts its own servers: the test session's TELLONCE_* settings must not leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("TELLONCE_")}
    argv = [sys.executable, "-m", "infra.cli", "bench", "--bundles", "3", "--concurrency", "3", "--json"]
    done = subprocess.run(
        [*argv, "--data-dir", str(tmp_path_factory.mktemp("bench"))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


def test_both_sides_complete_every_bundle(report: dict[str, object]) -> None:
    for side in ("tellonce", "raw"):
        figures = report[side]
        assert isinstance(figures, dict)
        assert figures.keys() >= SIDE_KEYS, side
        assert figures["completed"] == 3, (side, figures["failures"])
        assert figures["failures"] == []
        assert figures["bundles_per_s"] > 0
        assert 0 < figures["p50_s"] <= figures["p95_s"] <= figures["p99_s"]
        assert figures["worker_rss_mb"] > 0


def test_raw_baseline_has_the_newborn_shape(report: dict[str, object]) -> None:
    raw = report["raw"]
    tellonce = report["tellonce"]
    assert isinstance(raw, dict)
    assert isinstance(tellonce, dict)
    # Five steps, each one no-op activity. tellonce calls the same five as activities and does
    # its own bookkeeping (status events, the statement offer) as local activities: markers.
    assert raw["activities_per_bundle"] == 5
    assert tellonce["activities_per_bundle"] >= 5
    by_type = tellonce["history_by_type"]
    assert isinstance(by_type, dict)
    assert by_type["ACTIVITY_TASK_SCHEDULED"] >= 5
    assert by_type["MARKER_RECORDED"] > 0
    assert tellonce["history_events"] > raw["history_events"]
    assert tellonce["matcher_history_events"] > 0
    assert tellonce["payload_bytes"] > raw["payload_bytes"] > 0


def test_ratios_and_targets_are_reported(report: dict[str, object]) -> None:
    ratio = report["ratio"]
    targets = report["targets"]
    assert isinstance(ratio, dict)
    assert isinstance(targets, dict)
    for name in ("throughput", "p99", "history"):
        assert isinstance(ratio[name], float)
        assert targets[name]["verdict"] in {"PASS", "MISS"}
        assert targets[name]["ratio"] == ratio[name]
    tellonce, raw = report["tellonce"], report["raw"]
    assert isinstance(tellonce, dict)
    assert isinstance(raw, dict)
    assert ratio["throughput"] == pytest.approx(tellonce["bundles_per_s"] / raw["bundles_per_s"], rel=0.01)
    machine = report["machine"]
    assert isinstance(machine, dict)
    assert machine["nproc"] >= 1
    assert "temporal version" in str(machine["temporal"])
