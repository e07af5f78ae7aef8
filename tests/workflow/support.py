"""Scripted adapters and a small bundle definition for workflow tests."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.events import EventsUnavailableError
from adapters.sdk import (
    Adapter,
    AdapterError,
    CallContext,
    CompensationRequest,
    CompensationResult,
    StepRequest,
    SubmitResult,
)
from bundles.models import BundleDefinition, LocalizedText
from bundles.plan import BundlePlan, resolve_plan
from infra.worker import build_workers
from tests.encryption import TEST_DATA_CONVERTER
from workflows.bundle import BundleWorkflow
from workflows.models import (
    CURRENT_ENGINE_REVISION,
    BundleEvent,
    BundleInput,
    BundleStatus,
    DecisionAction,
    DecisionResult,
    EventBatch,
    StepDecision,
    StepState,
)
from workflows.names import SA_BUNDLE_ID, SA_JURISDICTION, SA_STATE, bundle_task_queue


def text(en: str) -> dict[str, str]:
    return {"en": en, "fr": f"{en} (fr)"}


RETRY = {
    "initial_interval": "PT1S",
    "backoff_coefficient": 2.0,
    "maximum_interval": "PT30S",
    "maximum_attempts": 5,
}

DEFINITION = BundleDefinition.model_validate(
    {
        "id": "newborn-test",
        "version": 3,
        "jurisdiction": "CA-ON",
        "life_event": "newborn",
        "title": text("Newborn"),
        "description": text("Test bundle shaped like Ontario's 5-in-1"),
        "submission_schema": "newborn/v1",
        "consent_purposes": {
            p: {"label": text(p), "notice": text(p)} for p in ("certificate_order", "sin", "ccb", "resp")
        },
        "steps": [
            {
                "id": "certificate",
                "program": text("Certificate"),
                "organization": text("ServiceOntario"),
                "level": "provincial",
                "adapter": "certs",
                "fields": ["certificate", "child.name"],
                "consent": "certificate_order",
                "optional": True,
                "retry": RETRY,
                "compensation": {"description": text("Order cancelled and fee refunded")},
            },
            {
                "id": "registration",
                "program": text("Birth registration"),
                "organization": text("Registrar General"),
                "level": "provincial",
                "adapter": "registrar",
                "fields": ["child", "parent.name", "parent.marital_status"],
                "pivot": True,
                "retry": RETRY,
            },
            {
                "id": "sin",
                "program": text("SIN"),
                "organization": text("ESDC"),
                "level": "federal",
                "adapter": "sin",
                "fields": ["child"],
                "consent": "sin",
                "needs": ["registration"],
                "references": ["registration"],
                "eligibility": {
                    "field": "parent.status",
                    "one_of": ["citizen", "permanent_resident"],
                    "guidance": text("Apply at Service Canada"),
                },
                "retry": RETRY,
                "deadline": "PT10M",
            },
            {
                "id": "ccb",
                "program": text("Canada Child Benefit"),
                "organization": text("CRA"),
                "level": "federal",
                "adapter": "cra",
                "fields": ["child.name", "parent.name", "parent.sin"],
                "consent": "ccb",
                "needs": ["registration"],
                "references": ["registration"],
                "without_consent": text("Apply through My Account"),
                "retry": RETRY,
            },
            {
                "id": "resp",
                "program": text("Education savings"),
                "organization": text("RESP promoter"),
                "level": "federal",
                "adapter": "resp",
                "fields": ["parent.name"],
                "consent": "resp",
                "needs": ["registration"],
                "optional": True,
                "retry": RETRY,
            },
        ],
    }
)

SUBMISSION: dict[str, Any] = {
    "child": {"name": "Zoë-Chloé O'Neil", "date_of_birth": "2026-11-10"},
    "parent": {
        "name": "Marie Bélanger",
        "sin": "046454286",
        "status": "citizen",
        "marital_status": "married",
    },
    "certificate": {"form": "short", "copies": 1},
}
ALL_CONSENTS = {"certificate_order": True, "sin": True, "ccb": True, "resp": True}


def plan(consents: dict[str, bool] | None = None, **overrides: Any) -> BundlePlan:
    submission = {**SUBMISSION, **overrides}
    return resolve_plan(DEFINITION, submission, ALL_CONSENTS if consents is None else consents)


@dataclass
class Call:
    operation: str
    key: str
    fields: dict[str, Any]


class ScriptedAdapter(Adapter):
    """An adapter whose answers are scripted per operation; records every call it receives."""

    system = "scripted"

    def __init__(self, name: str) -> None:
        self.name = name
        self.script: dict[str, list[AdapterError | None]] = defaultdict(list)
        self.calls: list[Call] = []
        self.delay = 0.0  # real seconds each submit takes after it is recorded
        self.pending_reply = False  # acknowledge only; the answer comes later as a reply

    def _next(self, operation: str) -> None:
        planned = self.script[operation]
        outcome = planned.pop(0) if planned else None
        if outcome is not None:
            raise outcome

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        self.calls.append(Call("submit", ctx.idempotency_key, request.fields))
        if self.delay:
            await asyncio.sleep(self.delay)
        self._next("submit")
        return SubmitResult(
            reference=f"{self.name.upper()}-{len(self.calls):04d}", pending_reply=self.pending_reply
        )

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        self.calls.append(Call("compensate", ctx.idempotency_key, request.fields))
        self._next("compensate")
        return CompensationResult(reference=request.reference)

    def submits(self) -> list[Call]:
        return [c for c in self.calls if c.operation == "submit"]


SYSTEMS = ("certs", "registrar", "sin", "cra", "resp")


def scripted_adapters() -> dict[str, ScriptedAdapter]:
    return {name: ScriptedAdapter(name) for name in SYSTEMS}


class EventLog:
    """Stands in for the Kafka publisher: records every batch the bundles publish, in order.

    It is an `EventPublisher`, so the production event activity runs around it, inline (local
    activities) and on the events queue alike.
    """

    def __init__(self) -> None:
        self.batches: list[EventBatch] = []
        self.failures_to_come = 0  # the next N publish attempts fail, as with a broker outage
        self.slow_publishes_to_come = 0  # the next N publish attempts take `delay` seconds
        self.delay = 0.0

    async def publish(self, batch: EventBatch) -> None:
        if self.slow_publishes_to_come:
            self.slow_publishes_to_come -= 1
            await asyncio.sleep(self.delay)
        if self.failures_to_come:
            self.failures_to_come -= 1
            raise EventsUnavailableError("broker unavailable")
        self.batches.append(batch)

    async def close(self) -> None:
        """Nothing to release."""

    def events(self, tracking_id: str) -> list[BundleEvent]:
        """Every event of one bundle, in publication order."""
        return [e for b in self.batches if b.tracking_id == tracking_id for e in b.events]


TEST_CORRELATION_SECRET = b"tests-only-correlation-secret"


@asynccontextmanager
async def running_workers(
    client: Client,
    adapters: dict[str, Any],
    prefix: str,
    *,
    events: EventLog | None = None,
    search_attributes: bool = False,
    correlation_secret: bytes = TEST_CORRELATION_SECRET,
    with_publisher: bool = True,
) -> AsyncIterator[EventLog]:
    """The production workers for a task-queue prefix, plus a recording event publisher.

    Tests that match birth notices pass a secret of their own: matchers are found by a digest of
    the facts, so two tests with the same example facts would otherwise share one. Without a
    publisher (`with_publisher=False`) the workers are those of a worker with events turned off;
    the returned log then records nothing.
    """
    events = events or EventLog()
    async with AsyncExitStack() as stack:
        for worker in build_workers(
            client,
            adapters,
            task_queue_prefix=prefix,
            correlation_secret=correlation_secret,
            upsert_search_attributes=search_attributes,
            event_publisher=events if with_publisher else None,
        ):
            await stack.enter_async_context(worker)
        yield events


async def start_bundle(
    client: Client,
    bundle_plan: BundlePlan,
    prefix: str,
    *,
    search_attributes: bool = False,
    submission_id: str | None = None,
    publish_events: bool = True,
    engine_revision: int = CURRENT_ENGINE_REVISION,
) -> WorkflowHandle[BundleWorkflow, BundleStatus]:
    submission_id = submission_id or str(uuid.uuid4())
    return await client.start_workflow(
        BundleWorkflow.run,
        BundleInput(
            submission_id=submission_id,
            plan=bundle_plan,
            received_at=datetime.now(UTC),
            task_queue_prefix=prefix,
            upsert_search_attributes=search_attributes,
            publish_events=publish_events,
            engine_revision=engine_revision,
        ),
        id=submission_id,
        task_queue=bundle_task_queue(prefix),
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_BUNDLE_ID, bundle_plan.bundle_id),
                SearchAttributePair(SA_JURISDICTION, bundle_plan.jurisdiction),
                SearchAttributePair(SA_STATE, "received"),
            ]
        )
        if search_attributes
        else None,
    )


async def assert_replays(handle: WorkflowHandle[Any, Any]) -> None:
    """The bundle's history replays on the current code without non-determinism."""
    history = await handle.fetch_history()
    await Replayer(workflows=[BundleWorkflow], data_converter=TEST_DATA_CONVERTER).replay_workflow(history)


