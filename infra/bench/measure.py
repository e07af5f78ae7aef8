"""Figures from what a run left behind: latency percentiles, histories, processes, the machine."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: every figure reported is a latency that happened."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def payload_bytes(message: Message) -> int:
    """Serialized size of every Temporal payload inside a message (metadata and data)."""
    if isinstance(message, Payload):
        return message.ByteSize()
    total = 0
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            # Maps of payloads (memo, headers, search attributes) hold them as entry values.
            total += sum(payload_bytes(item) for item in value.values() if isinstance(item, Message))
        elif isinstance(value, Message):
            total += payload_bytes(value)
        else:
            total += sum(payload_bytes(item) for item in value)
    return total


@dataclass(frozen=True)
class HistoryFigures:
    """One workflow's history, counted."""

    events: int
    payload_bytes: int
    activities: int
    workflow_tasks: int
    by_type: dict[str, int]
    """Event count per event type (e.g. `ACTIVITY_TASK_SCHEDULED`)."""
    payload_bytes_by_type: dict[str, int]
    """Payload bytes per event type: where a history's size comes from."""


async def history_figures(client: Client, workflow_id: str) -> HistoryFigures:
    """Count the events, payload bytes, activities and workflow tasks of a workflow's history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    kinds = [event.event_type for event in history.events]
    sizes: dict[str, int] = {}
    for event in history.events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        sizes[name] = sizes.get(name, 0) + payload_bytes(event)
    return HistoryFigures(
        events=len(history.events),
        payload_bytes=sum(sizes.values()),
        payload_bytes_by_type={name: size for name, size in sorted(sizes.items()) if size},
        activities=kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
        workflow_tasks=kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
        by_type={
            EventType.Name(kind).removeprefix("EVENT_TYPE_"): kinds.count(kind) for kind in sorted(set(kinds))
        },
    )


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for nothing."""
    listed = list(values)
    return sum(listed) / len(listed) if listed else math.nan


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Direct children of a process (e.g. the worker that py-spy started)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listing:
                found += [int(child) for child in listing.read().split()]
    except OSError:
        pass
    return found


def machine(temporal_binary: str) -> dict[str, object]:
    """What the figures were measured on."""
    model = "unknown"
    memory_gib = math.nan
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model
            )
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = int(re.split(r"\s+", meminfo.readline())[1])
            memory_gib = round(kib / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        version = subprocess.run(  # noqa: S603 - our own wheel's binary
            [temporal_binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        version = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": memory_gib,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0],
        # The bench shares the machine with whatever else runs: a busy machine skews both sides.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "temporal": version,
    }
