"""Inputs, outputs and messages of `BundleWorkflow`: the contract its clients rely on."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from bundles.models import Level, LocalizedText
from bundles.plan import BundlePlan


class BundleState(StrEnum):
    """Overall state of a bundle (DESIGN.md contract)."""

    RECEIVED = "received"
    IN_PROGRESS = "in_progress"
    NEEDS_ATTENTION = "needs_attention"
    COMPLETED = "completed"
    COMPLETED_WITH_EXCEPTIONS = "completed_with_exceptions"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"


FINAL_BUNDLE_STATES = frozenset(
    {
        BundleState.COMPLETED,
        BundleState.COMPLETED_WITH_EXCEPTIONS,
        BundleState.FAILED,
        BundleState.WITHDRAWN,
    }
)


class StepState(StrEnum):
    """State of one step (DESIGN.md contract)."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING_REPLY = "waiting_reply"
    NEEDS_ATTENTION = "needs_attention"
    DONE = "done"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


FINAL_STEP_STATES = frozenset(
    {StepState.DONE, StepState.SKIPPED, StepState.REJECTED, StepState.FAILED, StepState.COMPENSATED}
)


DEFAULT_STUCK_AFTER_ATTEMPTS = 5
"""A step still retrying after this many attempts counts as stuck, before it gives up."""


class Model(BaseModel):
    """Base for workflow messages: unknown keys ignored so old and new workers interoperate."""

    model_config = ConfigDict(extra="ignore")


CURRENT_ENGINE_REVISION: Final = 2
"""The engine revision new bundles start on (`BundleInput.engine_revision`).

A revision field in the input, rather than a `workflow.patched` marker, versions the bookkeeping:
a patch writes a marker and a search-attribute upsert into every new bundle's history."""


class BundleInput(Model):
    """What starts a bundle. The workflow id is the submission id."""

    submission_id: str
    channel: Literal["api", "kafka", "cli"] = "api"
    external_id: str | None = Field(
        default=None, description="The sending system's own submission id (Kafka channel), for events."
    )
    plan: BundlePlan
    received_at: datetime
    task_queue_prefix: str = Field(
        default="tellonce", description="Deployment prefix of the legacy systems' task queues."
    )
    upsert_search_attributes: bool = Field(
        default=True,
        description=(
            "Keep search attributes current. Only the time-skipping test server, which cannot "
            "register search attributes, runs bundles with this off."
        ),
    )
    stuck_after_attempts: int = Field(
        default=DEFAULT_STUCK_AFTER_ATTEMPTS,
        ge=1,
        description="A step retrying past this many attempts counts as stuck (retries_exceeded).",
    )
    stuck_after_attempts_by_system: dict[str, int] = Field(
        default_factory=dict, description="Per legacy system overrides of `stuck_after_attempts`."
    )
    publish_events: bool = Field(
        default=False,
        description=(
            "Publish every bundle and step state change to the bundle-events topic. Off by "
            "default so bundles started before events existed replay as they ran; intake sets it."
        ),
    )
    engine_revision: int = Field(
        default=1,
        ge=1,
        le=CURRENT_ENGINE_REVISION,
        description=(
            "How the workflow does its own bookkeeping, fixed when the bundle starts so it "
            "replays as it ran: 1 publishes status events and offers birth statements as "
            "activities on queues; 2 runs both as local activities within the workflow task "
            "(fewer history events and workflow tasks). Intake starts bundles on the newest."
        ),
    )


ErrorKind = Literal[
    "transient", "closed", "held", "rejected", "needs_attention", "timeout", "no_reply", "compensation"
]


class StuckReason(StrEnum):
    """Why a bundle counts as stuck (values of the `TellonceStuckReasons` search attribute)."""

    NEEDS_ATTENTION = "needs_attention"
    RETRIES_EXCEEDED = "retries_exceeded"
    PAST_DEADLINE = "past_deadline"
    REPLY_OVERDUE = "reply_overdue"
    SYSTEM_PAUSED = "system_paused"
    BREAKER_OPEN = "breaker_open"


class StepError(Model):
    """The last error a step met; `code` and `message` carry no personal data."""

    kind: ErrorKind
    code: str
    message: LocalizedText
    at: datetime
    retry_after: timedelta | None = Field(
        default=None, description="The legacy system's own hint of when to try again."
    )


