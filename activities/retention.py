"""Retention: past the retention period, a closed bundle keeps only its non-personal record.

`RetentionSweeper` does one round: it finds a deployment's bundles closed longer ago than the
retention period (a visibility query), writes each one's record, then deletes its Temporal
execution, whose history holds the submission. Closed birth-notice matchers past the period are
deleted too (they hold health-number facts; only their count is kept). The sweep activity runs
one round for `RetentionSweepWorkflow`; `tellonce retention sweep` runs one from the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from pydantic import Field
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from infra.intake import FINGERPRINT_MEMO
from infra.records import BundleRecord, RecordStore, record_from_status
from workflows.bundle import BundleWorkflow
from workflows.models import BundleInput, BundleStatus, Model
from workflows.names import bundle_task_queue

log = structlog.get_logger("tellonce.retention")

SWEEP_EXPIRED_BUNDLES = "sweep_expired_bundles"
"""Name of the activity that runs one retention round."""

RETENTION_SWEEP_WORKFLOW = "RetentionSweep"
"""Workflow type of `RetentionSweepWorkflow`."""

BUNDLE_WORKFLOW_TYPE = "BundleWorkflow"
BIRTH_NOTICE_WORKFLOW_TYPE = "BirthNoticeMatchWorkflow"

DEFAULT_SWEEP_INTERVAL = timedelta(hours=1)
"""Pause between two rounds of the sweeper."""

DEFAULT_BATCH_SIZE = 200
"""Most bundles (and, apart, matchers) one round removes."""

SCAN_FACTOR = 4
"""A round looks at no more than this many times its batch, so bundles it must leave for later
(their status could not be read) never keep it from the rest."""

NAMESPACE_RETENTION_MARGIN = timedelta(days=1)
"""Extra time Temporal keeps closed executions beyond the retention period and one sweep interval."""

STATUS_READ_TIMEOUT = timedelta(seconds=10)
"""How long reading one closed bundle may take (a query waits for a worker to replay it)."""


def retention_sweeper_id(task_queue_prefix: str) -> str:
    """The fixed workflow id of a deployment's sweeper, so every worker finds the same one."""
    return f"{task_queue_prefix}.retention"


def namespace_retention_needed(
    retention_period: timedelta, sweep_interval: timedelta = DEFAULT_SWEEP_INTERVAL
) -> timedelta:
    """The least namespace retention that lets the sweep record every bundle before Temporal deletes it."""
    return retention_period + sweep_interval + NAMESPACE_RETENTION_MARGIN


class SweepRequest(Model):
    """What one round does."""

    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    dry_run: bool = Field(default=False, description="Only list what would be removed; change nothing.")


class ExpiredBundle(Model):
    """A bundle past retention, as a dry run lists it (its tracking id and close time only)."""

    tracking_id: str
    closed_at: datetime


class SweepResult(Model):
    """What one round did: counts, and with a dry run the bundles it would remove."""

    expired: int = Field(default=0, description="Closed bundles past retention looked at.")
    recorded: int = Field(default=0, description="Records written.")
    removed: int = Field(default=0, description="Bundle executions deleted.")
    already_gone: int = Field(default=0, description="Bundles another sweep had already removed.")
    deferred: int = Field(default=0, description="Bundles whose status could not be read: next round.")
    resumed: int = Field(default=0, description="Deletions an earlier, interrupted round had left to do.")
    notices_removed: int = Field(default=0, description="Closed birth-notice matchers deleted.")
    more: bool = Field(default=False, description="The round stopped at its batch size: more are waiting.")
    would_remove: list[ExpiredBundle] = Field(default_factory=list)
    would_remove_notices: int = 0


class SweepProgress(Model):
    """A sweeper's running totals, carried across continue-as-new."""

    rounds: int = 0
    recorded: int = 0
    removed: int = 0
    notices_removed: int = 0
    deferred_last_round: int = 0
    failed_rounds: int = 0
    last_round_at: datetime | None = None
    last_round: SweepResult | None = None

    def after(self, result: SweepResult | None, at: datetime) -> SweepProgress:
        """These totals once a round has ended (`None`: the round failed)."""
        if result is None:
            return self.model_copy(
                update={
                    "rounds": self.rounds + 1,
                    "failed_rounds": self.failed_rounds + 1,
                    "last_round_at": at,
                }
            )
        return self.model_copy(
            update={
                "rounds": self.rounds + 1,
                "recorded": self.recorded + result.recorded,
                "removed": self.removed + result.removed + result.resumed,
                "notices_removed": self.notices_removed + result.notices_removed,
                "deferred_last_round": result.deferred,
                "last_round_at": at,
                "last_round": result,
            }
        )


