"""Retention on a real Temporal dev server: past the period a bundle keeps only its record.

Bundles run with scripted adapters (tests/workflow/support.py) under a one-second retention
period. The server here is the test module's own: Temporal deletes a closed execution only once
its queue's acknowledgement level has passed the close, which the dev server moves every 30 s
by default; this one moves it every second, so a deletion shows within a second or two.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.retention import RetentionSweeper, SweepRequest, SweepResult
from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.notices import BirthNoticeMatchInput
from infra.api import create_app
from infra.devstack import ensure_namespace_retention
from infra.intake import IdempotencyConflict, Intake
from infra.records import open_record_store, records_path
from infra.settings import Settings
from tests.privacy_scan import spellings
from tests.workflow.support import (
    SUBMISSION,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    states,
    wait_for,
)
from workflows.birth_notice import BirthNoticeMatchWorkflow
from workflows.models import BundleState, StepState
from workflows.names import BIRTH_NOTICE_WORKFLOW_PREFIX, bundle_task_queue

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RETENTION = timedelta(seconds=1)
PERSONAL = (SUBMISSION["child"]["name"], SUBMISSION["parent"]["name"], SUBMISSION["parent"]["sin"])
"""The example submission's names and SIN, looked for in the records' bytes."""

T = TypeVar("T")

MOUNTED_CLI = (
    "import typer; from infra.retention_cli import retention_app; "
    "app = typer.Typer(); app.add_typer(retention_app, name='retention'); app()"
)


@pytest.fixture
def temporal(dev_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's dev server, which performs deletions within a second (tests/conftest.py)."""
    return dev_env


def _settings(tmp_path: Path, prefix: str, client: Client) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path,
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        task_queue_prefix=prefix,
        retention_period=RETENTION,
    )


async def _gone(client: Client, workflow_id: str, run_id: str | None = None) -> bool:
    try:
        await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return True
        raise
    return False


