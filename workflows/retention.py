"""`RetentionSweepWorkflow`: removes finished bundles' personal data once the retention period
has passed, one bounded round at a time, forever."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.retention import (
        RETENTION_SWEEP_WORKFLOW,
        SWEEP_EXPIRED_BUNDLES,
        SweepInput,
        SweepProgress,
        SweepRequest,
        SweepResult,
    )
    from workflows.names import bundle_task_queue

SWEEP_TIMEOUT = timedelta(minutes=30)
"""One round: reading, recording and deleting up to a batch of bundles."""

SWEEP_HEARTBEAT = timedelta(minutes=2)
"""The round heartbeats once per bundle; this long without one means its worker is gone."""

SWEEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=3,
)
"""A failed round is retried briefly; past that the next round tries again anyway (it is idempotent)."""


@workflow.defn(name=RETENTION_SWEEP_WORKFLOW)
class RetentionSweepWorkflow:
    """Sweeps one deployment's expired bundles every `interval`, forever.

    Guarantees: one sweeper per deployment (a fixed workflow id); each round is bounded by its
    batch size; a round that stopped at its batch is followed at once by the next, otherwise
    the sweeper waits `interval`; a failed round never ends the sweeper. Running totals and the
    last round's counts (never personal data) are its current details and its `progress` query,
    and survive continue-as-new.
    """

    def __init__(self) -> None:
        self._progress = SweepProgress()

    @workflow.run
    async def run(self, sweep: SweepInput) -> None:
        """Sweep, pause, repeat; continue as new every `rounds_per_run` rounds."""
        self._progress = sweep.progress
        for _ in range(sweep.rounds_per_run):
            result: SweepResult | None = None
            try:
                result = await workflow.execute_activity(
                    SWEEP_EXPIRED_BUNDLES,
                    SweepRequest(batch_size=sweep.batch_size),
                    task_queue=bundle_task_queue(sweep.task_queue_prefix),
                    start_to_close_timeout=SWEEP_TIMEOUT,
                    heartbeat_timeout=SWEEP_HEARTBEAT,
                    retry_policy=SWEEP_RETRY,
                    result_type=SweepResult,
                )
            except ActivityError:
                workflow.logger.warning("A retention round failed; the next round tries again")
            self._progress = self._progress.after(result, workflow.now())
            workflow.set_current_details(_details(self._progress))
            if result is None or not result.more:
                await workflow.sleep(sweep.interval)
        workflow.continue_as_new(sweep.model_copy(update={"progress": self._progress}))

    @workflow.query
    def progress(self) -> SweepProgress:
        """Totals since the sweeper first started, and the last round's counts."""
        return self._progress


def _details(progress: SweepProgress) -> str:
    """What the Temporal UI shows for the sweeper: counts only."""
    last = progress.last_round
    lines = [
        f"**{progress.rounds} rounds**: {progress.removed} bundles and "
        f"{progress.notices_removed} birth-notice matchers removed, {progress.failed_rounds} rounds failed"
    ]
    if last is not None:
        lines.append(
            f"- last round: {last.removed} removed, {last.resumed} resumed, {last.deferred} deferred, "
            f"{last.already_gone} already gone, {last.notices_removed} matchers"
        )
    return "\n".join(lines)
