"""Scripted adapters and a small bundle definition for workflow tests."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.worker import Replayer

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
from infra.temporal import DATA_CONVERTER
from infra.worker import build_workers
from workflows.bundle import BundleWorkflow
from workflows.models import BundleInput, BundleStatus
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
        return SubmitResult(reference=f"{self.name.upper()}-{len(self.calls):04d}")

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        self.calls.append(Call("compensate", ctx.idempotency_key, request.fields))
        self._next("compensate")
        return CompensationResult(reference=request.reference)

    def submits(self) -> list[Call]:
        return [c for c in self.calls if c.operation == "submit"]


SYSTEMS = ("certs", "registrar", "sin", "cra", "resp")


def scripted_adapters() -> dict[str, ScriptedAdapter]:
    return {name: ScriptedAdapter(name) for name in SYSTEMS}


@asynccontextmanager
async def running_workers(client: Client, adapters: dict[str, Any], prefix: str) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for worker in build_workers(client, adapters, task_queue_prefix=prefix):
            await stack.enter_async_context(worker)
        yield


async def start_bundle(
    client: Client,
    bundle_plan: BundlePlan,
    prefix: str,
    *,
    search_attributes: bool = False,
    submission_id: str | None = None,
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
    await Replayer(workflows=[BundleWorkflow], data_converter=DATA_CONVERTER).replay_workflow(history)


def new_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


REFUSED = LocalizedText(en="refused", fr="refusé")
