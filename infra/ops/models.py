"""What the operations engine takes and returns: the vocabulary of `tellonce ops`, its HTTP API and
console. Ids, states, codes and operators' words only; a step's personal data appears only in
`StepTimeline.payload`, and only when asked for with `include_personal`."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bundles.submissions.validation import FieldError
from workflows.models import (
    AttemptRecord,
    BundleState,
    OperatorAction,
    StepState,
    StepStatus,
    StuckReason,
)
from workflows.system_control import BreakerState, SystemControlState

__all__ = [
    "ActionOutcome",
    "ActionTarget",
    "AttemptRecord",
    "BreakerState",
    "BulkReport",
    "BundleTimeline",
    "FieldError",
    "OpsAction",
    "OpsActionKind",
    "StepTimeline",
    "StuckBundle",
    "StuckFilter",
    "StuckReason",
    "SystemHealth",
    "SystemState",
    "TargetRef",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpsActionKind(StrEnum):
    """What an operator can do to a bundle or one of its steps."""

    RETRY = "retry"
    AMEND = "amend"
    SKIP = "skip"
    FAIL = "fail"
    WITHDRAW = "withdraw"


class StuckFilter(_Model):
    """Which stuck bundles to list (every filter given must hold)."""

    bundle_id: str | None = Field(default=None, description="The bundle definition, e.g. `newborn-on`.")
    jurisdiction: str | None = Field(default=None, description="e.g. `CA-ON`.")
    system: str | None = Field(default=None, description="A legacy system one of its stuck steps waits on.")
    reason: StuckReason | None = None
    older_than: timedelta | None = Field(default=None, description="Stuck for at least this long.")
    limit: int = Field(default=100, ge=1, le=10_000)


class StuckBundle(_Model):
    """One stuck bundle as the stuck list shows it (read from search attributes)."""

    tracking_id: str
    bundle_id: str | None
    jurisdiction: str | None
    state: str | None
    reasons: list[StuckReason]
    systems: list[str]
    attention_steps: list[str]
    stuck_since: datetime | None


class StepTimeline(_Model):
    """One step of a bundle's timeline: its status, every attempt, and why it waits."""

    status: StepStatus
    attempts: list[AttemptRecord] = Field(default_factory=list)
    stuck_reasons: list[StuckReason] = Field(default_factory=list)
    held_by: str | None = Field(
        default=None, description="Why calls to the step's system are held, in plain words."
    )
    payload: dict[str, Any] | None = Field(
        default=None, description="The data the step sends (personal): only with include_personal."
    )


class BundleTimeline(_Model):
    """Everything an operator needs to understand one bundle (`tellonce ops show`)."""

    tracking_id: str
    bundle_id: str
    definition_version: int
    jurisdiction: str
    state: BundleState
    received_at: datetime
    updated_at: datetime
    stuck_reasons: list[StuckReason]
    stuck_systems: list[str]
    stuck_since: datetime | None
    steps: list[StepTimeline]
    decisions: list[OperatorAction]
    include_personal: bool = False


class OpsAction(_Model):
    """One operator action on one bundle (a step's, or the bundle's for withdraw)."""

    action: OpsActionKind
    step_id: str | None = None
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=1000)
    amended_fields: dict[str, Any] | None = Field(
        default=None, description="With amend: corrected values, keyed like the step's payload."
    )


class ActionOutcome(_Model):
    """What an action did: accepted or refused (with why), and the state before and after."""

    tracking_id: str
    step_id: str | None
    action: OpsActionKind
    accepted: bool
    before: str | None = Field(default=None, description="The step's (or bundle's) state before.")
    after: str | None = Field(default=None, description="Its state right after the action was accepted.")
    message: str | None = Field(default=None, description="Why it was refused, in plain words.")
    errors: list[FieldError] = Field(default_factory=list, description="Field errors of a refused amend.")


class ActionTarget(_Model):
    """One bundle (and step) a bulk action would touch, and what it would do there."""

    tracking_id: str
    step_id: str | None
    system: str | None
    state: str
    action: OpsActionKind
    would: str = Field(description="What the action would do, in plain words.")


class TargetRef(_Model):
    """One target of a bulk action as a preview listed it: a bundle's step, or the bundle (withdraw)."""

    tracking_id: str = Field(max_length=64)
    step_id: str | None = Field(default=None, max_length=64)


class BulkReport(_Model):
    """The result of a bulk action, or with `dry_run` what it would do."""

    action: OpsActionKind
    dry_run: bool
    targets: list[ActionTarget]
    outcomes: list[ActionOutcome] = Field(default_factory=list)
    accepted: int = 0
    refused: int = 0


SystemState = SystemControlState
"""A legacy system's control state: paused (by whom, why, since), breaker, held calls."""


class SystemHealth(_Model):
    """One legacy system's health as operations see it."""

    system_id: str
    in_flight: int = Field(description="Steps of open bundles running at, or waiting on, the system.")
    retrying: int
    needs_attention: int
    held: int
    paused: bool
    breaker: BreakerState
    error_rate: float | None = Field(
        default=None, description="Share of failed calls over the breaker's window; None with no calls."
    )
    calls_in_window: int = 0
    control: SystemControlState


def step_state_label(state: StepState | BundleState | str) -> str:
    """A state as the outcome's before/after text."""
    return state.value if isinstance(state, StepState | BundleState) else state
