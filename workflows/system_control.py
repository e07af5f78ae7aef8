"""`SystemControlWorkflow`: one per legacy system; holds calls to it while it is paused or its
circuit breaker is open, and releases them gradually afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import Model

SIGNAL_HOLD = "hold"
SIGNAL_REPORT = "report"
SIGNAL_SYSTEM_RELEASED = "system_released"
"""Sent by the control workflow to a bundle whose held call may now go."""
QUERY_STATE = "state"


class BreakerState(StrEnum):
    """A circuit breaker's state: closed lets calls through, open holds them, half-open probes."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(Model):
    """When a system's breaker opens and how it probes before closing again."""

    window: timedelta = Field(default=timedelta(seconds=60), description="How far back outcomes count.")
    min_calls: int = Field(default=10, ge=1, description="No verdict on fewer calls than this in the window.")
    failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="Share of failed or throttled calls that opens the breaker."
    )
    open_for: timedelta = Field(
        default=timedelta(seconds=30), description="How long it stays open before one probe call."
    )


class HeldCall(Model):
    """A bundle step whose call the system's state held back, waiting for its release."""

    workflow_id: str
    step_id: str
    held_at: datetime | None = None


class OutcomeReport(Model):
    """Outcomes of calls to the system, counted by a worker since its last report."""

    calls: int = Field(ge=0)
    failures: int = Field(ge=0, description="Transient errors and timeouts: the system failing.")
    throttled: int = Field(default=0, ge=0, description="429s and Retry-After answers.")
    probe: bool = Field(default=False, description="The report is the outcome of a half-open probe.")


class PauseRequest(Model):
    """An operator pausing calls to the system (a planned outage, an incident)."""

    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=1000)


class ResumeRequest(Model):
    """An operator resuming calls; held calls are released at `release_per_s`."""

    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=1000)
    release_per_s: float | None = Field(default=None, gt=0)


class ControlEvent(Model):
    """One change of a system's control state, for the operators' record."""

    at: datetime
    kind: Literal["paused", "resumed", "breaker_opened", "breaker_half_open", "breaker_closed"]
    actor: str | None = None
    reason: str | None = None


class SystemControlState(Model):
    """A legacy system's control state, as bundles' calls and operators see it."""

    system_id: str
    paused: bool = False
    paused_by: str | None = None
    paused_reason: str | None = None
    paused_since: datetime | None = None
    breaker: BreakerState = BreakerState.CLOSED
    breaker_since: datetime | None = None
    generation: int = Field(
        default=0, description="Grows with every change that holds or releases calls; a release carries it."
    )
    held: int = Field(default=0, description="Calls waiting for their release.")
    release_per_s: float
    calls_in_window: int = 0
    failures_in_window: int = 0
    error_rate: float | None = None
    history: list[ControlEvent] = Field(
        default_factory=list, description="The latest pauses, resumes and breaker moves."
    )

    @property
    def holding(self) -> bool:
        """Whether calls without a release of this generation are held."""
        return self.paused or self.breaker is not BreakerState.CLOSED

    def explanation(self, display_name: str) -> str:
        """Why calls to the system are held, in plain words."""
        if self.paused:
            since = self.paused_since.strftime("%Y-%m-%d %H:%M UTC") if self.paused_since else "now"
            return f"{display_name} paused by {self.paused_by} ({self.paused_reason}) since {since}"
        since = self.breaker_since.strftime("%Y-%m-%d %H:%M:%S UTC") if self.breaker_since else "now"
        rate = f"{self.error_rate:.0%} of calls failing" if self.error_rate is not None else "failing"
        if self.breaker is BreakerState.HALF_OPEN:
            return f"{display_name} circuit breaker half-open (probing after {rate}) since {since}"
        return f"{display_name} circuit breaker open ({rate}) since {since}"


class SystemControlInput(Model):
    """What starts (or continues) a system's control workflow."""

    system_id: str
    release_per_s: float = Field(default=5.0, gt=0, description="Held calls released per second.")
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    carried: SystemControlState | None = Field(default=None, description="State from the previous run.")
    waiting: list[HeldCall] = Field(default_factory=list, description="Held calls from the previous run.")
    buckets: list[tuple[datetime, int, int]] = Field(default_factory=list)


