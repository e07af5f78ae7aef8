"""The operations engine on real servers: an outage of one sandbox system across 50 bundles is
found with `OpsEngine.stuck`, and a bulk retry after recovery completes all of them with one
effect per idempotency key in the system's ledger."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.testing import WorkflowEnvironment

from adapters.registry import KNOWN_ADAPTERS, build_adapters
from bundles.catalogue import Catalogue
from bundles.models import RetrySpec
from bundles.plan import BundlePlan, resolve_plan
from bundles.submissions.validation import validate_submission
from infra.ops.engine import OpsEngine
from infra.ops.models import OpsActionKind, StuckBundle, StuckFilter, StuckReason
from infra.sandbox.client import SandboxAdmin
from infra.worker import build_workers
from tests.conftest import SandboxProcess
from workflows.bundle import BundleWorkflow
from workflows.models import BundleInput, BundleState, BundleStatus
from workflows.names import SA_BUNDLE_ID, SA_JURISDICTION, SA_STATE, bundle_task_queue

pytestmark = pytest.mark.integration

SYSTEM = "on-certificates"
BUNDLES = 50
EXAMPLE = Path(__file__).parents[2] / "examples" / "newborn-on" / "complete.json"


def certificate_plan() -> BundlePlan:
    """The newborn bundle's certificate order alone, with retries short enough for a test: two
    quick attempts, then an operator."""
    definition = Catalogue.load(known_adapters=KNOWN_ADAPTERS).get("newborn-on")
    validated = validate_submission(definition, json.loads(EXAMPLE.read_text())["submission"])
    plan = resolve_plan(definition, validated.data, validated.consents)
    step = next(s for s in plan.steps if s.system == SYSTEM)
    quick = RetrySpec(initial_interval=timedelta(milliseconds=300), maximum_attempts=2)
    return plan.model_copy(update={"steps": (step.model_copy(update={"retry": quick}),)})


async def test_outage_of_one_system_found_then_bulk_retried_once_each(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess
) -> None:
    client = dev_env.client
    prefix = f"ops-{uuid.uuid4().hex[:8]}"
    settings = sandbox.settings(
        task_queue_prefix=prefix, temporal_namespace=client.namespace, legacy_systems={}
    )
    adapters = {SYSTEM: build_adapters(settings)[SYSTEM]}
    engine = OpsEngine(client, settings)
    plan = certificate_plan()
    async with AsyncExitStack() as stack:
        for worker in build_workers(
            client,
            adapters,
            task_queue_prefix=prefix,
            correlation_secret=prefix.encode(),
            upsert_search_attributes=True,
            control_refresh=timedelta(milliseconds=500),
        ):
            await stack.enter_async_context(worker)
        stack.push_async_callback(adapters[SYSTEM].aclose)
        admin = await stack.enter_async_context(SandboxAdmin(sandbox.url))
        # Down for this test's bundles only: other tests share the sandbox.
        await admin.set_faults(SYSTEM, down=True, key_prefix=f"{prefix}-")
        stack.push_async_callback(admin.clear_faults, SYSTEM)

        ids = [f"{prefix}-{i:03d}" for i in range(BUNDLES)]
        handles = await asyncio.gather(*(start(client, plan, prefix, i) for i in ids))

        found = await poll_stuck(
            engine, StuckFilter(system=SYSTEM, reason=StuckReason.NEEDS_ATTENTION, limit=500)
        )
        assert sorted(b.tracking_id for b in found) == ids
        assert all(StuckReason.RETRIES_EXCEEDED in b.reasons and b.systems == [SYSTEM] for b in found)
        assert await engine.stuck(StuckFilter(system="esdc-sin")) == []
        assert len(await engine.stuck(StuckFilter(system=SYSTEM, older_than=timedelta(hours=1)))) == 0

        shown = await engine.show(ids[0])
        step = shown.steps[0]
        assert step.status.attempts == 2 and step.payload is None
        assert [a.outcome for a in step.attempts] == ["failed", "failed"]

        await admin.clear_faults(SYSTEM)
        dry = await engine.bulk(
            StuckFilter(system=SYSTEM, limit=500),
            OpsActionKind.RETRY,
            "ops-lead",
            "outage over",
            dry_run=True,
        )
        assert len(dry.targets) == BUNDLES and not dry.outcomes
        assert await admin.ledger(SYSTEM, key_prefix=f"{prefix}-") == []  # nothing was sent

        report = await engine.bulk(
            StuckFilter(system=SYSTEM, limit=500),
            OpsActionKind.RETRY,
            "ops-lead",
            "outage over",
            dry_run=False,
            rate_per_s=100,
        )
        assert (report.accepted, report.refused) == (BUNDLES, 0)
        finals = await asyncio.gather(*(h.result() for h in handles))

    assert {f.state for f in finals} == {BundleState.COMPLETED}
    assert all(f.actions[0].actor == "ops-lead" and f.actions[0].before == "needs_attention" for f in finals)
    ledger = await SandboxAdmin(sandbox.url).ledger(SYSTEM, key_prefix=f"{prefix}-")
    keys = Counter(entry["idempotency_key"] for entry in ledger)
    assert len(keys) == BUNDLES
    assert max(keys.values()) == 1, "an idempotency key was accepted twice"


async def start(
    client: Client, plan: BundlePlan, prefix: str, submission_id: str
) -> WorkflowHandle[BundleWorkflow, BundleStatus]:
    return await client.start_workflow(
        BundleWorkflow.run,
        BundleInput(
            submission_id=submission_id,
            plan=plan,
            received_at=datetime.now(UTC),
            task_queue_prefix=prefix,
            stuck_after_attempts=2,
        ),
        id=submission_id,
        task_queue=bundle_task_queue(prefix),
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_BUNDLE_ID, plan.bundle_id),
                SearchAttributePair(SA_JURISDICTION, plan.jurisdiction),
                SearchAttributePair(SA_STATE, "received"),
            ]
        ),
    )


async def poll_stuck(engine: OpsEngine, filters: StuckFilter, budget: float = 30) -> list[StuckBundle]:
    """Visibility lags the workflows by up to seconds: poll until every bundle shows."""
    deadline = asyncio.get_running_loop().time() + budget
    while True:
        found = await engine.stuck(filters)
        if len(found) >= BUNDLES or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.5)
