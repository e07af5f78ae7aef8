"""Scale-out (issue 8, item 4): many stateless processes share one namespace and one consumer group.

Three worker processes and two streams processes run against one Temporal namespace and one
Kafka consumer group, beside the API and the rest of the dev stack (`tests/chaos/stack.py`).
Newborn and change-of-address bundles arrive over HTTP and Kafka (each Kafka one twice, and the
hospital's notice for each newborn), in two waves.

Two processes die mid-run and stay dead. The streams process holding most submissions
partitions is SIGKILLed a few milliseconds after it starts the first record of wave 1, in the
middle of its batch: the broker's committed offsets, read right after, must show records it
had started but not committed, which the surviving process must then handle again (the
at-least-once path: commit after start, a second start a no-op). The busiest worker is killed
with its legacy calls in flight. Wave 2 arrives while the survivors carry the load. Then every
submission must have exactly one bundle execution, every bundle must have completed, and no
legacy system's ledger may hold the same idempotency key twice. The counts are printed (`-s`).

It takes about a minute, which the default suite cannot spare on top of the chaos suite (which
kills a worker and a streams process of one stack in CI): `TELLONCE_SCALEOUT=1 .venv/bin/pytest
tests/scaleout -s` runs it with 60 bundles, `TELLONCE_SCALEOUT=full` with 200.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from infra.sandbox.client import SandboxAdmin
from infra.streams.submissions import tracking_id_for
from infra.temporal import connect
from tests.chaos.scenario import SHORT, make_submissions, say
from tests.chaos.stack import ChaosStack
from tests.chaos.verify import read_ledgers, settled_bundle_executions, wait_all_final
from tests.chaos.workload import Partner, Submission, envelope, submit_http
from tests.scaleout.kafka_watch import (
    GroupOffsets,
    MidBatchKill,
    kill_mid_batch,
    started_records,
    wait_group_settled,
)
from workflows.models import BundleState

SCALEOUT = os.environ.get("TELLONCE_SCALEOUT", "").strip().lower()
FULL = SCALEOUT == "full"
PER_WAVE = 50 if FULL else 15
"""Newborns, and as many moves, per wave; two waves: 60 bundles in CI, 200 in the full run."""
FINAL_TIMEOUT = 600.0 if FULL else 150.0
WORKERS = ("worker", "worker-2", "worker-3")
STREAMS = ("streams", "streams-2")
"""The one holding most submissions partitions is SIGKILLed mid-batch; killed processes stay dead."""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(1500 if FULL else 420),
    pytest.mark.skipif(not SCALEOUT, reason="a minute of five processes: set TELLONCE_SCALEOUT=1 (or full)"),
]


def free_port(host: str) -> int:
    """A port nothing listens on now (for the second streams process's `/health`)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def own_ports(host: str, name: str) -> tuple[dict[str, str], dict[str, int]]:
    """A replica's own metrics ports (each process on a host serves its own), as env and ports."""
    metrics, sdk = free_port(host), free_port(host)
    env = {"TELLONCE_METRICS_PORT": str(metrics), "TELLONCE_SDK_METRICS_PORT": str(sdk)}
    return env, {f"{name}-metrics": metrics, f"{name}-sdk-metrics": sdk}


def add_processes(stack: ChaosStack) -> list[str]:
    """Two more workers and a second streams process: the same settings, their own ports."""
    host = stack.settings.host
    for name in WORKERS[1:]:
        env, ports = own_ports(host, name)
        stack.add_replica("worker", name, env=env, ports=ports)
    env, ports = own_ports(host, "streams-2")
    port = free_port(host)
    url = f"http://{host}:{port}/health"

    async def streams_2_healthy() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    stack.add_replica(
        "streams",
        "streams-2",
        env={**env, "TELLONCE_STREAMS_PORT": str(port)},
        ports={**ports, "streams-2": port},
        healthy=streams_2_healthy,
    )
    return [*WORKERS[1:], "streams-2"]


def waves() -> list[list[Submission]]:
    """Two waves of newborns and moves that all go through (no withdrawals, no refusals)."""
    plan = dataclasses.replace(
        SHORT, newborns=(PER_WAVE, PER_WAVE), moves=(PER_WAVE, PER_WAVE), withdrawals=0, rollbacks=0
    )
    return make_submissions(plan, run_salt=100_000 + int(time.time()) % 800_000)


async def send_kafka(partner: Partner, kafka: list[Submission], copies: int = 2) -> None:
    """Every Kafka submission `copies` times, produced at once so they reach the consumers together.

    One `send_and_wait` after another would trickle in, and each streams process would handle
    them in batches of one or two, committed within milliseconds: there would be no batch to
    die in the middle of.
    """
    topic = partner.settings.kafka_topic_submissions
    # Sealed first, so the sends follow each other with nothing in between.
    records = [(envelope(s, partner.settings), str(s.kafka_id).encode()) for s in kafka] * copies
    pending = [await partner.producer.send(topic, value, key=key) for value, key in records]
    await asyncio.gather(*pending)
    for submission in kafka:
        assert submission.kafka_id is not None
        submission.kafka_sends += copies
        submission.tracking_id = tracking_id_for(submission.kafka_id)


async def send(api: httpx.AsyncClient, partner: Partner, wave: list[Submission]) -> None:
    """HTTP submissions all at once, Kafka ones twice each, then the newborns' hospital notices."""
    await asyncio.gather(
        *(submit_http(api, s, give_up_after=60) for s in wave if s.channel == "api"),
        send_kafka(partner, [s for s in wave if s.channel == "kafka"]),
    )
    for submission in wave:
        if submission.newborn:
            await partner.send_notice(submission)


def json_lines(stack: ChaosStack, name: str) -> list[dict[str, Any]]:
    """Every JSON line a process logged (every incarnation)."""
    entries: list[dict[str, Any]] = []
    for line in stack.log_path(name).read_text(errors="replace").splitlines():
        try:
            entry: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def handled_by(stack: ChaosStack, name: str, event: str) -> int:
    """How many `event` lines a process logged (every incarnation), to show who carried the load."""
    return sum(1 for entry in json_lines(stack, name) if entry.get("event") == event)


async def test_three_workers_and_two_streams_share_the_load_and_survive_losing_one_each(
    chaos_stack: ChaosStack,
) -> None:
    stack = chaos_stack
    started = time.monotonic()
    extra = add_processes(stack)
    for name in extra:
        stack.start(name)
    await asyncio.gather(*(stack.wait_healthy(name) for name in extra))
    held = await wait_group_settled(stack, STREAMS)
    # The one with most partitions has most records in flight when it dies.
    doomed = max(STREAMS, key=lambda name: len(held[name]))
    survivor = next(name for name in STREAMS if name != doomed)
    first, second = waves()
    everything = first + second
    timeline: list[str] = [
        f"{time.monotonic() - started:5.1f}s  3 workers, 2 streams healthy, partitions {held}"
    ]

    async with (
        httpx.AsyncClient(base_url=stack.settings.api_base_url, timeout=30.0) as api,
        SandboxAdmin(stack.settings.sandbox_base_url) as sandbox,
    ):
        partner = Partner(stack.settings)
        offsets = GroupOffsets(stack.settings)
        await partner.start()
        await offsets.start()
        client = await connect(stack.settings)
        try:
            # The streams process dies a few ms after it starts a record of wave 1 it has not
            # committed, with the rest of its batch in flight.
            watching = asyncio.create_task(kill_mid_batch(stack, doomed, held[doomed], offsets))
            try:
                await send(api, partner, first)
            except BaseException:
                watching.cancel()
                raise
            streams_kill: MidBatchKill = await watching
            timeline.append(
                f"{time.monotonic() - started:5.1f}s  wave 1 sent: {len(first)} bundles; {doomed} SIGKILLed, "
                f"dead {streams_kill.seconds_to_kill * 1000:.0f} ms after an uncommitted start showed"
            )
            # Mid-flight: once the workers have made as many legacy calls as the wave has bundles
            # (a sixth of the wave's calls), the one that made most of them dies with its calls.
            calls = dict.fromkeys(WORKERS, 0)
            deadline = time.monotonic() + 30.0
            while sum(calls.values()) < len(first) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                calls = {name: handled_by(stack, name, "step.calling") for name in WORKERS}
            busiest = max(WORKERS, key=lambda name: calls[name])
            stack.kill(busiest)
            timeline.append(
                f"{time.monotonic() - started:5.1f}s  SIGKILL {busiest} (legacy calls so far: {calls})"
            )
            await send(api, partner, second)
            timeline.append(f"{time.monotonic() - started:5.1f}s  wave 2 sent: {len(second)} bundles")

            tracking_ids = sorted({s.tracking_id for s in everything if s.tracking_id})
            outcomes = await wait_all_final(client, tracking_ids, timeout=FINAL_TIMEOUT)
            timeline.append(f"{time.monotonic() - started:5.1f}s  every bundle read final or timed out")
            executions = await settled_bundle_executions(client, expected=len(tracking_ids))
            dedupes, effects = await read_ledgers(sandbox)
        finally:
            await offsets.stop()
            await partner.stop()

    topic = stack.settings.kafka_topic_submissions
    survivor_started = started_records(json_lines(stack, survivor), topic)
    streams_kill.handled_again = survivor_started & streams_kill.uncommitted
    runs = Counter(workflow_id for workflow_id, _run, _status in executions)
    states = Counter(o.status.state.value if o.status else o.execution for o in outcomes.values())
    keys = Counter((e.system, e.operation, e.key) for e in effects)
    duplicates = Counter(system for (system, _op, _key), n in keys.items() if n > 1)
    by_system = Counter(e.system for e in effects)
    report: dict[str, Any] = {
        "submitted": len(everything),
        "accepted": sum(1 for s in everything if s.accepted),
        "kafka_records_sent": sum(s.kafka_sends for s in everything),
        "bundles_started": len(runs),
        "executions": sum(runs.values()),
        "completed": states.get(BundleState.COMPLETED.value, 0),
        "states": dict(states),
        "ledger_entries": dict(sorted(by_system.items())),
        "duplicates_per_system": {system: duplicates.get(system, 0) for system in sorted(dedupes)},
        "streams_kill": streams_kill.figures(),
        "killed_worker": busiest,
        "kafka_records_per_streams": {n: handled_by(stack, n, "submission.accepted") for n in STREAMS},
        "legacy_calls_per_worker": {n: handled_by(stack, n, "step.calling") for n in WORKERS},
        "wall_s": round(time.monotonic() - started, 1),
    }
    say("\n".join(["", "scale-out run:", *timeline, json.dumps(report, indent=2)]))

    assert stack.died() is None
    # The kill really was mid-batch: it had started records whose offsets were not committed,
    # so Kafka had to deliver them again (a kill after the commit would prove only a rebalance).
    assert streams_kill.started_uncommitted, f"{doomed} was killed after its commit: {streams_kill.figures()}"
    assert streams_kill.uncommitted - survivor_started == set(), (
        f"records {doomed} left uncommitted that {survivor} never handled: {streams_kill.figures()}"
    )
    assert report["accepted"] == len(everything), "a submission was never accepted"
    assert set(runs) == set(tracking_ids), "a submission has no bundle, or a bundle no submission"
    assert [wid for wid, n in runs.items() if n > 1] == [], "a submission started more than once"
    not_completed = {tid: o.status.state if o.status else o.execution for tid, o in outcomes.items()}
    not_completed = {tid: s for tid, s in not_completed.items() if s != BundleState.COMPLETED}
    assert not_completed == {}, "bundles that did not complete"
    assert sum(duplicates.values()) == 0, f"the same request twice at a legacy system: {duplicates}"
    # Every process took part (the killed ones before they died): the load really was shared.
    assert all(report["kafka_records_per_streams"][name] > 0 for name in STREAMS), report
    assert all(report["legacy_calls_per_worker"][name] > 0 for name in WORKERS), report
