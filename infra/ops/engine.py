"""The operations engine: find stuck bundles, explain them, act on them, pause and resume legacy
systems. The Python API under `tellonce ops`, its HTTP routes and the ops console; it speaks only
to Temporal (search attributes for lists, queries and updates for one bundle)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.models import BundleDefinition, LocalizedText
from bundles.plan import leaf_paths, merge_fields
from bundles.submissions.registry import SUBMISSION_SCHEMAS
from bundles.submissions.validation import FieldError, SubmissionInvalid, validate_submission
from infra.ops.models import (
    ActionOutcome,
    ActionTarget,
    BulkReport,
    BundleTimeline,
    OpsAction,
    OpsActionKind,
    StepTimeline,
    StuckBundle,
    StuckFilter,
    StuckReason,
    SystemHealth,
    SystemState,
    TargetRef,
)
from infra.redaction import redact_text
from infra.settings import Settings
from workflows.bundle import BundleWorkflow
from workflows.models import (
    BundleTimelineView,
    DecisionAction,
    StepDecision,
    StepState,
    TimelineRequest,
    WithdrawRequest,
)
from workflows.names import (
    SA_ATTENTION_STEPS,
    SA_BUNDLE_ID,
    SA_JURISDICTION,
    SA_STATE,
    SA_STUCK,
    SA_STUCK_REASONS,
    SA_STUCK_SINCE,
    SA_STUCK_SYSTEMS,
    bundle_task_queue,
    system_control_id,
)
from workflows.system_control import (
    PauseRequest,
    ResumeRequest,
    SystemControlInput,
    SystemControlWorkflow,
)

log = structlog.get_logger("tellonce.ops")

_ACTIONABLE: dict[OpsActionKind, frozenset[StepState]] = {
    OpsActionKind.RETRY: frozenset({StepState.NEEDS_ATTENTION, StepState.RETRYING}),
    OpsActionKind.AMEND: frozenset({StepState.NEEDS_ATTENTION}),
    OpsActionKind.SKIP: frozenset({StepState.NEEDS_ATTENTION, StepState.RETRYING}),
    OpsActionKind.FAIL: frozenset({StepState.NEEDS_ATTENTION, StepState.RETRYING}),
}
"""The step states each step action applies to (withdraw applies to the bundle)."""

_WOULD: dict[OpsActionKind, str] = {
    OpsActionKind.RETRY: "send the step's request again now (same idempotency key)",
    OpsActionKind.AMEND: "send corrected data as a new request",
    OpsActionKind.SKIP: "end the step as skipped; nothing more is sent",
    OpsActionKind.FAIL: "end the step as failed (before the pivot, the bundle rolls back)",
    OpsActionKind.WITHDRAW: "withdraw the bundle: nothing more is sent, reversible steps are undone",
}


def _quote(value: str) -> str:
    """A string literal of Temporal's list-filter language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class OpsEngine:
    """Operations on the bundles and legacy systems of one deployment (its task-queue prefix)."""

    def __init__(self, client: Client, settings: Settings, catalogue: Catalogue | None = None) -> None:
        self.client = client
        self.settings = settings
        self._catalogue = catalogue

    # ------------------------------------------------------------------ finding

    def stuck_query(self, filters: StuckFilter, *, now: datetime | None = None) -> str:
        """The visibility query `stuck` runs; also what `temporal workflow list --query` takes."""
        clauses = [
            f"{SA_STUCK.name} = true",
            "ExecutionStatus = 'Running'",
            f"TaskQueue = {_quote(bundle_task_queue(self.settings.task_queue_prefix))}",
        ]
        if filters.bundle_id:
            clauses.append(f"{SA_BUNDLE_ID.name} = {_quote(filters.bundle_id)}")
        if filters.jurisdiction:
            clauses.append(f"{SA_JURISDICTION.name} = {_quote(filters.jurisdiction)}")
        if filters.system:
            clauses.append(f"{SA_STUCK_SYSTEMS.name} = {_quote(filters.system)}")
        if filters.reason:
            clauses.append(f"{SA_STUCK_REASONS.name} = {_quote(filters.reason.value)}")
        if filters.older_than is not None:
            before = (now or datetime.now(UTC)) - filters.older_than
            clauses.append(f"{SA_STUCK_SINCE.name} <= {_quote(before.isoformat().replace('+00:00', 'Z'))}")
        return " AND ".join(clauses)

    async def stuck(self, filters: StuckFilter) -> list[StuckBundle]:
        """Stuck bundles matching the filters, read from search attributes (they lag by seconds)."""
        found: list[StuckBundle] = []
        async for execution in self.client.list_workflows(self.stuck_query(filters), limit=filters.limit):
            found.append(_stuck_bundle(execution))
            if len(found) >= filters.limit:
                break
        return found

    async def show(self, tracking_id: str, *, include_personal: bool = False) -> BundleTimeline:
        """One bundle's timeline: each step's attempts, last error, reference, why it waits, and
        every decision taken (who, what, why, when, before and after). The data a step sends
        (personal) only with `include_personal`.

        Raises:
            LookupError: no bundle with this tracking id.
        """
        view = await self._timeline(tracking_id, include_personal=include_personal)
        status = view.status
        return BundleTimeline(
            tracking_id=status.submission_id,
            bundle_id=status.bundle_id,
            definition_version=status.definition_version,
            jurisdiction=status.jurisdiction,
            state=status.state,
            received_at=status.received_at,
            updated_at=status.updated_at,
            stuck_reasons=view.stuck_reasons,
            stuck_systems=view.stuck_systems,
            stuck_since=view.stuck_since,
            steps=[
                StepTimeline(
                    status=s.status,
                    attempts=s.attempts,
                    stuck_reasons=s.stuck_reasons,
                    held_by=s.held_by,
                    payload=s.payload if include_personal else None,
                )
                for s in view.steps
            ],
            decisions=status.actions,
            include_personal=include_personal,
        )

    async def _timeline(self, tracking_id: str, *, include_personal: bool) -> BundleTimelineView:
        handle = self.client.get_workflow_handle_for(BundleWorkflow.run, tracking_id)
        try:
            return await handle.query(
                BundleWorkflow.timeline, TimelineRequest(include_personal=include_personal)
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise LookupError(tracking_id) from err
            raise

    # ------------------------------------------------------------------ acting

    async def act(self, tracking_id: str, request: OpsAction) -> ActionOutcome:
        """Apply one operator action; refused actions say why (and, for amend, which fields).
        The reason reaches the workflow redacted (`infra.redaction.redact_text`).

        Raises:
            LookupError: no bundle with this tracking id.
        """
        outcome = ActionOutcome(
            tracking_id=tracking_id, step_id=request.step_id, action=request.action, accepted=False
        )
        # The reason is free text kept in the bundle's timeline, which every viewer reads: an
        # identifier typed into it is redacted as the audit trail redacts it.
        request = request.model_copy(update={"reason": redact_text(request.reason)})
        handle = self.client.get_workflow_handle_for(BundleWorkflow.run, tracking_id)
        if request.action is OpsActionKind.WITHDRAW:
            return await self._withdraw(tracking_id, request, outcome)
        if request.step_id is None:
            outcome.message = f"{request.action.value} needs a step"
            return outcome
        needs_payload = request.action is OpsActionKind.AMEND
        view = await self._timeline(tracking_id, include_personal=needs_payload)
        step = next((s for s in view.steps if s.status.id == request.step_id), None)
        if step is None:
            outcome.message = f"no step {request.step_id!r} in this bundle"
            return outcome
        outcome.before = step.status.state.value
        if request.action is OpsActionKind.AMEND:
            errors = self._amend_errors(view, request.step_id, request.amended_fields or {})
            if errors:
                outcome.errors = errors
                outcome.message = "the corrected data is not valid"
                return outcome
        try:
            result = await handle.execute_update(
                BundleWorkflow.decide,
                StepDecision(
                    step_id=request.step_id,
                    action=DecisionAction(request.action.value),
                    actor=request.actor,
                    reason=request.reason,
                    amended_fields=request.amended_fields,
                ),
            )
        except WorkflowUpdateFailedError as err:
            outcome.message = _refusal(err)
            return outcome
        outcome.accepted, outcome.after = True, result.state.value
        return outcome

    async def _withdraw(self, tracking_id: str, request: OpsAction, outcome: ActionOutcome) -> ActionOutcome:
        handle = self.client.get_workflow_handle_for(BundleWorkflow.run, tracking_id)
        view = await self._timeline(tracking_id, include_personal=False)
        outcome.before = view.status.state.value
        try:
            result = await handle.execute_update(
                BundleWorkflow.withdraw,
                WithdrawRequest(requested_by="operator", actor=request.actor, reason=request.reason),
            )
        except WorkflowUpdateFailedError as err:
            outcome.message = _refusal(err)
            return outcome
        outcome.accepted, outcome.after = True, result.state.value
        return outcome

    def _amend_errors(
        self, view: BundleTimelineView, step_id: str, amended: dict[str, Any]
    ) -> list[FieldError]:
        """Check corrected fields as a submission's fields are checked (formats, cross-field rules).

        The step holds only its projection of the submission, so errors about fields it does not
        receive (missing from the projection) are not the amendment's.
        """
        if not amended:
            return [FieldError(path="", code="missing", message=_text("Give the corrected fields."))]
        step = next(s for s in view.steps if s.status.id == step_id)
        payload = step.payload or {}
        unknown = sorted(leaf_paths(amended) - leaf_paths(payload))
        if unknown:
            return [
                FieldError(
                    path=p, code="not_received", message=_text("This step does not receive this field.")
                )
                for p in unknown
            ]
        definition = self._definition(view.status.bundle_id)
        if definition is None or definition.submission_schema not in SUBMISSION_SCHEMAS:
            return []
        candidate = merge_fields(payload, amended)
        touched = leaf_paths(amended)
        try:
            validate_submission(definition, candidate)
        except SubmissionInvalid as invalid:
            return [e for e in invalid.errors if any(_covers(p, e.path) for p in touched)]
        except (ValidationError, LookupError):
            return []
        return []

    def _definition(self, bundle_id: str) -> BundleDefinition | None:
        if self._catalogue is None:
            self._catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
        try:
            return self._catalogue.get(bundle_id)
        except KeyError:
            return None

    async def select(
        self, filters: StuckFilter, action: OpsActionKind, step_system: str | None = None
    ) -> list[ActionTarget]:
        """What a bulk action would touch: each stuck bundle's steps (of `step_system`, or the
        filter's system) the action applies to, with their current state."""
        system = step_system or filters.system
        targets: list[ActionTarget] = []
        for bundle in await self.stuck(filters):
            try:
                view = await self._timeline(bundle.tracking_id, include_personal=False)
            except LookupError:
                continue
            if action is OpsActionKind.WITHDRAW:
                targets.append(
                    ActionTarget(
                        tracking_id=bundle.tracking_id,
                        step_id=None,
                        system=None,
                        state=view.status.state.value,
                        action=action,
                        would=_WOULD[action],
                    )
                )
                continue
            for step in view.steps:
                s = step.status
                if system is not None and s.system != system:
                    continue
                if s.state not in _ACTIONABLE[action] or step.held_by is not None:
                    continue
                targets.append(
                    ActionTarget(
                        tracking_id=bundle.tracking_id,
                        step_id=s.id,
                        system=s.system,
                        state=s.state.value,
                        action=action,
                        would=_WOULD[action],
                    )
                )
        return targets

    async def bulk(
        self,
        filters: StuckFilter,
        action: OpsActionKind,
        actor: str,
        reason: str,
        *,
        dry_run: bool,
        rate_per_s: float = 10,
        step_system: str | None = None,
        only: Sequence[TargetRef] | None = None,
        on_outcome: Callable[[ActionOutcome], Awaitable[None]] | None = None,
    ) -> BulkReport:
        """Apply one action to every target `select` finds, at most `rate_per_s` bundles a second.

        With `dry_run`, only the targets and what the action would do; nothing is sent. With
        `only` (the targets a preview listed), the action touches just those of them the filter
        still selects: a bundle that became stuck since the preview is left alone, and a previewed
        one the filter no longer selects is reported refused, untouched.

        A target that fails (its bundle gone, Temporal refusing the call) is reported refused with
        the reason and the run goes on: one bad bundle must not strand the rest of a long run.
        `on_outcome` is awaited with each outcome as soon as it is known, so the caller can record
        it even if the run is interrupted later.

        Raises:
            ValueError: the action is amend (it has no bulk form).
            RPCError: Temporal could not list the targets (nothing was acted on).
        """
        if action is OpsActionKind.AMEND:
            raise ValueError("amend is per bundle: corrected data differs from one bundle to the next")
        targets = await self.select(filters, action, step_system)
        gone: list[ActionOutcome] = []
        if only is not None:
            pinned = {(t.tracking_id, t.step_id) for t in only}
            selected = {(t.tracking_id, t.step_id) for t in targets}
            targets = [t for t in targets if (t.tracking_id, t.step_id) in pinned]
            gone = [
                ActionOutcome(
                    tracking_id=t.tracking_id,
                    step_id=t.step_id,
                    action=action,
                    accepted=False,
                    message="not selected any more: it changed since the preview",
                )
                for t in only
                if (t.tracking_id, t.step_id) not in selected
            ]
        report = BulkReport(action=action, dry_run=dry_run, targets=targets)
        if dry_run:
            return report
        for outcome in gone:
            report.outcomes.append(outcome)
            report.refused += 1
            if on_outcome is not None:
                await on_outcome(outcome)
        gap = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        loop = asyncio.get_running_loop()
        for target in targets:
            started = loop.time()
            outcome = await self._act_on(target, action, actor, reason)
            report.outcomes.append(outcome)
            if outcome.accepted:
                report.accepted += 1
            else:
                report.refused += 1
            if on_outcome is not None:
                await on_outcome(outcome)
            await asyncio.sleep(max(0.0, gap - (loop.time() - started)))
        log.info(
            "ops.bulk", action=action.value, actor=actor, accepted=report.accepted, refused=report.refused
        )
        return report

    async def _act_on(
        self, target: ActionTarget, action: OpsActionKind, actor: str, reason: str
    ) -> ActionOutcome:
        """One target of a bulk run; a failure becomes a refused outcome that says why."""
        refused = ActionOutcome(
            tracking_id=target.tracking_id, step_id=target.step_id, action=action, accepted=False
        )
        try:
            return await self.act(
                target.tracking_id,
                OpsAction(action=action, step_id=target.step_id, actor=actor, reason=reason),
            )
        except LookupError:
            refused.message = "the bundle is gone"
        except RPCError as err:
            refused.message = f"temporal: {err.status.name}"
        except Exception as err:
            # Whatever else one bundle raises (an update timing out, an unreadable answer) is that
            # bundle's failure: the run goes on and the trail says which one failed.
            log.exception("ops.bulk_target_failed", tracking_id=target.tracking_id, action=action.value)
            refused.message = f"failed: {type(err).__name__}"
        return refused

    # ------------------------------------------------------------------ legacy systems

    async def _control(self, system_id: str) -> Any:
        """The system's control workflow, started on first use."""
        return await start_system_control(self.client, self.settings, system_id)

    async def pause(self, system_id: str, actor: str, reason: str) -> SystemState:
        """Hold every call to a legacy system (nothing sent, no attempt counted) until resumed.

        Raises:
            LookupError: the deployment knows no such system.
            ValueError: the system is already paused.
        """
        handle = await self._control(system_id)
        try:
            state: SystemState = await handle.execute_update(
                SystemControlWorkflow.pause, PauseRequest(actor=actor, reason=reason)
            )
        except WorkflowUpdateFailedError as err:
            raise ValueError(_refusal(err)) from err
        log.info("ops.system_paused", system=system_id, actor=actor)
        return state

    async def resume(
        self, system_id: str, actor: str, reason: str, release_per_s: float | None = None
    ) -> SystemState:
        """Let calls to a system through again; held calls go at `release_per_s` (default: the
        system's configured rate).

        Raises:
            LookupError: the deployment knows no such system.
            ValueError: the system is not paused.
        """
        handle = await self._control(system_id)
        try:
            state: SystemState = await handle.execute_update(
                SystemControlWorkflow.resume,
                ResumeRequest(actor=actor, reason=reason, release_per_s=release_per_s),
            )
        except WorkflowUpdateFailedError as err:
            raise ValueError(_refusal(err)) from err
        log.info("ops.system_resumed", system=system_id, actor=actor)
        return state

    async def system_state(self, system_id: str) -> SystemState:
        """One system's control state (paused, breaker, held calls, error rate).

        Raises:
            LookupError: the deployment knows no such system.
        """
        handle = await self._control(system_id)
        state: SystemState = await handle.query(SystemControlWorkflow.state)
        return state

    async def systems(self, system_ids: Sequence[str] | None = None) -> list[SystemHealth]:
        """Per legacy system: steps in flight and retrying (from visibility), paused and breaker
        state, held calls and error rate (from its control workflow)."""
        ids = sorted(system_ids or known_systems(self.settings))
        return list(await asyncio.gather(*(self._health(s) for s in ids)))

    async def _health(self, system_id: str) -> SystemHealth:
        state = await self.system_state(system_id)
        base = (
            f"ExecutionStatus = 'Running' AND TaskQueue = "
            f"{_quote(bundle_task_queue(self.settings.task_queue_prefix))} AND "
            f"{SA_STUCK_SYSTEMS.name} = {_quote(system_id)}"
        )
        stuck, attention = await asyncio.gather(
            self.client.count_workflows(base),
            self.client.count_workflows(f"{base} AND {SA_STUCK_REASONS.name} = 'needs_attention'"),
        )
        return SystemHealth(
            system_id=system_id,
            in_flight=stuck.count,
            retrying=stuck.count - attention.count,
            needs_attention=attention.count,
            held=state.held,
            paused=state.paused,
            breaker=state.breaker,
            error_rate=state.error_rate,
            calls_in_window=state.calls_in_window,
            control=state,
        )


def known_systems(settings: Settings) -> list[str]:
    """The legacy systems a deployment knows: its adapters and any configured one."""
    return sorted(set(KNOWN_ADAPTERS) | settings.legacy_systems.keys())


async def start_system_control(client: Client, settings: Settings, system_id: str) -> Any:
    """Start a system's control workflow, or find the one running (`USE_EXISTING`).

    Raises:
        LookupError: the deployment knows no such system (a control workflow would otherwise
            start for any id it is given, and stay running).
    """
    if system_id not in known_systems(settings):
        raise LookupError(f"no legacy system {system_id}")
    limits = settings.legacy_system(system_id)
    return await client.start_workflow(
        SystemControlWorkflow.run,
        SystemControlInput(
            system_id=system_id,
            release_per_s=limits.release_per_s or settings.ops_release_per_s,
            breaker=settings.breaker_policy(system_id),
        ),
        id=system_control_id(settings.task_queue_prefix, system_id),
        task_queue=bundle_task_queue(settings.task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"calls to {system_id}: pause, breaker, gradual release",
    )


def _stuck_bundle(execution: WorkflowExecution) -> StuckBundle:
    sa = execution.typed_search_attributes
    reasons = []
    for value in sa.get(SA_STUCK_REASONS) or []:
        try:
            reasons.append(StuckReason(value))
        except ValueError:
            continue  # a reason a newer version added
    return StuckBundle(
        tracking_id=execution.id,
        bundle_id=sa.get(SA_BUNDLE_ID),
        jurisdiction=sa.get(SA_JURISDICTION),
        state=sa.get(SA_STATE),
        reasons=reasons,
        systems=list(sa.get(SA_STUCK_SYSTEMS) or []),
        attention_steps=list(sa.get(SA_ATTENTION_STEPS) or []),
        stuck_since=sa.get(SA_STUCK_SINCE),
    )


def _refusal(err: WorkflowUpdateFailedError) -> str:
    """Why the workflow refused an update (its validator's words)."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


def _text(en: str) -> LocalizedText:
    french = {
        "Give the corrected fields.": "Indiquez les champs corrigés.",
        "This step does not receive this field.": "Cette étape ne reçoit pas ce champ.",
    }
    return LocalizedText(en=en, fr=french.get(en, en))


def _covers(amended_path: str, error_path: str) -> bool:
    """Whether an error at `error_path` is about the amended field (or inside it)."""
    return (
        error_path == amended_path
        or error_path.startswith(f"{amended_path}.")
        or (amended_path.startswith(f"{error_path}.") and error_path != "")
    )
