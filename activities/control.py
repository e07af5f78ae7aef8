"""A worker's gate in front of each legacy system: holds calls while the system is paused or its
circuit breaker is open, and reports call outcomes that feed the breaker.

The state lives in the system's `SystemControlWorkflow`; each worker keeps a copy for
`refresh` so a call costs no round trip to Temporal on the happy path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.models import STEP_HELD, ErrorDetails, StepCall
from bundles.models import LocalizedText
from workflows.names import system_control_id
from workflows.system_control import (
    QUERY_STATE,
    SIGNAL_HOLD,
    SIGNAL_REPORT,
    BreakerState,
    HeldCall,
    OutcomeReport,
    SystemControlState,
)

log = structlog.get_logger("tellonce.activities.control")

HELD_MESSAGE = LocalizedText(
    en="The program's system is temporarily unavailable; your request will be sent when it is back.",
    fr="Le système du programme est temporairement indisponible; votre demande sera envoyée à son retour.",
)

QUERY_TIMEOUT = timedelta(seconds=2)
"""A control workflow that cannot answer this fast is treated as unreadable: calls go on."""

Outcome = Literal["ok", "failed", "throttled"]


@dataclass
class _Copy:
    state: SystemControlState | None
    fetched: float


@dataclass
class _Counts:
    calls: int = 0
    failures: int = 0
    throttled: int = 0
    last_flush: float = field(default_factory=time.monotonic)


class SystemGate:
    """Holds calls to systems that hold calls, and reports outcomes to their control workflows."""

    def __init__(
        self,
        client: Client,
        task_queue_prefix: str,
        *,
        refresh: timedelta = timedelta(seconds=1),
        report_every: timedelta = timedelta(seconds=1),
    ) -> None:
        self._client = client
        self._prefix = task_queue_prefix
        self._refresh = refresh.total_seconds()
        self._report_every = report_every.total_seconds()
        self._copies: dict[str, _Copy] = {}
        self._counts: dict[str, _Counts] = {}

    async def check(self, call: StepCall, display_name: str) -> bool:
        """Raise `SystemHeld` (non-retryable) when the call must wait; True when it is a probe.

        A call released by its control workflow carries the generation of that release: it goes
        even if this worker's copy of the state is older (the copy is refreshed first).
        """
        state = await self._state(call.system, at_least=call.control_pass)
        if state is None or not state.holding:
            return False
        if call.control_pass is not None and call.control_pass >= state.generation:
            return state.breaker is BreakerState.HALF_OPEN and not state.paused
        await self._register(call)
        explanation = state.explanation(display_name)
        held_reason = "system_paused" if state.paused else "breaker_open"
        log.info("step.held", system=call.system, step=call.step_id, held_reason=held_reason)
        raise ApplicationError(
            f"held: {held_reason}",
            ErrorDetails(
                code=held_reason, message=HELD_MESSAGE, explanation=explanation, held_reason=held_reason
            ),
            type=STEP_HELD,
            non_retryable=True,
        )

    async def record(self, system: str, outcome: Outcome, *, probe: bool = False) -> None:
        """Count one call's outcome; send the counts when due (a probe's at once)."""
        counts = self._counts.setdefault(system, _Counts())
        counts.calls += 1
        counts.failures += outcome == "failed"
        counts.throttled += outcome == "throttled"
        now = time.monotonic()
        if not probe and now - counts.last_flush < self._report_every:
            return
        report = OutcomeReport(
            calls=counts.calls, failures=counts.failures, throttled=counts.throttled, probe=probe
        )
        self._counts[system] = _Counts(last_flush=now)
        try:
            await self._client.get_workflow_handle(system_control_id(self._prefix, system)).signal(
                SIGNAL_REPORT, report
            )
        except RPCError as err:
            # No control workflow (or Temporal busy): the breaker misses these counts, calls go on.
            log.warning("system_control.report_failed", system=system, error=err.status.name)
        if probe:
            self._copies.pop(system, None)  # the probe's verdict changes the state: read it afresh

    async def _state(self, system: str, *, at_least: int | None) -> SystemControlState | None:
        copy = self._copies.get(system)
        now = time.monotonic()
        stale = copy is None or now - copy.fetched >= self._refresh
        behind = (
            at_least is not None
            and copy is not None
            and (copy.state is None or copy.state.generation < at_least)
        )
        if copy is not None and not stale and not behind:
            return copy.state
        try:
            state: SystemControlState | None = await self._client.get_workflow_handle(
                system_control_id(self._prefix, system)
            ).query(QUERY_STATE, result_type=SystemControlState, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError) as err:
            # No control workflow means nobody paused the system; an unreachable one must not stop
            # every call, so the last known state (or none) stands.
            log.debug("system_control.unreadable", system=system, error=type(err).__name__)
            state = copy.state if copy is not None else None
        self._copies[system] = _Copy(state=state, fetched=now)
        return state

    async def _register(self, call: StepCall) -> None:
        info = activity.info()
        try:
            await self._client.get_workflow_handle(system_control_id(self._prefix, call.system)).signal(
                SIGNAL_HOLD,
                HeldCall(
                    workflow_id=info.workflow_id or call.bundle_ref,
                    step_id=call.step_id,
                    held_at=datetime.now(UTC),
                ),
            )
        except RPCError as err:
            # The bundle looks again after a while by itself: the call is not lost.
            log.warning("system_control.hold_unregistered", system=call.system, error=err.status.name)
