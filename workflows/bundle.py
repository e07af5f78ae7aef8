"""`BundleWorkflow`: executes one resident's bundle, a DAG of steps, each at one legacy system."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        STEP_CLOSED,
        STEP_HELD,
        STEP_NEEDS_ATTENTION,
        STEP_REJECTED,
        ErrorDetails,
        StepCall,
        StepCallResult,
    )
    from bundles.models import LocalizedText
    from bundles.notices import (
        FACT_LABELS,
        OFFER_BIRTH_STATEMENT,
        STATEMENT_UNREADABLE,
        WITHDRAW_STATEMENT_SIGNAL,
        OfferResult,
        StatementOfferCall,
        StatementWithdrawal,
    )
    from bundles.plan import PlannedStep, leaf_paths, merge_fields
    from workflows import texts
    from workflows.models import (
        BUNDLE_STATE_CHANGED,
        EVENT_SOURCE_PREFIX,
        FINAL_STEP_STATES,
        PUBLISH_BUNDLE_EVENTS,
        SIGNAL_BIRTH_NOTICE_RESULT,
        SIGNAL_LEGACY_REPLY,
        STEP_STATE_CHANGED,
        AttemptRecord,
        BundleEvent,
        BundleEventData,
        BundleInput,
        BundleState,
        BundleStatus,
        BundleTimelineView,
        DecisionAction,
        DecisionResult,
        ErrorKind,
        EventBatch,
        LegacyReply,
        NoticeMatchResult,
        OperatorAction,
        StepDecision,
        StepError,
        StepState,
        StepStatus,
        StepTimelineView,
        StuckReason,
        TimelineRequest,
        WithdrawRequest,
        WithdrawResult,
    )
    from workflows.names import (
        SA_ATTENTION_STEPS,
        SA_STATE,
        SA_STUCK,
        SA_STUCK_REASONS,
        SA_STUCK_SINCE,
        SA_STUCK_SYSTEMS,
        bundle_task_queue,
        events_task_queue,
        idempotency_key,
        legacy_task_queue,
        parse_idempotency_key,
    )
    from workflows.system_control import SIGNAL_SYSTEM_RELEASED, SystemRelease

SINGLE_ATTEMPT = RetryPolicy(maximum_attempts=1)
"""Step calls are retried by the workflow itself, so residents and operators see every attempt,
the backoff honours a system's Retry-After, and an operator can retry at once."""

COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[STEP_REJECTED, STEP_NEEDS_ATTENTION, STEP_CLOSED],
)
"""Undoing is retried quickly by Temporal; past its bound, an operator decides."""

EVENTS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
"""Status events are retried without limit: a broker outage delays them, never loses them."""

EVENTS_PAUSE_AFTER_FAILURE = timedelta(minutes=1)
"""Pause before publishing again after the publish activity gave up (it should never give up)."""

INTERNAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
"""tellonce's own activities (no legacy system involved) are retried until they succeed."""

STATEMENT_HELD_FOR = timedelta(days=365)
"""How long the matcher keeps a statement: past `await_within` the step parks but still listens,
so a late notice matches, up to the year within which Ontario registers a birth online."""

CALL_TIMEOUT_MARGIN = timedelta(seconds=5)
"""The adapter times its own call out first, so its error is classified rather than cut off."""

HELD_RECHECK = timedelta(minutes=10)
"""A held call is tried again after this long even without its release (which a lost control
workflow would never send); the worker holds it again if the system still holds calls."""

ATTEMPTS_KEPT = 50
"""Attempts kept per step for the operators' timeline (the count itself is never capped)."""

STUCK_VISIBILITY_PATCH = "ops-stuck-visibility"
"""Bundles started before the stuck search attributes existed replay without their upserts."""

EVENTS_COALESCED_PATCH = "events-coalesced"
"""Bundles started before status events were coalesced replay publishing each change at once."""

INLINE_BOOKKEEPING_REVISION = 2
"""From this engine revision on, status events and statement offers run as local activities, and
the deadlines of reply and notice waits are left to run out rather than cancelled."""

INLINE_EVENTS_TIMEOUT = timedelta(seconds=3)
"""How long a workflow task waits for the broker to take its batch of status events inline.

Every inline batch holds its workflow task (and so the calls it schedules) until the broker
acknowledges it: milliseconds normally, and this long at most once per bundle, after which the
bundle publishes on the events queue instead."""

INLINE_OFFER_TIMEOUT = timedelta(seconds=5)
"""How long a workflow task waits for its one inline attempt to hand a statement to its matcher;
a failed or slower attempt is retried as an activity on the bundle queue instead."""

EVENTS_HOLD_MAX = timedelta(seconds=10)
"""Longest that queued status events wait for the calls in flight to settle before they go out.

A call in flight is about to change a step again (done, waiting for a reply, retrying): waiting
for it publishes both changes in one batch, one activity instead of two, and it settles within
seconds unless its system is slow, which this bound covers."""

_T = TypeVar("_T")

INVOKE_STEP = "invoke_step"
COMPENSATE_STEP = "compensate_step"


class Abort(StrEnum):
    """Why a bundle stops starting new steps and rolls back what it can."""

    WITHDRAWN = "withdrawn"
    FAILED = "failed"


class _Next(StrEnum):
    """What a step does after a failed attempt."""

    RETRY = "retry"
    NEW_ROUND = "new_round"
    STOP = "stop"


class _Woken(StrEnum):
    """A parked step woke without an operator: the answer it waited for arrived late."""

    ANSWERED = "answered"


class _StepRun:
    """Mutable bookkeeping of one step that is not part of its public status."""

    def __init__(self, step: PlannedStep) -> None:
        self.step = step
        self.payload: dict[str, Any] = dict(step.payload)
        self.revision = 0
        self.attempts_in_round = 0
        self.decision: StepDecision | None = None
        self.retry_now = False
        self.compensating = False
        self.reply_key: str | None = None
        """Idempotency key of the request whose asynchronous reply the step waits for."""
        self.match_workflow_id: str | None = None
        """The birth-notice matcher holding this step's statement, while it holds one."""
        self.notice_id: str | None = None
        self.attempt_log: list[AttemptRecord] = []
        self.park_reasons: tuple[StuckReason, ...] = ()
        """Why the step parked, beyond needing a person: retries exceeded, deadline, reply overdue."""
        self.held: StuckReason | None = None
        """While the step's system holds its call: paused, or breaker open."""
        self.held_by: str | None = None
        self.released: int | None = None
        """The control generation of a release that arrived while the step was held."""
        self.control_pass: int | None = None
        self.pending_action: OperatorAction | None = None


