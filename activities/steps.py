"""Step activities: call one legacy system through its adapter and classify the outcome."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.control import Outcome, SystemGate
from activities.models import (
    STEP_CLOSED,
    STEP_NEEDS_ATTENTION,
    STEP_REJECTED,
    STEP_TRANSIENT,
    UNKNOWN_SYSTEM,
    ErrorDetails,
    StepCall,
    StepCallResult,
)
from adapters.sdk import (
    SYSTEM_CLOSED,
    TEMPORARILY_UNAVAILABLE,
    Adapter,
    AdapterError,
    CallContext,
    ClosedError,
    CompensationRequest,
    NeedsAttentionError,
    Operation,
    RejectedError,
    StepRequest,
    TransientError,
)
from bundles.models import LocalizedText

log = structlog.get_logger("tellonce.activities")

UNEXPECTED_ERROR = LocalizedText(
    en="Something went wrong while contacting the program; we will try again.",
    fr="Un problème est survenu en communiquant avec le programme; nous réessaierons.",
)


class BundleActivities:
    """The activities of a bundle, given the adapters of the legacy systems they call."""

    def __init__(self, adapters: Mapping[str, Adapter], gate: SystemGate | None = None) -> None:
        self._adapters = dict(adapters)
        self._gate = gate

    @activity.defn(name="invoke_step")
    async def invoke_step(self, call: StepCall) -> StepCallResult:
        """Send a step's request to its legacy system, with the step's idempotency key."""
        adapter, ctx = self._prepare(call, "submit")
        probe = await self._gate.check(call, _display_name(adapter, call)) if self._gate else False
        _refuse_when_closed(adapter, ctx)
        try:
            result = await adapter.submit(ctx, StepRequest(fields=call.fields))
        except Exception as exc:
            await self._record(call, exc, probe)
            raise _classified(exc, ctx) from None
        await self._record(call, None, probe)
        ctx.log.info("step.accepted", reference=result.reference, pending_reply=result.pending_reply)
        return StepCallResult(
            reference=result.reference, message=result.message, pending_reply=result.pending_reply
        )

    @activity.defn(name="compensate_step")
    async def compensate_step(self, call: StepCall) -> StepCallResult:
        """Undo a step's earlier request at its legacy system."""
        adapter, ctx = self._prepare(call, "compensate")
        probe = await self._gate.check(call, _display_name(adapter, call)) if self._gate else False
        _refuse_when_closed(adapter, ctx)
        try:
            result = await adapter.compensate(
                ctx, CompensationRequest(reference=call.reference or "", fields=call.fields)
            )
        except Exception as exc:
            await self._record(call, exc, probe)
            raise _classified(exc, ctx) from None
        await self._record(call, None, probe)
        ctx.log.info("step.compensated", reference=result.reference)
        return StepCallResult(reference=result.reference, message=result.message)

    async def _record(self, call: StepCall, exc: Exception | None, probe: bool) -> None:
        """Feed the system's circuit breaker: the system failing or throttling, or answering."""
        if self._gate is None or isinstance(exc, ClosedError):
            return
        outcome: Outcome = "ok"
        if isinstance(exc, TransientError):
            throttled = exc.retry_after is not None or "429" in exc.code or "rate" in exc.code
            outcome = "throttled" if throttled else "failed"
        elif exc is not None and not isinstance(exc, AdapterError):
            outcome = "failed"
        await self._gate.record(call.system, outcome, probe=probe)

    def _prepare(self, call: StepCall, operation: Operation) -> tuple[Adapter, CallContext]:
        info = activity.info()
        bound = log.bind(
            bundle=call.bundle_ref,
            bundle_id=call.bundle_id,
            step=call.step_id,
            system=call.system,
            operation=operation,
            attempt=call.attempt,
            activity_attempt=info.attempt,
        )
        adapter = self._adapters.get(call.system)
        if adapter is None:
            bound.error("step.unknown_system")
            raise ApplicationError(
                f"no adapter for system {call.system!r} on this worker",
                ErrorDetails(code="unknown_system", message=UNEXPECTED_ERROR),
                type=UNKNOWN_SYSTEM,
            )
        bound.info("step.calling")
        ctx = CallContext(
            idempotency_key=call.idempotency_key,
            bundle_ref=call.bundle_ref,
            step_id=call.step_id,
            operation=operation,
            attempt=call.attempt,
            deadline=datetime.now(UTC) + call.timeout,
            log=bound,
        )
        return adapter, ctx