async def _eventually(check: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """Poll: visibility and deletions trail the workflows by a moment."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        value = await check()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what}: last {value!r}")
        await asyncio.sleep(0.25)


def _personal_hits(data: bytes) -> list[str]:
    return [value for value in PERSONAL if any(s in data for s in spellings(value))]


def _add(total: SweepResult, result: SweepResult) -> SweepResult:
    counts = ("expired", "recorded", "removed", "already_gone", "deferred", "resumed", "notices_removed")
    return total.model_copy(update={name: getattr(total, name) + getattr(result, name) for name in counts})


async def test_a_closed_bundle_past_retention_keeps_only_its_record(
    temporal: WorkflowEnvironment, tmp_path: Path
) -> None:
    client, prefix = temporal.client, new_prefix()
    settings = _settings(tmp_path, prefix, client)
    store = open_record_store(settings)
    adapters = scripted_adapters()
    async with running_workers(client, adapters, prefix):
        completed = await start_bundle(client, plan(), prefix)
        final = await completed.result()
        assert final.state is BundleState.COMPLETED

        # From now on registration waits for a reply that never comes: these bundles stay open.
        adapters["registrar"].pending_reply = True
        running = await start_bundle(client, plan(), prefix)
        stopped = await start_bundle(client, plan(), prefix)
        for handle in (running, stopped):
            await wait_for(handle, lambda s: states(s)["registration"] is StepState.WAITING_REPLY)
        # An operator ends one from outside: its status comes from a query, not a result.
        await stopped.terminate("stopped by operations")
        matcher = await client.start_workflow(
            BirthNoticeMatchWorkflow.run,
            BirthNoticeMatchInput(key=uuid.uuid4().hex, upsert_search_attributes=False),
            id=f"{BIRTH_NOTICE_WORKFLOW_PREFIX}{uuid.uuid4().hex}",
            task_queue=bundle_task_queue(prefix),
        )
        if (await matcher.describe()).status is WorkflowExecutionStatus.RUNNING:
            await matcher.terminate("test")

        sweeper = RetentionSweeper(
            client, store, task_queue_prefix=prefix, retention_period=settings.retention_period
        )
        closed = {completed.id, stopped.id}
        looked = await _eventually(
            lambda: sweeper.sweep(SweepRequest(dry_run=True)),
            lambda r: {b.tracking_id for b in r.would_remove} == closed and r.would_remove_notices == 1,
            "the dry run never listed both closed bundles and the matcher",
        )
        assert running.id not in {b.tracking_id for b in looked.would_remove}
        assert not await _gone(client, completed.id)  # a dry run changes nothing
        assert await store.get(completed.id) is None

        # Two sweepers at once, as when a CLI run meets the worker's round.
        second = RetentionSweeper(client, store, task_queue_prefix=prefix, retention_period=RETENTION)
        total = SweepResult()

        async def both() -> SweepResult:
            nonlocal total
            for result in await asyncio.gather(sweeper.sweep(SweepRequest()), second.sweep(SweepRequest())):
                total = _add(total, result)
            return total

        await _eventually(
            both,
            lambda t: t.removed + t.already_gone >= 2 and t.notices_removed >= 1,
            "the sweeps never removed both bundles and the matcher",
        )
        # A sweeper that meets a bundle the other is deleting may defer it: the next round has it.
        for workflow_id in (completed.id, stopped.id, matcher.id):
            await _eventually(partial(_gone, client, workflow_id), bool, f"{workflow_id} still exists")

        # Deletions done and visible: another round finds nothing to do.
        async def again() -> SweepResult:
            return await sweeper.sweep(SweepRequest())

        quiet = await _eventually(again, lambda r: r.expired == 0, "deleted bundles stayed visible")
        assert (quiet.recorded, quiet.removed, quiet.resumed, quiet.notices_removed) == (0, 0, 0, 0)

        # The open bundle was never touched.
        assert (await running.describe()).status is WorkflowExecutionStatus.RUNNING
        assert await store.get(running.id) is None

        kept = await store.get(completed.id)
        assert kept is not None
        assert kept.state is BundleState.COMPLETED
        assert (kept.bundle_id, kept.jurisdiction, kept.channel, kept.closed_as) == (
            "newborn-test",
            "CA-ON",
            "api",
            "completed",
        )
        assert kept.run_id == completed.result_run_id
        assert {s.id: (s.system, s.state, s.attempts) for s in kept.steps} == {
            s.id: (s.system, s.state, s.attempts) for s in final.steps
        }
        assert kept.personal_data_removed_at is not None
        assert kept.personal_data_removed_at >= kept.closed_at
        ended = await store.get(stopped.id)
        assert ended is not None
        assert (ended.state, ended.closed_as) == (BundleState.FAILED, "terminated")
        assert {s.id: s.state for s in ended.steps}["registration"] is StepState.WAITING_REPLY

        raw = b"".join(p.read_bytes() for p in records_path(settings).parent.iterdir() if p.is_file())
        assert completed.id.encode() in raw  # the scan reads what the store wrote
        assert _personal_hits(raw) == []

        await _check_api(client, settings, completed.id, running.id)
        await running.terminate("test over")


async def _check_api(client: Client, settings: Settings, removed_id: str, running_id: str) -> None:
    """The resident's status of a removed bundle comes from its record; nothing else changes."""
    intake = Intake(client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    transport = httpx.ASGITransport(app=create_app(settings, intake=intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as api:

        async def status(tracking_id: str, code: str | None = None) -> httpx.Response:
            code = code if code is not None else intake.access_code(tracking_id)
            return await api.get(f"/api/v1/submissions/{tracking_id}", headers={"X-Access-Code": code})

        removed = await status(removed_id)
        assert removed.status_code == 200, removed.text
        body: dict[str, Any] = removed.json()
        assert body["state"] == "completed"
        assert {s["id"]: s["state"] for s in body["steps"]} == dict.fromkeys(
            ("certificate", "registration", "sin", "ccb", "resp"), "done"
        )
        assert all(s["reference"] is None and s["message"] is None for s in body["steps"])
        assert _personal_hits(removed.content) == []
        assert body["personal_data_removed_at"] is not None

        assert (await status(removed_id, code="AAAA-BBBB-CCCC-DDDD")).status_code == 404
        assert (await status(str(uuid.uuid4()))).status_code == 404
        live = await status(running_id)
        assert live.status_code == 200
        assert live.json()["state"] == "in_progress"


async def test_the_status_of_a_removed_bundle_says_when_its_data_was_removed(
    temporal: WorkflowEnvironment, tmp_path: Path
) -> None:
    client, prefix = temporal.client, new_prefix()
    settings = _settings(tmp_path, prefix, client)
    async with running_workers(client, scripted_adapters(), prefix):
        handle = await start_bundle(client, plan(), prefix)
        await handle.result()
        sweeper = RetentionSweeper(
            client, open_record_store(settings), task_queue_prefix=prefix, retention_period=RETENTION
        )
        await _eventually(lambda: sweeper.sweep(SweepRequest()), lambda r: r.removed == 1, "never removed")
    record = await open_record_store(settings).get(handle.id)
    assert record is not None
    assert record.personal_data_removed_at is not None
    intake = Intake(client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    transport = httpx.ASGITransport(app=create_app(settings, intake=intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as api:
        answer = await api.get(
            f"/api/v1/submissions/{handle.id}", headers={"X-Access-Code": intake.access_code(handle.id)}
        )
    assert answer.status_code == 200
    assert answer.json()["personal_data_removed_at"] == record.personal_data_removed_at.isoformat().replace(
        "+00:00", "Z"
    )

    # The same submission arriving again (a partner's late resend): its id is free in Temporal
    # now, but the record says it was done, so no legacy system is called a second time. Other
    # data under the same id is refused, as it was while the bundle existed.
    example = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())
    store = open_record_store(settings)
    guarded = Intake(client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings, records=store)
    fingerprint = guarded.fingerprint("newborn-on", example["submission"])
    await store.upsert(record.model_copy(update={"request_fingerprint": fingerprint}))
    again = await guarded.submit(
        "newborn-on", example["submission"], channel="kafka", submission_id=handle.id
    )
    assert again.tracking_id == handle.id
    other = json.loads(json.dumps(example["submission"]))
    other["child"]["given_names"] = "Élodie"
    with pytest.raises(IdempotencyConflict):
        await guarded.submit("newborn-on", other, channel="kafka", submission_id=handle.id)
    assert await _gone(client, handle.id), "a late duplicate started the bundle again"


async def test_tellonce_retention_sweep_lists_then_removes(
    temporal: WorkflowEnvironment, tmp_path: Path
) -> None:
    client, prefix = temporal.client, new_prefix()
    settings = _settings(tmp_path, prefix, client)
    env = {
        "TELLONCE_ENVIRONMENT": "test",
        "TELLONCE_DATA_DIR": str(tmp_path),
        "TELLONCE_TEMPORAL_ADDRESS": settings.temporal_target,
        "TELLONCE_TEMPORAL_NAMESPACE": client.namespace,
        "TELLONCE_TASK_QUEUE_PREFIX": prefix,
        "TELLONCE_RETENTION_PERIOD": "PT1S",
    }
    async with running_workers(client, scripted_adapters(), prefix):
        handle = await start_bundle(client, plan(), prefix)
        await handle.result()
    sweeper = RetentionSweeper(
        client, open_record_store(settings), task_queue_prefix=prefix, retention_period=RETENTION
    )
    await _eventually(
        lambda: sweeper.sweep(SweepRequest(dry_run=True)), lambda r: len(r.would_remove) == 1, "not listed"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        # Mounted as infra/cli.py mounts it (`tellonce retention sweep`), in a process of its own:
        # the command configures logging for its whole process.
        return subprocess.run(
            [sys.executable, "-c", MOUNTED_CLI, "retention", "sweep", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = await asyncio.to_thread(cli, "--dry-run")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert handle.id in listed.stdout
    assert "would remove 1 bundles" in listed.stdout
    assert not await _gone(client, handle.id)

    swept = await asyncio.to_thread(cli, "--json")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert json.loads(swept.stdout)["removed"] == 1
    assert "retention.removed" in swept.stderr
    assert await open_record_store(settings).get(handle.id) is not None
    await _eventually(lambda: _gone(client, handle.id), bool, "the bundle was not deleted")


async def test_the_dev_namespace_keeps_closed_executions_longer_than_the_sweep_needs(
    temporal: WorkflowEnvironment,
) -> None:
    client = temporal.client
    namespace = f"retention-{uuid.uuid4().hex[:8]}"
    day = Duration()
    day.FromTimedelta(timedelta(days=1))
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=day)
    )
    needed = timedelta(days=31, hours=1)

    assert await ensure_namespace_retention(client, namespace, needed) == needed
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    assert described.config.workflow_execution_retention_ttl.ToTimedelta() == needed
    # Longer already: left alone.
    assert await ensure_namespace_retention(client, namespace, timedelta(days=2)) == needed