class SweepInput(Model):
    """What a sweeper runs with."""

    task_queue_prefix: str = Field(description="The deployment: the sweep runs on its bundle queue.")
    interval: timedelta = Field(default=DEFAULT_SWEEP_INTERVAL, gt=timedelta(0))
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    rounds_per_run: int = Field(
        default=100, ge=1, description="Rounds before continuing as new, so the history stays small."
    )
    progress: SweepProgress = Field(default_factory=SweepProgress)


class _Outcome(StrEnum):
    REMOVED = "removed"
    GONE = "gone"
    DEFERRED = "deferred"


_CLOSED_AS: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued_as_new",
}


def _visibility_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RetentionSweeper:
    """One deployment's retention rounds: record, then delete, every bundle closed too long ago.

    Safe to run twice at once: records are upserts, a deletion already done answers NotFound,
    and a record is always written before its execution is deleted, so a crash in between only
    leaves a deletion for the next round (`RecordStore.pending_removal`). Executions are
    deleted by run id, and only closed runs: a running bundle is never touched.
    """

    def __init__(
        self,
        client: Client,
        store: RecordStore,
        *,
        task_queue_prefix: str,
        retention_period: timedelta,
        status_read_timeout: timedelta = STATUS_READ_TIMEOUT,
    ) -> None:
        if "'" in task_queue_prefix or "\\" in task_queue_prefix:
            raise ValueError("a task queue prefix cannot hold quotes or backslashes")
        self.client = client
        self.store = store
        self.task_queue = bundle_task_queue(task_queue_prefix)
        self.retention_period = retention_period
        self.status_read_timeout = status_read_timeout

    def query(self, workflow_type: str, cutoff: datetime) -> str:
        """The visibility query for a type's executions of this deployment closed before `cutoff`."""
        return (
            f"WorkflowType = '{workflow_type}' AND TaskQueue = '{self.task_queue}' "
            f"AND ExecutionStatus != 'Running' AND CloseTime < '{_visibility_time(cutoff)}'"
        )

    async def sweep(
        self,
        request: SweepRequest,
        *,
        now: datetime | None = None,
        progress: Callable[[], Any] | None = None,
    ) -> SweepResult:
        """Run one round; `progress` is called once per execution handled (the activity heartbeats)."""
        tick = progress or (lambda: None)
        cutoff = (now or datetime.now(UTC)) - self.retention_period
        result = SweepResult()
        if not request.dry_run:
            for pending in await self.store.pending_removal(request.batch_size):
                tick()
                await self._delete(pending.tracking_id, pending.run_id)
                await self.store.mark_removed(pending.tracking_id, pending.run_id, datetime.now(UTC))
                result.resumed += 1
        result.more = await self._sweep_bundles(request, cutoff, result, tick)
        result.more = await self._sweep_notices(request, cutoff, result, tick) or result.more
        return result

    async def _sweep_bundles(
        self, request: SweepRequest, cutoff: datetime, result: SweepResult, tick: Callable[[], Any]
    ) -> bool:
        handled = 0
        async for execution in self.client.list_workflows(
            self.query(BUNDLE_WORKFLOW_TYPE, cutoff), page_size=request.batch_size
        ):
            if handled >= request.batch_size:
                return True
            if result.expired >= request.batch_size * SCAN_FACTOR:
                # Mostly bundles it had to leave for later: wait for the next round rather than
                # look at the same ones again at once, forever.
                return False
            tick()
            result.expired += 1
            if request.dry_run:
                result.would_remove.append(
                    ExpiredBundle(tracking_id=execution.id, closed_at=execution.close_time or cutoff)
                )
                handled += 1
                continue
            outcome = await self._remove_bundle(execution)
            if outcome is _Outcome.REMOVED:
                result.recorded += 1
                result.removed += 1
            elif outcome is _Outcome.GONE:
                result.already_gone += 1
            else:
                result.deferred += 1
                continue
            handled += 1
        return False

    async def _sweep_notices(
        self, request: SweepRequest, cutoff: datetime, result: SweepResult, tick: Callable[[], Any]
    ) -> bool:
        handled = 0
        async for execution in self.client.list_workflows(
            self.query(BIRTH_NOTICE_WORKFLOW_TYPE, cutoff), page_size=request.batch_size
        ):
            if handled >= request.batch_size:
                return True
            tick()
            handled += 1
            if request.dry_run:
                result.would_remove_notices += 1
            elif await self._delete(execution.id, execution.run_id):
                result.notices_removed += 1
        return False

    async def _remove_bundle(self, execution: WorkflowExecution) -> _Outcome:
        """Record one closed bundle, then delete its execution."""
        handle = self.client.get_workflow_handle_for(
            BundleWorkflow.run, execution.id, run_id=execution.run_id
        )
        try:
            record = await self._record(handle, execution)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return _Outcome.GONE
            log.warning("retention.deferred", bundle=execution.id, reason=exc.status.name)
            return _Outcome.DEFERRED
        except Exception as exc:  # one unreadable bundle must not stop the round
            # The type only: a decoding error's message could quote what it failed on.
            log.warning("retention.deferred", bundle=execution.id, reason=type(exc).__name__)
            return _Outcome.DEFERRED
        if record is None:
            return _Outcome.GONE
        await self.store.upsert(record)
        await self._delete(execution.id, execution.run_id)
        await self.store.mark_removed(execution.id, execution.run_id, datetime.now(UTC))
        log.info("retention.removed", bundle=execution.id, state=record.state.value)
        return _Outcome.REMOVED

    async def _record(
        self, handle: WorkflowHandle[BundleWorkflow, BundleStatus], execution: WorkflowExecution
    ) -> BundleRecord | None:
        """The bundle's record, from its start input (the channel) and its final status; None if gone."""
        started = await self._start_input(handle)
        if started is None:
            return None
        status: BundleStatus
        if execution.status is WorkflowExecutionStatus.COMPLETED:
            status = await handle.result(follow_runs=False, rpc_timeout=self.status_read_timeout)
        else:
            # Ended otherwise (withdrawn by cancellation, terminated): a worker replays it to answer.
            status = await handle.query(BundleWorkflow.status, rpc_timeout=self.status_read_timeout)
        status_name = execution.status if execution.status is not None else WorkflowExecutionStatus.COMPLETED
        fingerprint = (await execution.memo()).get(FINGERPRINT_MEMO)
        record = record_from_status(
            status,
            run_id=execution.run_id or "",
            channel=started.channel,
            closed_at=execution.close_time or datetime.now(UTC),
            closed_as=_CLOSED_AS.get(status_name, "closed"),
        )
        return record.model_copy(
            update={"request_fingerprint": fingerprint if isinstance(fingerprint, str) else None}
        )

    async def _start_input(self, handle: WorkflowHandle[BundleWorkflow, BundleStatus]) -> BundleInput | None:
        async for event in handle.fetch_history_events(page_size=1, rpc_timeout=self.status_read_timeout):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [bundle] = await self.client.data_converter.decode(payloads, [BundleInput])
            if not isinstance(bundle, BundleInput):
                raise TypeError("the bundle's start input is not a BundleInput")
            return bundle
        return None

    async def _delete(self, workflow_id: str, run_id: str | None) -> bool:
        """Delete one closed run; False when it was already gone."""
        try:
            await self.client.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=self.client.namespace,
                    workflow_execution=ExecutionRef(workflow_id=workflow_id, run_id=run_id or ""),
                )
            )
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True


