"""Bulk runs and their audit trail when a target fails or the run is cut short.

The engine's loop and `OpsAccess.perform_bulk` run for real; only the engine's two calls to
Temporal (which targets, and acting on one) are replaced, so that one bundle can fail on demand.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode

from infra.ops.audit import AuditTrail
from infra.ops.auth import Principal, Role
from infra.ops.engine import OpsEngine
from infra.ops.http import BulkRequest, OpsAccess
from infra.ops.models import ActionOutcome, ActionTarget, OpsAction, OpsActionKind, StuckFilter
from infra.settings import Settings

IDS = [f"0000000{n}-0000-4000-8000-000000000000" for n in range(1, 5)]
BOSS = Principal(subject="ops-lead", role=Role.SUPERVISOR)


class FailingEngine(OpsEngine):
    """An engine whose targets are IDS' `sin` steps; `failures` says how each id fails."""

    def __init__(self, settings: Settings, trail: AuditTrail, failures: dict[str, BaseException]) -> None:
        super().__init__(client=None, settings=settings)  # type: ignore[arg-type]  # Temporal is not asked
        self.failures = failures
        self.trail = trail
        self.audited_before: dict[str, list[str]] = {}

    async def select(
        self, filters: Any, action: OpsActionKind, step_system: str | None = None
    ) -> list[ActionTarget]:
        return [
            ActionTarget(
                tracking_id=i, step_id="sin", system="sin", state="retrying", action=action, would="retry"
            )
            for i in IDS
        ]

    async def act(self, tracking_id: str, request: OpsAction) -> ActionOutcome:
        # What the trail holds when this target starts: the targets before it must be there.
        self.audited_before[tracking_id] = [e.bundle or "" for e in self.trail.entries() if e.bundle]
        if tracking_id in self.failures:
            raise self.failures[tracking_id]
        return ActionOutcome(
            tracking_id=tracking_id,
            step_id=request.step_id,
            action=request.action,
            accepted=True,
            before="retrying",
            after="running",
        )


def access_with(tmp_path: Path, failures: dict[str, BaseException]) -> tuple[OpsAccess, FailingEngine]:
    settings = Settings(environment="test", data_dir=tmp_path / "data")
    access = OpsAccess(FastAPI(), settings)
    engine = FailingEngine(settings, access.audit, failures)
    access._engine = engine
    return access, engine


RUN = BulkRequest(
    action=OpsActionKind.RETRY,
    filter=StuckFilter(system="sin"),
    reason="SIN system back",
    dry_run=False,
    rate_per_s=1000,
)


async def test_a_target_temporal_refuses_is_refused_and_the_run_goes_on_every_outcome_audited(
    tmp_path: Path,
) -> None:
    unavailable = RPCError("connection reset", RPCStatusCode.UNAVAILABLE, b"")
    access, engine = access_with(tmp_path, {IDS[1]: unavailable})
    report = await access.perform_bulk(None, BOSS, RUN)  # type: ignore[arg-type]  # the engine is set

    assert (report.accepted, report.refused) == (3, 1)
    refused = next(o for o in report.outcomes if not o.accepted)
    assert (refused.tracking_id, refused.message) == (IDS[1], "temporal: UNAVAILABLE")

    entries = list(access.audit.entries())
    assert [(e.action, e.bundle, e.outcome.value) for e in entries] == [
        ("retry", IDS[0], "accepted"),
        ("retry", IDS[1], "failed"),
        ("retry", IDS[2], "accepted"),
        ("retry", IDS[3], "accepted"),
        ("bulk.retry", None, "accepted"),
    ]
    assert entries[1].detail == "part of bulk.retry: temporal: UNAVAILABLE"
    assert entries[-1].after == {"targets": 4, "accepted": 3, "refused": 1}
    # Each bundle's entry is written as it is acted on, not after the run.
    assert engine.audited_before[IDS[2]] == IDS[:2]


async def test_a_run_cut_short_keeps_what_it_did_and_its_run_entry(tmp_path: Path) -> None:
    # A cancelled request (the client went away, the server is stopping) ends the run mid-way.
    access, _ = access_with(tmp_path, {IDS[2]: asyncio.CancelledError()})
    with pytest.raises(asyncio.CancelledError):
        await access.perform_bulk(None, BOSS, RUN)  # type: ignore[arg-type]  # the engine is set

    entries = list(access.audit.entries())
    assert [(e.action, e.bundle, e.outcome.value) for e in entries] == [
        ("retry", IDS[0], "accepted"),
        ("retry", IDS[1], "accepted"),
        ("bulk.retry", None, "failed"),
    ]
    assert entries[-1].detail == "interrupted: CancelledError"
    assert entries[-1].after == {"targets": None, "accepted": 2, "refused": 0}