def new_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


REFUSED = LocalizedText(en="refused", fr="refusé")


Handle = WorkflowHandle[BundleWorkflow, BundleStatus]


async def wait_for(
    handle: Handle,
    predicate: Callable[[BundleStatus], bool],
    *,
    skip: tuple[WorkflowEnvironment, timedelta] | None = None,
    timeout: float = 15,
) -> BundleStatus:
    """Poll the status query until the predicate holds, optionally skipping workflow time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query(BundleWorkflow.status)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met; last status: {status.model_dump_json(indent=1)}")
        if skip is not None:
            env, step_size = skip
            await env.sleep(step_size)
        else:
            await asyncio.sleep(0.1)


def step(status: BundleStatus, step_id: str) -> Any:
    return next(s for s in status.steps if s.id == step_id)


def states(status: BundleStatus) -> dict[str, StepState]:
    return {s.id: s.state for s in status.steps}


async def decide(
    handle: WorkflowHandle[BundleWorkflow, BundleStatus],
    *,
    step_id: str,
    action: DecisionAction,
    reason: str,
    actor: str = "op-1",
    amended_fields: dict[str, Any] | None = None,
) -> DecisionResult:
    """An operator's decision on one step, sent as the bundle's `decide` update."""
    return await handle.execute_update(
        BundleWorkflow.decide,
        StepDecision(
            step_id=step_id, action=action, actor=actor, reason=reason, amended_fields=amended_fields
        ),
    )