class RetentionActivities:
    """The sweep activity, given the sweeper it runs."""

    def __init__(self, sweeper: RetentionSweeper) -> None:
        self._sweeper = sweeper

    @activity.defn(name=SWEEP_EXPIRED_BUNDLES)
    async def sweep_expired_bundles(self, request: SweepRequest) -> SweepResult:
        """One retention round; heartbeats once per execution, so a stuck round is retried."""
        result = await self._sweeper.sweep(request, progress=activity.heartbeat)
        log.info(
            "retention.swept",
            expired=result.expired,
            removed=result.removed,
            resumed=result.resumed,
            deferred=result.deferred,
            notices_removed=result.notices_removed,
            more=result.more,
        )
        return result


async def start_retention_sweeper(
    client: Client,
    *,
    task_queue_prefix: str,
    interval: timedelta = DEFAULT_SWEEP_INTERVAL,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> str:
    """Start the deployment's sweeper, or find the one already running; returns its workflow id.

    Every worker process calls this at start-up: the fixed id and `USE_EXISTING` give one
    sweeper per deployment. A running sweeper keeps the interval it was started with.
    """
    workflow_id = retention_sweeper_id(task_queue_prefix)
    await client.start_workflow(
        RETENTION_SWEEP_WORKFLOW,
        SweepInput(task_queue_prefix=task_queue_prefix, interval=interval, batch_size=batch_size),
        id=workflow_id,
        task_queue=bundle_task_queue(task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return workflow_id