class SystemRelease(Model):
    """A held call's release: the bundle sends it again, with `generation` as its pass."""

    system_id: str
    step_id: str
    generation: int


HISTORY_KEPT = 20
CONTINUE_AFTER_EVENTS = 5000


@workflow.defn
class SystemControlWorkflow:
    """Holds and releases calls to one legacy system.

    Guarantees:
    * While the system is paused or its breaker is open, every call that reaches a worker is held
      (not sent, not counted as an attempt) and registered here; each held call is released once
      the system is resumed or the breaker closes, in the order it was held.
    * Releases go out at no more than `release_per_s`, so a system that just came back is not
      flooded by everything that waited for it.
    * The breaker opens when failures (transient errors, timeouts, 429s) reach `failure_rate` of at
      least `min_calls` calls within `window`; after `open_for` one held call goes as a probe, and
      only its success closes the breaker (its failure opens it again).
    """

    @workflow.init
    def __init__(self, control: SystemControlInput) -> None:
        self._input = control
        self._state = control.carried or SystemControlState(
            system_id=control.system_id, release_per_s=control.release_per_s
        )
        self._waiting: deque[HeldCall] = deque(control.waiting)
        self._buckets: deque[tuple[datetime, int, int]] = deque(control.buckets)
        self._probe_out = False
        self._changed = False

    @workflow.run
    async def run(self, control: SystemControlInput) -> None:
        """Release held calls whenever the system lets calls through; continue as new when long."""
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._changed or self._releasable() or self._half_open_due() or self._too_long(),
                    timeout=self._next_wake(),
                )
            self._changed = False
            if self._half_open_due():
                self._move_breaker(BreakerState.HALF_OPEN, None)
            if self._releasable():
                await self._release_some()
            if self._too_long() and not self._releasable():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    SystemControlInput(
                        system_id=self._state.system_id,
                        release_per_s=self._input.release_per_s,
                        breaker=self._input.breaker,
                        carried=self._state,
                        waiting=list(self._waiting),
                        buckets=list(self._buckets),
                    )
                )

    # ------------------------------------------------------------------ messages

    @workflow.query(name=QUERY_STATE)
    def state(self) -> SystemControlState:
        """The system's control state now (held calls, breaker, error rate over the window)."""
        calls, failures = self._window_totals()
        return self._state.model_copy(
            update={
                "held": len(self._waiting),
                "calls_in_window": calls,
                "failures_in_window": failures,
                "error_rate": failures / calls if calls else self._state.error_rate,
            }
        )

    @workflow.update
    def pause(self, request: PauseRequest) -> SystemControlState:
        """Hold every call to the system until it is resumed."""
        now = workflow.now()
        self._state.paused = True
        self._state.paused_by = request.actor
        self._state.paused_reason = request.reason
        self._state.paused_since = now
        self._state.generation += 1
        self._note("paused", request.actor, request.reason)
        self._changed = True
        return self.state()

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        if self._state.paused:
            raise ValueError(f"{self._state.system_id} is already paused by {self._state.paused_by}")

    @workflow.update
    def resume(self, request: ResumeRequest) -> SystemControlState:
        """Let calls through again; held ones are released gradually."""
        self._state.paused = False
        self._state.paused_by = self._state.paused_reason = None
        self._state.paused_since = None
        if request.release_per_s is not None:
            self._state.release_per_s = request.release_per_s
        self._state.generation += 1
        self._note("resumed", request.actor, request.reason)
        self._changed = True
        return self.state()

    @resume.validator
    def _validate_resume(self, request: ResumeRequest) -> None:
        if not self._state.paused:
            raise ValueError(f"{self._state.system_id} is not paused")

    @workflow.signal(name=SIGNAL_HOLD)
    def hold(self, call: HeldCall) -> None:
        """A worker held a bundle's call: release it when the system lets calls through."""
        if any(w.workflow_id == call.workflow_id and w.step_id == call.step_id for w in self._waiting):
            return
        self._waiting.append(call.model_copy(update={"held_at": call.held_at or workflow.now()}))
        self._changed = True

    @workflow.signal(name=SIGNAL_REPORT)
    def report(self, outcome: OutcomeReport) -> None:
        """Outcomes of calls to the system: feeds the breaker."""
        now = workflow.now()
        failed = outcome.failures + outcome.throttled
        if outcome.probe and self._state.breaker is BreakerState.HALF_OPEN:
            self._probe_out = False
            self._move_breaker(BreakerState.OPEN if failed else BreakerState.CLOSED, None)
        self._buckets.append((now, outcome.calls, failed))
        self._trim_window()
        if self._state.breaker is BreakerState.CLOSED:
            calls, failures = self._window_totals()
            self._state.error_rate = failures / calls if calls else None
            policy = self._input.breaker
            if calls >= policy.min_calls and failures / calls >= policy.failure_rate:
                self._move_breaker(BreakerState.OPEN, f"{failures} of {calls} calls failed")
        self._changed = True

    # ------------------------------------------------------------------ bookkeeping

    def _releasable(self) -> bool:
        if not self._waiting or self._state.paused:
            return False
        if self._state.breaker is BreakerState.OPEN:
            return False
        # Half-open: exactly one call goes, as the probe whose outcome decides.
        return self._state.breaker is BreakerState.CLOSED or not self._probe_out

    def _half_open_due(self) -> bool:
        since = self._state.breaker_since
        return (
            self._state.breaker is BreakerState.OPEN
            and since is not None
            and workflow.now() >= since + self._input.breaker.open_for
        )

    def _next_wake(self) -> timedelta | None:
        if self._state.breaker is BreakerState.OPEN and self._state.breaker_since is not None:
            return max(
                self._state.breaker_since + self._input.breaker.open_for - workflow.now(),
                timedelta(milliseconds=1),
            )
        return None

    def _too_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > CONTINUE_AFTER_EVENTS
        )

    async def _release_some(self) -> None:
        """Release up to one second's worth of held calls, then wait out the second."""
        rate = self._state.release_per_s
        tick = timedelta(seconds=max(1.0, 1.0 / rate))
        batch = (
            1
            if self._state.breaker is BreakerState.HALF_OPEN
            else max(1, math.floor(rate * tick.total_seconds()))
        )
        generation = self._state.generation
        sent: list[HeldCall] = []
        while self._waiting and len(sent) < batch:
            call = self._waiting.popleft()
            sent.append(call)
        if self._state.breaker is BreakerState.HALF_OPEN:
            self._probe_out = True
        await asyncio.gather(*(self._release(call, generation) for call in sent))
        await workflow.sleep(tick)

    async def _release(self, call: HeldCall, generation: int) -> None:
        handle = workflow.get_external_workflow_handle(call.workflow_id)
        try:
            await handle.signal(
                SIGNAL_SYSTEM_RELEASED,
                SystemRelease(system_id=self._state.system_id, step_id=call.step_id, generation=generation),
            )
        except Exception:
            workflow.logger.info("A held bundle ended before its release")

    def _move_breaker(self, to: BreakerState, reason: str | None) -> None:
        if self._state.breaker is to:
            return
        self._state.breaker = to
        self._state.breaker_since = workflow.now()
        self._state.generation += 1
        if to is BreakerState.CLOSED:
            # A fresh start: the failures that opened it are not held against the recovered system.
            self._buckets.clear()
            self._state.error_rate = None
        kind: Literal["breaker_opened", "breaker_half_open", "breaker_closed"] = (
            "breaker_opened"
            if to is BreakerState.OPEN
            else "breaker_half_open"
            if to is BreakerState.HALF_OPEN
            else "breaker_closed"
        )
        self._note(kind, None, reason)

    def _note(
        self,
        kind: Literal["paused", "resumed", "breaker_opened", "breaker_half_open", "breaker_closed"],
        actor: str | None,
        reason: str | None,
    ) -> None:
        self._state.history.append(ControlEvent(at=workflow.now(), kind=kind, actor=actor, reason=reason))
        del self._state.history[:-HISTORY_KEPT]

    def _window_totals(self) -> tuple[int, int]:
        """Calls and failures reported within the breaker's window (read only: queries use it)."""
        horizon = workflow.now() - self._input.breaker.window
        recent = [(c, f) for at, c, f in self._buckets if at >= horizon]
        return sum(c for c, _ in recent), sum(f for _, f in recent)

    def _trim_window(self) -> None:
        horizon = workflow.now() - self._input.breaker.window
        while self._buckets and self._buckets[0][0] < horizon:
            self._buckets.popleft()