def _display_name(adapter: Adapter, call: StepCall) -> str:
    """How a held bundle names the system in plain words."""
    return f"{call.system} system"


def _refuse_when_closed(adapter: Adapter, ctx: CallContext) -> None:
    """Raise `STEP_CLOSED` without calling the system when its calendar says it is closed now.

    A request sent into a closed window would only fail and burn an attempt; the workflow waits
    for the reopening instead, without counting one.
    """
    if adapter.availability is None:
        return
    now = _now()
    reopens = adapter.availability.closed_until(now)
    if reopens is None:
        return
    ctx.log.info("step.system_closed", reopens_at=reopens.isoformat(), source="calendar")
    raise ApplicationError(
        f"closed until {reopens.isoformat()}",
        ErrorDetails(code="closed", message=SYSTEM_CLOSED, retry_after=reopens - now),
        type=STEP_CLOSED,
        non_retryable=True,
    )


def _now() -> datetime:
    """The later of this worker's clock and the time Temporal started this activity task.

    The workflow timed its wait for the reopening on Temporal's clock: a worker clock running a
    little behind would find the system still closed and send the step back to wait again.
    """
    now = datetime.now(UTC)
    started = activity.info().started_time
    return max(now, started) if started.tzinfo is not None else now


def _classified(exc: Exception, ctx: CallContext) -> ApplicationError:
    """Map an adapter's exception to an `ApplicationError` free of personal data.

    Only the error's code reaches the failure message, which Temporal stores unencrypted; the
    bilingual message travels in the details, which are payloads.
    """
    if isinstance(exc, AdapterError):
        details = ErrorDetails(code=exc.code, message=exc.message)
        if isinstance(exc, RejectedError):
            ctx.log.warning("step.rejected", code=exc.code)
            return ApplicationError(f"rejected: {exc.code}", details, type=STEP_REJECTED, non_retryable=True)
        if isinstance(exc, NeedsAttentionError):
            ctx.log.warning("step.needs_attention", code=exc.code)
            return ApplicationError(
                f"needs attention: {exc.code}", details, type=STEP_NEEDS_ATTENTION, non_retryable=True
            )
        if isinstance(exc, ClosedError):
            # The system itself said it is closed (e.g. maintenance it did not announce to us).
            details = details.model_copy(update={"retry_after": exc.retry_after})
            reopens_in = exc.retry_after.total_seconds() if exc.retry_after is not None else None
            ctx.log.info("step.system_closed", code=exc.code, reopens_in_s=reopens_in, source="system")
            return ApplicationError(f"closed: {exc.code}", details, type=STEP_CLOSED, non_retryable=True)
        if isinstance(exc, TransientError):
            details = details.model_copy(update={"retry_after": exc.retry_after})
        ctx.log.warning("step.transient_error", code=exc.code, detail=exc.detail)
        return ApplicationError(f"transient: {exc.code}", details, type=STEP_TRANSIENT)
    # Not classified by the adapter: a bug or an unmapped library error. Its message may echo
    # request data, so only its type is logged and recorded; it is retried like a transient error.
    ctx.log.error("step.unexpected_error", error_type=type(exc).__name__)
    return ApplicationError(
        f"unexpected {type(exc).__name__} in adapter",
        ErrorDetails(code=f"unexpected_{type(exc).__name__}", message=TEMPORARILY_UNAVAILABLE),
        type=STEP_TRANSIENT,
    )