class StepStatus(Model):
    """Status of one step as residents and operators see it."""

    id: str
    program: LocalizedText
    organization: LocalizedText
    level: Level
    system: str
    state: StepState
    attempts: int = 0
    reference: str | None = None
    message: LocalizedText | None = None
    last_error: StepError | None = None
    waiting_for: str | None = Field(
        default=None, description="Why the step waits, in plain words, when it waits."
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    exception: bool = Field(
        default=False, description="The step ended in a way the bundle counts as an exception."
    )


class OperatorAction(Model):
    """An operator's decision, recorded in the bundle's timeline."""

    step_id: str | None
    action: str
    actor: str
    reason: str
    at: datetime
    before: str | None = Field(default=None, description="The step's (or bundle's) state when decided.")
    after: str | None = Field(default=None, description="The state the decision led to, once applied.")


class BundleStatus(Model):
    """Result of the `status` query and of the workflow itself."""

    submission_id: str
    bundle_id: str
    definition_version: int
    jurisdiction: str
    state: BundleState
    received_at: datetime
    updated_at: datetime
    pivot_done: bool = False
    steps: list[StepStatus]
    actions: list[OperatorAction] = Field(default_factory=list)


class AttemptRecord(Model):
    """One call to a legacy system (or one the system's state held back), for the ops timeline."""

    at: datetime
    outcome: Literal["accepted", "acknowledged", "failed", "closed", "held", "replied"]
    kind: ErrorKind | None = None
    code: str | None = None
    attempt: int = Field(
        description="The step's attempt count after this call (held and closed calls add none)."
    )


class StepTimelineView(Model):
    """A step as the `timeline` query shows it to operations."""

    status: StepStatus
    attempts: list[AttemptRecord] = Field(default_factory=list)
    stuck_reasons: list[StuckReason] = Field(default_factory=list)
    held_by: str | None = None
    payload: dict[str, Any] | None = None


class TimelineRequest(Model):
    """Argument of the `timeline` query."""

    include_personal: bool = False


class BundleTimelineView(Model):
    """Result of the `timeline` query: the status plus what operations need to act."""

    status: BundleStatus
    steps: list[StepTimelineView]
    stuck_reasons: list[StuckReason] = Field(default_factory=list)
    stuck_systems: list[str] = Field(default_factory=list)
    stuck_since: datetime | None = None


class DecisionAction(StrEnum):
    """What an operator can decide for a step that needs attention."""

    RETRY = "retry"
    AMEND = "amend"
    SKIP = "skip"
    FAIL = "fail"


class StepDecision(Model):
    """Operator decision for one step, delivered as the `decide` update."""

    step_id: str
    action: DecisionAction
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=1000)
    amended_fields: dict[str, Any] | None = Field(
        default=None, description="With `amend`: corrected values, keyed like the step's payload."
    )


class DecisionResult(Model):
    """What the `decide` update did."""

    step_id: str
    accepted: bool
    state: StepState


class WithdrawRequest(Model):
    """A resident's (or an operator's on their behalf) withdrawal of the whole bundle."""

    requested_by: Literal["resident", "operator"] = "resident"
    actor: str = "resident"
    reason: str = Field(default="Withdrawn by the resident", max_length=1000)


class WithdrawResult(Model):
    """What the `withdraw` update did."""

    accepted: bool
    state: BundleState


# ---------------------------------------------------------------------- signals from streams

SIGNAL_LEGACY_REPLY = "legacy_reply"
SIGNAL_BIRTH_NOTICE_RESULT = "birth_notice_result"


class LegacyReply(Model):
    """A legacy system's asynchronous answer to a step's request, delivered as a signal.

    `correlation_id` is the idempotency key the request carried (`workflows.names.idempotency_key`).
    """

    correlation_id: str
    reply_id: str | None = Field(
        default=None,
        description=(
            "Where the reply came from, unique per reply (e.g. `<topic>:<partition>:<offset>`): "
            "a redelivered copy of a reply already applied is ignored."
        ),
    )
    system: str
    outcome: Literal["accepted", "rejected", "needs_attention"]
    reference: str | None = Field(default=None, description="The system's reference; no personal data.")
    code: str | None = Field(default=None, description="The system's reason code when not accepted.")
    message: LocalizedText | None = None
    received_at: datetime


class NoticeMatchResult(Model):
    """What the birth-notice matcher found for a bundle's statement, delivered as a signal."""

    step_id: str
    outcome: Literal["matched", "conflict"]
    notice_id: str = Field(description="The hospital's or midwife's notice number (not personal data).")
    differences: list[str] = Field(
        default_factory=list,
        description="With `conflict`: names of the facts that differ (`child.sex`), never their values.",
    )
    at: datetime


# ---------------------------------------------------------------------- status events

PUBLISH_BUNDLE_EVENTS = "publish_bundle_events"
"""Activity that publishes a batch of events, in order, to the bundle-events topic."""

EVENT_SOURCE_PREFIX = "/tellonce/bundles/"
BUNDLE_STATE_CHANGED = "ca.tellonce.bundle.state_changed"
STEP_STATE_CHANGED = "ca.tellonce.step.state_changed"


class BundleEventData(Model):
    """The JSON data of a status event: ids and states only, never personal data."""

    tracking_id: str
    bundle_id: str
    definition_version: int
    channel: str
    external_id: str | None = None
    sequence: int = Field(ge=1, description="Position of this change in the bundle's own order.")
    bundle_state: BundleState
    step_id: str | None = None
    step_state: StepState | None = None
    attempts: int | None = None
    reference: str | None = None
    error_code: str | None = None


class BundleEvent(Model):
    """One CloudEvents 1.0 event: attributes here, `data` as JSON.

    `id` is `<tracking id>:<sequence>`, the same on every retry, so consumers de-duplicate by it.
    """

    id: str
    type: Literal["ca.tellonce.bundle.state_changed", "ca.tellonce.step.state_changed"]
    source: str
    subject: str = Field(description="The tracking id; also the Kafka message key.")
    time: datetime
    data: BundleEventData


class EventBatch(Model):
    """Events of one bundle, in order, published together."""

    tracking_id: str
    events: list[BundleEvent] = Field(min_length=1)