@workflow.defn
class BundleWorkflow:
    """Runs a resolved bundle plan to a final state.

    Guarantees:
    * A step starts only when every step it `needs` is done; independent steps run in parallel,
      each as an activity on its legacy system's own task queue.
    * Every call to a legacy system carries an idempotency key derived from the workflow id, the
      step and the operation, so retries, worker crashes and replays never duplicate an effect.
    * Retries are bounded by the step's attempts and deadline; past them the step parks in
      `needs_attention` with the reason, until an operator retries, amends, skips or fails it.
    * Before the pivot, a required step's failure rolls back every completed reversible step in
      reverse order and the bundle ends `failed`. After the pivot nothing is rolled back: failures
      park for an operator (forward recovery).
    * Withdrawal stops every step not yet sent and undoes the reversible ones that were done.
    """

    @workflow.init
    def __init__(self, bundle: BundleInput) -> None:
        # The input is taken here, not in run(): an update or signal can arrive with the
        # bundle's first workflow task (a withdrawal sent while no worker ran) and its handler
        # runs before run() does, so the bundle's steps must exist by then.
        self._input: BundleInput | None = None
        self._runs: dict[str, _StepRun] = {}
        self._steps: dict[str, StepStatus] = {}
        self._completed: list[str] = []
        self._actions: list[OperatorAction] = []
        self._abort: Abort | None = None
        self._pivot_done = False
        self._final: BundleState | None = None
        # The client sets these search attributes when it starts the bundle.
        self._visible: tuple[str, tuple[str, ...]] = (BundleState.RECEIVED.value, ())
        self._stuck_visible: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self._stuck_since: datetime | None = None
        self._replies: dict[str, LegacyReply] = {}
        self._seen_reply_ids: set[str] = set()
        self._notices: dict[str, NoticeMatchResult] = {}
        # Status events: what was last announced, and what waits to be published.
        self._announced_state: BundleState | None = None
        self._announced_steps: dict[str, StepState] = {}
        self._event_sequence = 0
        self._outbox: list[BundleEvent] = []
        self._outbox_closed = False
        self._calls_in_flight = 0
        """Step calls and statement offers sent and not yet answered: status events wait for them."""
        self._inline_calls_in_flight = 0
        """Local activities (statement offers, event batches) sent or queued, not yet answered."""
        self._inline_lock = asyncio.Lock()
        self._events_queued = False
        """An inline batch failed: the bundle publishes on the events queue from then on."""
        self._start(bundle)

    # ------------------------------------------------------------------ orchestration

    @workflow.run
    async def run(self, bundle: BundleInput) -> BundleStatus:
        """Execute the bundle's steps and return its final status."""
        self._sync_visibility()
        publisher = asyncio.ensure_future(self._publish_events()) if bundle.publish_events else None
        steps = asyncio.ensure_future(
            asyncio.gather(*(self._run_step(run) for run in self._runs.values() if run.step.skip is None))
        )
        try:
            await asyncio.shield(steps)
        except asyncio.CancelledError:
            # A cancellation from Temporal is an operator stopping the bundle: treat it as a
            # withdrawal. Calls already in flight finish (their effect may have happened), so
            # that what they did is undone like any other completed reversible step.
            self._abort = self._abort or Abort.WITHDRAWN
            await steps
            await self._compensate()
            self._finish_bundle()
            await self._close_outbox(publisher)
            raise
        if self._abort is not None:
            await self._compensate()
        self._finish_bundle()
        try:
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._close_outbox(publisher)
        except asyncio.CancelledError:
            # Cancelled while only its last events were going out: they still go out.
            await self._close_outbox(publisher)
            raise
        return self._status()

    def _start(self, bundle: BundleInput) -> None:
        self._input = bundle
        for step in bundle.plan.steps:
            self._runs[step.id] = _StepRun(step)
            status = StepStatus(
                id=step.id,
                program=step.program,
                organization=step.organization,
                level=step.level,
                system=step.system,
                state=StepState.PENDING,
            )
            if step.skip is not None:
                status.state = StepState.SKIPPED
                status.message = step.skip_message
                status.finished_at = workflow.now()
            self._steps[step.id] = status

    async def _run_step(self, run: _StepRun) -> None:
        step, status = run.step, self._steps[run.step.id]
        await workflow.wait_condition(
            lambda: (
                self._abort is not None or all(self._steps[n].state in FINAL_STEP_STATES for n in step.needs)
            )
        )
        if self._abort is not None:
            self._end_step(status, StepState.SKIPPED, self._abort_message())
            return
        if any(self._steps[n].state != StepState.DONE for n in step.needs):
            self._end_step(status, StepState.SKIPPED, texts.DEPENDENCY_NOT_DONE, exception=True)
            return
        if step.not_before is not None and not await self._await_effective_date(run, step.not_before):
            return
        status.started_at = workflow.now()
        if step.awaits == "birth_notice" and not await self._await_birth_notice(run):
            return
        await self._send(run)

    async def _send(self, run: _StepRun) -> None:
        """Send the step's request until it is settled: done, ended, or with an operator."""
        status = self._steps[run.step.id]
        round_started = workflow.now()
        while True:
            error = await self._attempt(run)
            if error is None:
                return
            if error.kind == "held":
                held_at = workflow.now()
                if not await self._held_then_go(run, error):
                    return
                # Time held by a pause or an open breaker is not the system failing this step.
                round_started += workflow.now() - held_at
                continue
            if error.kind == "closed":
                closed_at = workflow.now()
                if not await self._await_opening(run, error):
                    last = status.last_error
                    if last is not None and last.kind in ("transient", "timeout"):
                        # An earlier call of this round may have taken effect: learn it before stopping.
                        await self._settle_before_stopping(run)
                    else:
                        self._end_step(status, StepState.SKIPPED, self._abort_message())
                    return
                if run.decision is not None:
                    decision, run.decision = run.decision, None
                    self._apply_decision(run, decision)
                    return
                # Hours the system was closed are not the system failing: they don't use up the deadline.
                round_started += workflow.now() - closed_at
                continue
            next_move = await self._recover(run, error, workflow.now() - round_started)
            if next_move is _Next.STOP:
                return
            if next_move is _Next.NEW_ROUND:
                run.attempts_in_round = 0
                round_started = workflow.now()

    async def _await_effective_date(self, run: _StepRun, not_before: datetime) -> bool:
        """Hold a step until its system takes the change (an effective date too far ahead).

        False when the bundle stops first: nothing was sent.
        """
        status = self._steps[run.step.id]
        if workflow.now() >= not_before:
            return True
        status.message = texts.waiting_for_effective_date(not_before)
        status.waiting_for = (
            f"{run.step.system} takes the change only from {not_before.isoformat()}; it is sent then"
        )
        status.next_attempt_at = not_before
        self._sync_visibility()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._abort is not None, timeout=not_before - workflow.now()
            )
        status.next_attempt_at = None
        if self._abort is not None:
            self._end_step(status, StepState.SKIPPED, self._abort_message())
            return False
        status.message = None
        return True

    async def _await_opening(self, run: _StepRun, error: StepError, *, stoppable: bool = True) -> bool:
        """Wait until a closed system opens (nothing was sent, no attempt counted).

        False when the bundle stops first (only when `stoppable`).
        """
        step, status = run.step, self._steps[run.step.id]
        wait = max(error.retry_after or timedelta(minutes=5), timedelta(seconds=1))
        status.state = StepState.RETRYING
        status.message = error.message
        status.next_attempt_at = workflow.now() + wait
        status.waiting_for = (
            f"{step.system} is closed (availability window or maintenance); "
            f"the request is sent when it opens at {status.next_attempt_at.isoformat()}"
        )
        self._sync_visibility()
        run.retry_now = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: (
                    (stoppable and self._abort is not None)
                    or run.retry_now
                    or (stoppable and run.decision is not None)
                ),
                timeout=wait,
            )
        return self._abort is None

    async def _held_then_go(self, run: _StepRun, error: StepError) -> bool:
        """Wait out a hold; True to send again, False when the step ended meanwhile."""
        outcome = await self._await_release(run, error)
        if outcome is _Next.RETRY:
            return True
        if outcome is None:
            last = self._steps[run.step.id].last_error
            if last is not None and last.kind in ("transient", "timeout"):
                await self._settle_before_stopping(run)
            else:
                self._end_step(self._steps[run.step.id], StepState.SKIPPED, self._abort_message())
        return False

    async def _await_release(
        self, run: _StepRun, error: StepError, *, stoppable: bool = True
    ) -> _Next | None:
        """Wait while the system holds calls (paused, or breaker open): nothing was sent and no
        attempt counted; its control workflow releases the call when calls may go again.

        `_Next.RETRY` to send again, `_Next.STOP` when an operator ended the step meanwhile, None
        when the bundle stops first (only when `stoppable`).
        """
        status = self._steps[run.step.id]
        status.state = StepState.RETRYING
        status.message = texts.RETRYING
        status.next_attempt_at = None
        status.waiting_for = f"waiting: {run.held_by or error.code}"
        run.released = None
        run.retry_now = False
        self._sync_visibility()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: (
                    (stoppable and self._abort is not None)
                    or run.released is not None
                    or (stoppable and run.decision is not None)
                ),
                timeout=HELD_RECHECK,
            )
        run.held = run.held_by = None
        if run.released is not None:
            run.control_pass, run.released = run.released, None
        if stoppable and self._abort is not None:
            return None
        if stoppable and run.decision is not None:
            decision, run.decision = run.decision, None
            self._apply_decision(run, decision)
            return _Next.STOP
        return _Next.RETRY

    def _rolls_back(self, step: PlannedStep) -> bool:
        """Whether a required step's failure stops the bundle and undoes what was done."""
        if step.optional:
            return False
        return step.failure_rolls_back or (step.before_pivot and not self._pivot_done)

    async def _recover(self, run: _StepRun, error: StepError, elapsed: timedelta) -> _Next:
        """Decide what follows a failed attempt: back off, end the step, or ask an operator."""
        step, status = run.step, self._steps[run.step.id]
        if error.kind in ("transient", "timeout"):
            exhausted = run.attempts_in_round >= step.retry.maximum_attempts
            if not exhausted and elapsed < step.deadline:
                moved = await self._back_off(run, error, step.deadline - elapsed)
                if moved is not None:
                    return moved
                await self._settle_before_stopping(run)
                return _Next.STOP
            run.park_reasons = (StuckReason.RETRIES_EXCEEDED,) if exhausted else (StuckReason.PAST_DEADLINE,)
            why = (
                f"{step.system} still failing after {run.attempts_in_round} attempts"
                if exhausted
                else f"{step.system} still failing past the step's deadline of {step.deadline}"
            )
            why = f"{why} (last error: {error.code}); retry, skip or fail"
        elif error.kind == "no_reply":
            return await self._recover_from_silence(run, elapsed)
        elif error.kind == "rejected":
            if step.optional or self._rolls_back(step):
                self._end_step(status, StepState.REJECTED, error.message, exception=True)
                if not step.optional:
                    self._abort = self._abort or Abort.FAILED
                return _Next.STOP
            why = f"{step.system} refused the request ({error.code}); amend, retry, skip or fail"
        else:
            why = f"{step.system} asks for a person ({error.code}); amend, retry, skip or fail"
        decision = await self._park(run, why)
        assert decision is not _Woken.ANSWERED  # only parks with a `wake` condition wake by themselves
        if decision is None:
            if error.kind in ("transient", "timeout"):
                await self._settle_before_stopping(run)
            else:
                self._end_step(status, StepState.SKIPPED, self._abort_message())
            return _Next.STOP
        return _Next.NEW_ROUND if self._apply_decision(run, decision) else _Next.STOP

    async def _recover_from_silence(self, run: _StepRun, elapsed: timedelta) -> _Next:
        """A system never replied: ask an operator, while still accepting a late reply."""
        step, status = run.step, self._steps[run.step.id]
        run.park_reasons = (StuckReason.REPLY_OVERDUE,)
        why = (
            f"{step.system} has not replied within {step.reply_timeout}; retry to send the request "
            "again (same key), or skip or fail"
        )
        decision = await self._park(run, why, wake=lambda: run.reply_key in self._replies)
        if decision is _Woken.ANSWERED:
            late = self._take_reply(run)
            return _Next.STOP if late is None else await self._recover(run, late, elapsed)
        if decision is None:
            if step.compensable:
                # Stopping, and the request may have taken effect: wait once more for the answer
                # that says whether there is something to undo.
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: run.reply_key in self._replies, timeout=step.reply_timeout
                    )
                if run.reply_key in self._replies:
                    refused = self._take_reply(run)
                    if refused is not None:
                        self._end_step(status, StepState.REJECTED, refused.message, exception=True)
                    return _Next.STOP  # accepted: done, and undone with the other completed steps
            # The request left and was never answered: it cannot be called "not sent".
            self._end_step(status, StepState.FAILED, texts.NO_REPLY, exception=True)
            return _Next.STOP
        return _Next.NEW_ROUND if self._apply_decision(run, decision) else _Next.STOP

    async def _settle_before_stopping(self, run: _StepRun) -> None:
        """Stop a step whose last call may have reached its system without an answer.

        A reversible step that timed out may have taken effect. Sending it once more with the
        same idempotency key makes the system answer with its reference (or act now), so the
        effect is known and is undone with the other completed steps.
        """
        status = self._steps[run.step.id]
        if run.step.compensable and status.last_error is not None:
            error = await self._attempt(run)
            while error is not None and error.kind in ("closed", "held"):
                # Nothing was sent now, but the earlier call may have taken effect: ask once it opens.
                if error.kind == "held":
                    await self._await_release(run, error, stoppable=False)
                else:
                    await self._await_opening(run, error, stoppable=False)
                error = await self._attempt(run)
            if error is None:
                return
            status.exception = True
        self._end_step(status, StepState.SKIPPED, self._abort_message())

    async def _attempt(self, run: _StepRun) -> StepError | None:
        """Call the step's legacy system once; None when it accepted the request."""
        step, status = run.step, self._steps[run.step.id]
        run.attempts_in_round += 1
        status.attempts += 1
        # A reply stored now answers an earlier send of this request (a redelivered copy of an
        # answer already acted on): the request about to leave gets an answer of its own.
        self._replies.pop(self._submit_key(run), None)
        status.state = StepState.RUNNING
        status.waiting_for = f"waiting for {step.system} to answer"
        status.next_attempt_at = None
        self._sync_visibility()
        try:
            result = await self._in_flight(
                workflow.execute_activity(
                    INVOKE_STEP,
                    self._call(run, "submit"),
                    task_queue=self._task_queue(step),
                    # With no worker polling the system's queue nothing was sent: waiting is safe,
                    # but only until the step's deadline, when an operator is asked.
                    schedule_to_start_timeout=step.deadline,
                    start_to_close_timeout=step.call_timeout + CALL_TIMEOUT_MARGIN,
                    retry_policy=SINGLE_ATTEMPT,
                    result_type=StepCallResult,
                    summary=f"{step.id} attempt {status.attempts}",
                )
            )
        except ActivityError as err:
            error = _classify(err, workflow.now())
            if error.kind in ("closed", "held"):
                # Nothing left for the system: not an attempt, and not the step's last error.
                run.attempts_in_round -= 1
                status.attempts -= 1
                if error.kind == "held":
                    run.held, run.held_by = _held(err)
                self._log_attempt(run, error.kind, error)
                return error
            status.last_error = error
            self._log_attempt(run, "failed", error)
            return status.last_error
        if result.pending_reply:
            status.reference = result.reference
            self._log_attempt(run, "acknowledged", None)
            return await self._await_reply(run)
        self._log_attempt(run, "accepted", None)
        self._step_done(run, result.reference, result.message)
        return None

    def _log_attempt(
        self,
        run: _StepRun,
        outcome: Literal["accepted", "acknowledged", "failed", "closed", "held", "replied"],
        error: StepError | None,
    ) -> None:
        run.attempt_log.append(
            AttemptRecord(
                at=workflow.now(),
                outcome=outcome,
                kind=error.kind if error else None,
                code=error.code if error else None,
                attempt=self._steps[run.step.id].attempts,
            )
        )
        del run.attempt_log[:-ATTEMPTS_KEPT]

    def _step_done(self, run: _StepRun, reference: str | None, message: LocalizedText | None) -> None:
        status = self._steps[run.step.id]
        status.reference = reference or status.reference
        self._completed.append(run.step.id)
        if run.step.pivot:
            self._pivot_done = True
        self._end_step(status, StepState.DONE, run.step.on_done or message or texts.SENT)

    async def _wait_until(self, done: Callable[[], bool], within: timedelta) -> None:
        """Wait until `done()` holds or `within` has passed, whichever comes first.

        From engine revision 2 the deadline's timer is left to run out rather than cancelled when
        `done()` comes first: these deadlines are days away, a bundle usually ends well before
        them, and a timer still running when a workflow ends costs nothing, where cancelling it
        writes an event. A bundle still running at the deadline wakes once, for nothing.
        """
        if self._bundle().engine_revision < INLINE_BOOKKEEPING_REVISION:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(done, timeout=within)
            return
        deadline = asyncio.ensure_future(workflow.sleep(within))
        await workflow.wait_condition(lambda: done() or deadline.done())

    async def _await_reply(self, run: _StepRun) -> StepError | None:
        """Wait, holding no worker slot, for the system's asynchronous answer to the request sent.

        The request has left, so a withdrawal does not stop the wait: the answer decides whether
        there is something to undo.
        """
        step, status = run.step, self._steps[run.step.id]
        key = run.reply_key = self._submit_key(run)
        until = workflow.now() + step.reply_timeout
        status.state = StepState.WAITING_REPLY
        status.message = texts.WAITING_REPLY
        status.waiting_for = f"waiting for {step.system} to reply (until {until.isoformat()})"
        status.next_attempt_at = None
        self._sync_visibility()
        await self._wait_until(lambda: key in self._replies, step.reply_timeout)
        if key in self._replies:
            return self._take_reply(run)
        status.last_error = StepError(
            kind="no_reply", code="reply_overdue", message=texts.UNDER_REVIEW, at=workflow.now()
        )
        return status.last_error

    def _take_reply(self, run: _StepRun) -> StepError | None:
        """Apply the reply the step waited for; None when the system accepted the request."""
        assert run.reply_key is not None
        reply = self._replies.pop(run.reply_key)
        run.reply_key = None
        run.attempt_log.append(
            AttemptRecord(
                at=workflow.now(),
                outcome="replied",
                code=reply.code or reply.outcome,
                attempt=self._steps[run.step.id].attempts,
            )
        )
        if reply.outcome == "accepted":
            self._step_done(run, reply.reference, reply.message)
            return None
        status = self._steps[run.step.id]
        kind: ErrorKind = "rejected" if reply.outcome == "rejected" else "needs_attention"
        status.last_error = StepError(
            kind=kind,
            code=reply.code or reply.outcome,
            message=reply.message or texts.UNDER_REVIEW,
            at=workflow.now(),
        )
        return status.last_error

    async def _await_birth_notice(self, run: _StepRun) -> bool:
        """Hold the step until the hospital's notice of live birth matches the statement.

        True when the step may be sent: the notice matched, or an operator matched it by hand
        (`retry`). False when the step ended without being sent.
        """
        step, status = run.step, self._steps[run.step.id]
        while True:
            offer = await self._offer_statement(run)
            if offer.match_workflow_id is None:
                error = StepError(
                    kind="needs_attention",
                    code=offer.reason or "birth_notice_unmatchable",
                    message=texts.NO_BIRTH_NOTICE,
                    at=workflow.now(),
                )
                why = (
                    f"the statement cannot be matched to a notice automatically ({error.code}); "
                    "amend it, or retry once the notice is matched by hand"
                )
            else:
                until = workflow.now() + step.await_within
                status.state = StepState.WAITING_REPLY
                status.message = texts.WAITING_BIRTH_NOTICE
                status.waiting_for = f"waiting for the notice of live birth (until {until.isoformat()})"
                self._sync_visibility()
                await self._wait_until(
                    lambda: step.id in self._notices or self._abort is not None, step.await_within
                )
                if self._abort is not None:
                    await self._withdraw_statement(run)
                    self._end_step(status, StepState.SKIPPED, self._abort_message())
                    return False
                result = self._notices.pop(step.id, None)
                if result is not None and result.outcome == "matched":
                    run.notice_id = result.notice_id
                    return True
                error, why = self._notice_problem(run, result)
            status.last_error = error
            if error.code == "birth_notice_overdue":
                run.park_reasons = (StuckReason.REPLY_OVERDUE,)
            decision = await self._park(run, why, wake=lambda: self._notice_matched(step.id))
            if decision is _Woken.ANSWERED and self._abort is None:
                run.notice_id = self._notices.pop(step.id).notice_id
                return True
            if decision is _Woken.ANSWERED:
                decision = None  # stopping: the matcher gets the notice back when we withdraw
            if decision is None or decision.action is not DecisionAction.AMEND:
                await self._withdraw_statement(run)
            if decision is None:
                self._end_step(status, StepState.SKIPPED, self._abort_message())
                return False
            if decision.action is DecisionAction.RETRY:
                return True
            if not self._apply_decision(run, decision):
                return False

    def _notice_problem(self, run: _StepRun, result: NoticeMatchResult | None) -> tuple[StepError, str]:
        """The step's error and the operator's explanation when no notice matched in time."""
        if result is None:
            error = StepError(
                kind="needs_attention",
                code="birth_notice_overdue",
                message=texts.NO_BIRTH_NOTICE,
                at=workflow.now(),
            )
            return error, (
                f"no notice of live birth matched within {run.step.await_within}; it can still match, "
                "or amend the statement, or retry once the notice is matched by hand"
            )
        labels = [FACT_LABELS[name] for name in result.differences if name in FACT_LABELS]
        error = StepError(
            kind="needs_attention",
            code="birth_notice_conflict",
            message=texts.birth_notice_differs(labels),
            at=workflow.now(),
        )
        return error, (
            f"notice {result.notice_id} differs from the statement on "
            f"{', '.join(result.differences) or 'some facts'}; a corrected notice can still match, "
            "or amend the statement, or retry to register it as is once checked"
        )

    def _notice_matched(self, step_id: str) -> bool:
        result = self._notices.get(step_id)
        return result is not None and result.outcome == "matched"

    async def _offer_statement(self, run: _StepRun) -> OfferResult:
        """Hand the statement to the matcher of its facts (which may already hold the notice)."""
        # A verdict on the facts offered before (say, a match just before an amend) is not one
        # on these: only the matcher's answer to this offer counts.
        self._notices.pop(run.step.id, None)
        call = StatementOfferCall(
            bundle_workflow_id=workflow.info().workflow_id,
            step_id=run.step.id,
            payload=run.payload,
            wait=STATEMENT_HELD_FOR,
        )
        summary = f"{run.step.id} statement to the notice matcher"

        def queued() -> Awaitable[OfferResult]:
            return workflow.execute_activity(
                OFFER_BIRTH_STATEMENT,
                call,
                task_queue=bundle_task_queue(self._bundle().task_queue_prefix),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=INTERNAL_RETRY,
                result_type=OfferResult,
                summary=summary,
            )

        try:
            if self._bundle().engine_revision >= INLINE_BOOKKEEPING_REVISION:
                try:
                    # A signal-with-start to tellonce's own matcher, tried once within the
                    # workflow task: one marker instead of an activity and the task its answer
                    # wakes. Retried there, it would hold the task (and so the rest of the
                    # bundle) for as long as the matcher fails: retries go to the queue.
                    offer: OfferResult = await self._in_flight(
                        self._inline(
                            lambda: workflow.execute_local_activity(
                                OFFER_BIRTH_STATEMENT,
                                call,
                                start_to_close_timeout=INLINE_OFFER_TIMEOUT,
                                retry_policy=SINGLE_ATTEMPT,
                                result_type=OfferResult,
                                summary=summary,
                            )
                        )
                    )
                except FailureError as err:
                    if _failure_type(err) == STATEMENT_UNREADABLE:
                        raise
                    offer = await self._in_flight(queued())
            else:
                offer = await self._in_flight(queued())
        except FailureError:
            # Only a statement the matcher cannot read fails for good; a person pairs it instead.
            # (Inline, the failure arrives unwrapped: an ApplicationError, not an ActivityError.)
            offer = OfferResult(match_workflow_id=None, reason="statement_unreadable")
        if run.match_workflow_id not in (None, offer.match_workflow_id):
            # Amended facts moved the statement to another matcher: the old one must forget it.
            await self._withdraw_statement(run)
        run.match_workflow_id = offer.match_workflow_id
        return offer

    async def _withdraw_statement(self, run: _StepRun) -> None:
        if run.match_workflow_id is None:
            return
        matcher, run.match_workflow_id = run.match_workflow_id, None
        # The matcher may have finished already (matched elsewhere, or expired): nothing to undo.
        with contextlib.suppress(Exception):
            await workflow.get_external_workflow_handle(matcher).signal(
                WITHDRAW_STATEMENT_SIGNAL,
                StatementWithdrawal(bundle_workflow_id=workflow.info().workflow_id, step_id=run.step.id),
            )

    async def _back_off(self, run: _StepRun, error: StepError, remaining: timedelta) -> _Next | None:
        """Wait before the next attempt (`RETRY`); `STOP` when an operator ended the step
        meanwhile, None when the bundle is stopping instead."""
        step, status = run.step, self._steps[run.step.id]
        delay = _backoff(step, run.attempts_in_round)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        delay = max(min(delay, remaining), timedelta(seconds=1))
        status.state = StepState.RETRYING
        status.message = texts.RETRYING
        status.next_attempt_at = workflow.now() + delay
        status.waiting_for = (
            f"{step.system} failed ({error.code}); attempt {run.attempts_in_round + 1} "
            f"of {step.retry.maximum_attempts} at {status.next_attempt_at.isoformat()}"
        )
        self._sync_visibility()
        run.retry_now = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._abort is not None or run.retry_now or run.decision is not None, timeout=delay
            )
        if self._abort is not None:
            return None
        if run.decision is not None:
            decision, run.decision = run.decision, None
            self._apply_decision(run, decision)
            return _Next.STOP
        return _Next.RETRY

    async def _park(
        self, run: _StepRun, why: str, *, wake: Callable[[], bool] | None = None
    ) -> StepDecision | _Woken | None:
        """Wait in `needs_attention` for an operator's decision; None when the bundle stops.

        With `wake`, a late answer (a reply or a matching notice) ends the wait by itself.
        """
        status = self._steps[run.step.id]
        status.state = StepState.NEEDS_ATTENTION
        status.message = texts.UNDER_REVIEW
        if status.last_error is not None and status.last_error.code.startswith("birth_notice"):
            status.message = status.last_error.message  # what the resident is waiting on, in words
        status.waiting_for = why
        status.next_attempt_at = None
        run.decision = None
        self._sync_visibility()
        woken = wake or (lambda: False)
        await workflow.wait_condition(lambda: self._abort is not None or run.decision is not None or woken())
        run.park_reasons = ()
        decision, run.decision = run.decision, None
        if woken():
            # The late answer counts even when the bundle is stopping: it says whether the
            # request took effect, and so whether there is something to undo.
            return _Woken.ANSWERED
        return None if self._abort is not None else decision

    def _apply_decision(self, run: _StepRun, decision: StepDecision) -> bool:
        """Apply an operator's decision; True when the step should be tried again."""
        step, status = run.step, self._steps[run.step.id]
        applied, run.pending_action = run.pending_action, None
        if applied is not None:
            applied.after = {
                DecisionAction.SKIP: StepState.SKIPPED,
                DecisionAction.FAIL: StepState.FAILED,
            }.get(decision.action, StepState.RUNNING).value
        if decision.action is DecisionAction.SKIP:
            self._end_step(status, StepState.SKIPPED, texts.SKIPPED_BY_OPERATOR, exception=True)
            return False
        if decision.action is DecisionAction.FAIL:
            self._end_step(status, StepState.FAILED, texts.FAILED_BY_OPERATOR, exception=True)
            if self._rolls_back(step):
                self._abort = self._abort or Abort.FAILED
            return False
        if decision.action is DecisionAction.AMEND and decision.amended_fields:
            amended = merge_fields(run.payload, decision.amended_fields)
            if amended != run.payload:
                # A new revision gets a new key: the system refused the old data (amending is
                # only offered after a refusal or a review), so this is a new request.
                run.payload = amended
                run.revision += 1
        return True

    async def _compensate(self) -> None:
        """Undo completed reversible steps, most recent first, each once."""
        for step_id in reversed(self._completed):
            run, status = self._runs[step_id], self._steps[step_id]
            if not run.step.compensable or status.state != StepState.DONE:
                continue
            run.compensating = True
            status.state = StepState.COMPENSATING
            status.waiting_for = f"waiting for {run.step.system} to cancel the request"
            self._sync_visibility()
            while True:
                try:
                    await workflow.execute_activity(
                        COMPENSATE_STEP,
                        self._call(run, "compensate"),
                        task_queue=self._task_queue(run.step),
                        start_to_close_timeout=run.step.call_timeout + CALL_TIMEOUT_MARGIN,
                        retry_policy=COMPENSATION_RETRY,
                        result_type=StepCallResult,
                        summary=f"{step_id} compensation",
                    )
                except ActivityError as err:
                    closed = _classify(err, workflow.now())
                    if closed.kind == "held":
                        # An undo waits for a paused system like any call, and is never given up.
                        run.held, run.held_by = _held(err)
                        await self._await_release(run, closed, stoppable=False)
                        status.state = StepState.COMPENSATING
                        continue
                    if closed.kind == "closed":
                        # A closed system is waited for; an undo is never given up for its hours.
                        wait = max(closed.retry_after or timedelta(minutes=5), timedelta(seconds=1))
                        status.waiting_for = (
                            f"{run.step.system} is closed; the cancellation is sent when it opens "
                            f"at {(workflow.now() + wait).isoformat()}"
                        )
                        self._sync_visibility()
                        await workflow.sleep(wait)
                        continue
                    status.last_error = _classify(err, workflow.now(), kind="compensation")
                    decision = await self._park_compensation(run)
                    if decision.action is DecisionAction.RETRY:
                        status.state = StepState.COMPENSATING
                        status.waiting_for = f"waiting for {run.step.system} to cancel the request"
                        self._sync_visibility()
                        continue
                    if decision.action is DecisionAction.SKIP:
                        # The operator confirms the request was undone by other means.
                        self._end_step(
                            status, StepState.COMPENSATED, run.step.on_compensated or texts.COMPENSATED
                        )
                    else:
                        self._end_step(status, StepState.FAILED, texts.FAILED_BY_OPERATOR, exception=True)
                    break
                self._end_step(status, StepState.COMPENSATED, run.step.on_compensated or texts.COMPENSATED)
                break

    async def _park_compensation(self, run: _StepRun) -> StepDecision:
        status = self._steps[run.step.id]
        status.state = StepState.NEEDS_ATTENTION
        status.message = texts.UNDER_REVIEW
        status.waiting_for = (
            f"{run.step.system} could not cancel the request; retry, or confirm by hand and skip"
        )
        run.decision = None
        self._sync_visibility()
        await workflow.wait_condition(lambda: run.decision is not None)
        decision, run.decision = run.decision, None
        assert decision is not None
        return decision

    def _finish_bundle(self) -> None:
        if self._abort is Abort.WITHDRAWN:
            self._final = BundleState.WITHDRAWN
        elif self._abort is Abort.FAILED:
            self._final = BundleState.FAILED
        elif any(s.exception for s in self._steps.values()):
            self._final = BundleState.COMPLETED_WITH_EXCEPTIONS
        else:
            self._final = BundleState.COMPLETED
        self._sync_visibility()

    # ------------------------------------------------------------------ messages

    @workflow.query
    def status(self) -> BundleStatus:
        """The bundle's current state, every step's state, attempts, last error and reference."""
        return self._status()

    @workflow.query
    def timeline(self, request: TimelineRequest) -> BundleTimelineView:
        """What operations see: the status, every step's attempts, why it is stuck or held, and
        with `include_personal` the data each step sends."""
        reasons, systems = self._stuck()
        return BundleTimelineView(
            status=self._status(),
            steps=[
                StepTimelineView(
                    status=self._steps[step_id].model_copy(),
                    attempts=list(run.attempt_log),
                    stuck_reasons=self._step_stuck(run),
                    held_by=run.held_by,
                    payload=dict(run.payload) if request.include_personal else None,
                )
                for step_id, run in self._runs.items()
            ],
            stuck_reasons=sorted(set(reasons)),
            stuck_systems=sorted(set(systems)),
            stuck_since=self._stuck_since,
        )

    @workflow.signal(name=SIGNAL_SYSTEM_RELEASED)
    def system_released(self, release: SystemRelease) -> None:
        """The step's system lets its held call go (a resume, or a closed breaker)."""
        run = self._runs.get(release.step_id)
        if run is None or run.step.system != release.system_id or run.held is None:
            return
        run.released = release.generation

    @workflow.update
    async def decide(self, decision: StepDecision) -> DecisionResult:
        """An operator's decision for a step that needs attention (or a retry-now while retrying)."""
        run = self._runs[decision.step_id]
        state = self._steps[decision.step_id].state
        action = self._record(decision.step_id, decision.action.value, decision.actor, decision.reason, state)
        if state is StepState.RETRYING and decision.action is DecisionAction.RETRY:
            # Woken at once from its backoff: the attempt it makes is the one it was waiting for.
            run.retry_now = True
            action.after = StepState.RUNNING.value
        else:
            run.pending_action = action
            run.decision = decision
        return DecisionResult(
            step_id=decision.step_id, accepted=True, state=self._steps[decision.step_id].state
        )

    @decide.validator
    def _validate_decision(self, decision: StepDecision) -> None:
        if self._final is not None:
            raise ValueError(f"the bundle has already ended ({self._final.value})")
        if decision.step_id not in self._runs:
            raise ValueError(f"no step {decision.step_id!r} in this bundle")
        state = self._steps[decision.step_id].state
        run = self._runs[decision.step_id]
        if run.held is not None and decision.action is DecisionAction.RETRY:
            raise ValueError(
                f"calls to {run.step.system} are held ({run.held_by}); resume the system, "
                "or skip or fail the step"
            )
        on_retrying = state is StepState.RETRYING and not run.compensating
        if state is not StepState.NEEDS_ATTENTION and not (
            on_retrying and decision.action is not DecisionAction.AMEND
        ):
            raise ValueError(f"step {decision.step_id!r} is {state.value}, not waiting for a decision")
        if run.decision is not None:
            raise ValueError(f"step {decision.step_id!r} already has a decision being applied")
        if self._abort is not None and not run.compensating:
            raise ValueError(f"the bundle is stopping ({self._abort.value}); nothing more will be sent")
        if decision.action is DecisionAction.AMEND:
            last_error = self._steps[decision.step_id].last_error
            if not decision.amended_fields:
                raise ValueError("amend needs amended_fields")
            if run.compensating:
                raise ValueError("a cancellation cannot be amended; retry it or confirm it by hand")
            if (
                state is not StepState.NEEDS_ATTENTION
                or last_error is None
                or last_error.kind
                not in (
                    "rejected",
                    "needs_attention",
                )
            ):
                raise ValueError(
                    "only data a system refused or asked about can be amended; "
                    "after failed attempts the request may have arrived, so retry it instead"
                )
            unknown = leaf_paths(decision.amended_fields) - leaf_paths(self._runs[decision.step_id].payload)
            if unknown:
                raise ValueError(f"step {decision.step_id!r} does not receive {sorted(unknown)}")
        elif decision.amended_fields:
            raise ValueError("amended_fields are only accepted with the amend action")

    @workflow.update
    async def withdraw(self, request: WithdrawRequest) -> WithdrawResult:
        """Withdraw the bundle: nothing more is sent and reversible steps are undone."""
        action = self._record(None, "withdraw", request.actor, request.reason, self._state())
        self._abort = Abort.WITHDRAWN
        self._sync_visibility()
        action.after = "withdrawing"
        return WithdrawResult(accepted=True, state=self._state())

    @withdraw.validator
    def _validate_withdraw(self, request: WithdrawRequest) -> None:
        if self._final is not None:
            raise ValueError(f"the bundle has already ended ({self._final.value})")
        if self._abort is not None:
            raise ValueError(f"the bundle is already stopping ({self._abort.value})")

    @workflow.signal(name=SIGNAL_LEGACY_REPLY)
    def legacy_reply(self, reply: LegacyReply) -> None:
        """A legacy system's asynchronous answer, correlated by the request's idempotency key.

        Kept only while its step can still use it (a reply may overtake the acknowledgement of
        its own request); duplicates and replies to finished steps are ignored.
        """
        parsed = parse_idempotency_key(reply.correlation_id)
        step = self._steps.get(parsed[1]) if parsed else None
        if parsed is None or parsed[0] != workflow.info().workflow_id or step is None:
            workflow.logger.warning("Ignored a reply for no step of this bundle (%s)", reply.system)
            return
        if reply.system != step.system:
            workflow.logger.warning(
                "Ignored a reply from %s for step %s of %s", reply.system, step.id, step.system
            )
            return
        duplicate = reply.reply_id is not None and reply.reply_id in self._seen_reply_ids
        if duplicate or step.state in FINAL_STEP_STATES or reply.correlation_id in self._replies:
            workflow.logger.info("Ignored a duplicate or late reply for step %s", step.id)
            return
        if reply.reply_id is not None:
            self._seen_reply_ids.add(reply.reply_id)
        self._replies[reply.correlation_id] = reply

    @workflow.signal(name=SIGNAL_BIRTH_NOTICE_RESULT)
    def birth_notice_result(self, result: NoticeMatchResult) -> None:
        """The birth-notice matcher's verdict for a step's statement (matched, or in conflict)."""
        step = self._steps.get(result.step_id)
        if step is None or step.state in FINAL_STEP_STATES or self._runs[result.step_id].notice_id:
            return
        self._notices[result.step_id] = result

    # ------------------------------------------------------------------ status events

    def _announce(self, state: BundleState) -> None:
        """Queue an event for every step and bundle state that changed since the last one."""
        for step in self._steps.values():
            if self._announced_steps.get(step.id) is not step.state:
                self._announced_steps[step.id] = step.state
                self._queue_event(STEP_STATE_CHANGED, state, step)
        if self._announced_state is not state:
            self._announced_state = state
            self._queue_event(BUNDLE_STATE_CHANGED, state, None)

    def _queue_event(self, kind: str, state: BundleState, step: StepStatus | None) -> None:
        bundle = self._bundle()
        self._event_sequence += 1
        data = BundleEventData(
            tracking_id=bundle.submission_id,
            bundle_id=bundle.plan.bundle_id,
            definition_version=bundle.plan.definition_version,
            channel=bundle.channel,
            external_id=bundle.external_id,
            sequence=self._event_sequence,
            bundle_state=state,
        )
        if step is not None:
            data.step_id = step.id
            data.step_state = step.state
            data.attempts = step.attempts
            data.reference = step.reference
            data.error_code = step.last_error.code if step.last_error else None
        self._outbox.append(
            BundleEvent.model_validate(
                {
                    "id": f"{bundle.submission_id}:{self._event_sequence}",
                    "type": kind,
                    "source": f"{EVENT_SOURCE_PREFIX}{bundle.plan.bundle_id}",
                    "subject": bundle.submission_id,
                    "time": workflow.now(),
                    "data": data,
                }
            )
        )

    async def _publish_events(self) -> None:
        """Publish queued events in order, one batch at a time, beside the steps' own calls."""
        if self._bundle().engine_revision >= INLINE_BOOKKEEPING_REVISION:
            await self._publish_events_inline()
        else:
            await self._publish_events_queued()

    async def _publish_events_inline(self) -> None:
        """Publish each workflow task's changes as a local activity, within that task.

        A batch costs one marker event and no workflow task of its own. When the broker does not
        take a batch within `INLINE_EVENTS_TIMEOUT`, the bundle publishes on the events queue
        from then on (retried there without limit, never holding up its calls): one slow batch
        per bundle at most, however long the broker stays slow.
        """
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox) or self._outbox_closed)
            await self._settle_workflow_task()
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, []
            if self._events_queued:
                await self._publish_batch_queued(batch)
                continue
            try:
                await self._inline(
                    functools.partial(
                        workflow.execute_local_activity,
                        PUBLISH_BUNDLE_EVENTS,
                        EventBatch(tracking_id=self._bundle().submission_id, events=batch),
                        schedule_to_close_timeout=INLINE_EVENTS_TIMEOUT,
                        retry_policy=SINGLE_ATTEMPT,
                        summary=f"events {batch[0].data.sequence}-{batch[-1].data.sequence}",
                    )
                )
            except FailureError:
                # A local activity's failure arrives as its cause (an ApplicationError or a
                # timeout), not wrapped in an ActivityError.
                workflow.logger.warning("Status events not published inline; publishing on the events queue")
                self._events_queued = True
                self._outbox = batch + self._outbox

    async def _settle_workflow_task(self) -> None:
        """Return once this workflow task has nothing left to change: one batch per task.

        The publisher wakes with the first change; the steps woken with it (or by it) change
        more in the rounds that follow, and an inline statement offer answers within the task.
        Waiting for both costs no command, so nothing in the history.
        """
        while True:
            queued = len(self._outbox)
            await workflow.wait_condition(lambda: True)
            await workflow.wait_condition(lambda: not self._inline_calls_in_flight)
            if len(self._outbox) == queued:
                return

    async def _publish_events_queued(self) -> None:
        """Publish as activities on the events queue (bundles started before engine revision 2).

        Queued events wait for the calls in flight to be answered (at most `EVENTS_HOLD_MAX`),
        so that a call and its answer go out in one batch: each batch is an activity and a
        workflow task in the bundle's history. The bundle's last events never wait.
        """
        coalesce = workflow.patched(EVENTS_COALESCED_PATCH)
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox) or self._outbox_closed)
            if coalesce and self._calls_in_flight and not self._outbox_closed:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: not self._calls_in_flight or self._outbox_closed, timeout=EVENTS_HOLD_MAX
                    )
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, []
            await self._publish_batch_queued(batch)

    async def _publish_batch_queued(self, batch: list[BundleEvent]) -> None:
        """One batch as an activity on the events queue, requeued if the activity gave up."""
        try:
            await workflow.execute_activity(
                PUBLISH_BUNDLE_EVENTS,
                EventBatch(tracking_id=self._bundle().submission_id, events=batch),
                task_queue=events_task_queue(self._bundle().task_queue_prefix),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=EVENTS_RETRY,
                summary=f"events {batch[0].data.sequence}-{batch[-1].data.sequence}",
            )
        except ActivityError:
            # Only a non-retryable failure gets here; events are never dropped, so keep
            # them first in line and try again later.
            workflow.logger.error("Publishing status events failed; trying again")
            self._outbox = batch + self._outbox
            await workflow.sleep(EVENTS_PAUSE_AFTER_FAILURE)

    async def _in_flight(self, call: Awaitable[_T]) -> _T:
        """Await a call whose answer will change a step, counted so status events can wait for it."""
        self._calls_in_flight += 1
        try:
            return await call
        finally:
            self._calls_in_flight -= 1

    async def _inline(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a local activity, one at a time, counted so the task's status events wait for it.

        One at a time because the SDK hands concurrent local activities' results back in the
        order they finished on first execution but in the order they were scheduled on replay:
        two in flight at once could resume their coroutines in another order on replay.
        """
        self._inline_calls_in_flight += 1
        try:
            async with self._inline_lock:
                return await call()
        finally:
            self._inline_calls_in_flight -= 1

    async def _close_outbox(self, publisher: asyncio.Future[None] | None) -> None:
        """Finish only once every event has been published (a cancelled bundle too)."""
        if publisher is None:
            return
        self._outbox_closed = True
        await asyncio.shield(publisher)

    # ------------------------------------------------------------------ bookkeeping

    def _submit_key(self, run: _StepRun) -> str:
        return idempotency_key(workflow.info().workflow_id, run.step.id, "submit", run.revision)

    def _call(self, run: _StepRun, operation: str) -> StepCall:
        bundle = self._bundle()
        fields = dict(run.payload)
        if run.step.references:
            fields["references"] = {n: self._steps[n].reference for n in run.step.references}
        if run.notice_id is not None:
            fields["birth_notice"] = {"notice_id": run.notice_id}
        return StepCall(
            bundle_ref=bundle.submission_id,
            bundle_id=bundle.plan.bundle_id,
            step_id=run.step.id,
            system=run.step.system,
            # Only an amended request is a new one; cancelling it is the same act whatever its data.
            idempotency_key=idempotency_key(
                workflow.info().workflow_id,
                run.step.id,
                operation,
                run.revision if operation == "submit" else 0,
            ),
            attempt=self._steps[run.step.id].attempts,
            control_pass=run.control_pass,
            timeout=run.step.call_timeout,
            fields=fields,
            reference=self._steps[run.step.id].reference,
        )

    def _task_queue(self, step: PlannedStep) -> str:
        return legacy_task_queue(self._bundle().task_queue_prefix, step.system)

    def _bundle(self) -> BundleInput:
        assert self._input is not None
        return self._input

    def _end_step(
        self, status: StepStatus, state: StepState, message: LocalizedText | None, *, exception: bool = False
    ) -> None:
        status.state = state
        status.message = message
        status.exception = status.exception or exception
        status.waiting_for = None
        status.next_attempt_at = None
        status.finished_at = workflow.now()
        self._sync_visibility()

    def _abort_message(self) -> LocalizedText:
        return texts.STOPPED_WITHDRAWN if self._abort is Abort.WITHDRAWN else texts.STOPPED_BUNDLE_FAILED

    def _record(
        self, step_id: str | None, action: str, actor: str, reason: str, before: StepState | BundleState
    ) -> OperatorAction:
        recorded = OperatorAction(
            step_id=step_id, action=action, actor=actor, reason=reason, at=workflow.now(), before=before.value
        )
        self._actions.append(recorded)
        return recorded

    def _state(self) -> BundleState:
        if self._final is not None:
            return self._final
        states = [s.state for s in self._steps.values()]
        if StepState.NEEDS_ATTENTION in states:
            return BundleState.NEEDS_ATTENTION
        if all(s is StepState.PENDING or s is StepState.SKIPPED for s in states) and not any(
            s.attempts for s in self._steps.values()
        ):
            return BundleState.RECEIVED
        return BundleState.IN_PROGRESS

    def _sync_visibility(self) -> None:
        """Keep search attributes and the UI's current details in step with the bundle."""
        state = self._state()
        attention = tuple(s.id for s in self._steps.values() if s.state is StepState.NEEDS_ATTENTION)
        waiting = [f"{s.id}: {s.waiting_for}" for s in self._steps.values() if s.waiting_for]
        workflow.set_current_details(
            f"**{state.value}**\n\n" + "\n".join(f"- {line}" for line in waiting) if waiting else state.value
        )
        if self._bundle().publish_events:
            self._announce(state)
        reasons, systems = self._stuck()
        stuck = (tuple(sorted({r.value for r in reasons})), tuple(sorted(set(systems))))
        stuck_changed = stuck != self._stuck_visible
        if stuck_changed:
            self._stuck_visible = stuck
            if not stuck[0]:
                self._stuck_since = None
            elif self._stuck_since is None:
                self._stuck_since = workflow.now()
        if (state.value, attention) == self._visible and not stuck_changed:
            return
        self._visible = (state.value, attention)
        if not self._bundle().upsert_search_attributes:
            return
        updates: list[SearchAttributeUpdate[Any]] = [
            SA_STATE.value_set(state.value),
            SA_ATTENTION_STEPS.value_set(list(attention)),
        ]
        # Only bundles that ever get stuck carry the patch marker: the happy path pays nothing.
        if stuck_changed and workflow.patched(STUCK_VISIBILITY_PATCH):
            updates += [
                SA_STUCK.value_set(bool(stuck[0])),
                SA_STUCK_REASONS.value_set(list(stuck[0])),
                SA_STUCK_SYSTEMS.value_set(list(stuck[1])),
                SA_STUCK_SINCE.value_set(self._stuck_since)
                if self._stuck_since is not None
                else SA_STUCK_SINCE.value_unset(),
            ]
        workflow.upsert_search_attributes(updates)

    def _stuck(self) -> tuple[list[StuckReason], list[str]]:
        """Why the bundle is stuck now (empty when it is not), and the systems its stuck steps wait on."""
        reasons: list[StuckReason] = []
        systems: list[str] = []
        if self._final is not None:
            return reasons, systems
        for run in self._runs.values():
            found = self._step_stuck(run)
            if found:
                reasons += found
                systems.append(run.step.system)
        return reasons, systems

    def _step_stuck(self, run: _StepRun) -> list[StuckReason]:
        status = self._steps[run.step.id]
        found: list[StuckReason] = []
        if run.held is not None:
            found.append(run.held)
        if status.state is StepState.NEEDS_ATTENTION:
            found.append(StuckReason.NEEDS_ATTENTION)
            found += run.park_reasons
        elif status.state is StepState.RETRYING and run.attempts_in_round >= self._stuck_after(run.step):
            found.append(StuckReason.RETRIES_EXCEEDED)
        return found

    def _stuck_after(self, step: PlannedStep) -> int:
        bundle = self._bundle()
        return bundle.stuck_after_attempts_by_system.get(step.system, bundle.stuck_after_attempts)

    def _status(self) -> BundleStatus:
        bundle = self._bundle()
        updated = max(
            [bundle.received_at]
            + [t for s in self._steps.values() for t in (s.started_at, s.finished_at) if t is not None]
        )
        return BundleStatus(
            submission_id=bundle.submission_id,
            bundle_id=bundle.plan.bundle_id,
            definition_version=bundle.plan.definition_version,
            jurisdiction=bundle.plan.jurisdiction,
            state=self._state(),
            received_at=bundle.received_at,
            updated_at=updated,
            pivot_done=self._pivot_done,
            steps=[s.model_copy() for s in self._steps.values()],
            actions=list(self._actions),
        )


_ERROR_KINDS: dict[str, ErrorKind] = {
    STEP_CLOSED: "closed",
    STEP_HELD: "held",
    STEP_REJECTED: "rejected",
    STEP_NEEDS_ATTENTION: "needs_attention",
}


def _classify(err: ActivityError, now: datetime, kind: ErrorKind | None = None) -> StepError:
    """Turn an activity failure into the step's last error (no personal data in it)."""
    cause = err.cause
    if isinstance(cause, ActivityTimeoutError):
        return StepError(kind=kind or "timeout", code="call_timed_out", message=texts.RETRYING, at=now)
    if isinstance(cause, ApplicationError):
        details = ErrorDetails.model_validate(cause.details[0]) if cause.details else None
        return StepError(
            kind=kind or _ERROR_KINDS.get(cause.type or "", "transient"),
            code=details.code if details else (cause.type or "error"),
            message=details.message if details else texts.RETRYING,
            retry_after=details.retry_after if details else None,
            at=now,
        )
    return StepError(kind=kind or "transient", code="activity_failed", message=texts.RETRYING, at=now)


def _failure_type(err: FailureError) -> str | None:
    """The application error type of a failure, whether wrapped in an ActivityError or not."""
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause.type if isinstance(cause, ApplicationError) else None


def _held(err: ActivityError) -> tuple[StuckReason, str]:
    """Why a held call was held: the stuck reason and the plain words the worker gave."""
    cause = err.cause
    details = (
        ErrorDetails.model_validate(cause.details[0])
        if isinstance(cause, ApplicationError) and cause.details
        else None
    )
    reason = (
        StuckReason.BREAKER_OPEN
        if details and details.held_reason == "breaker_open"
        else StuckReason.SYSTEM_PAUSED
    )
    return reason, (
        details.explanation if details and details.explanation else "calls to the system are held"
    )


def _backoff(step: PlannedStep, attempt: int) -> timedelta:
    seconds = step.retry.initial_interval.total_seconds() * step.retry.backoff_coefficient ** (attempt - 1)
    return min(timedelta(seconds=seconds), step.retry.maximum_interval)
