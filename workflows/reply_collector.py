"""`BatchReplyCollectorWorkflow`: reads a batch system's reply files on a schedule and hands each
reply to its bundle."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.replies import COLLECT_BATCH_REPLIES, CollectorInput, CollectResult
    from workflows.names import legacy_task_queue

ROUNDS_PER_RUN = 100
"""Rounds before the workflow continues as new, so its history stays small (about 10 events a round)."""

COLLECT_TIMEOUT = timedelta(minutes=5)
"""One collection: reading every waiting reply file and signalling its bundles."""

COLLECT_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""A collection lost with its worker is noticed this soon (the activity heartbeats every 10 s),
rather than after the whole `COLLECT_TIMEOUT` with every batch reply stalled meanwhile."""

COLLECT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
)
"""A failed collection is retried briefly; past that the next round tries again anyway."""


@workflow.defn(name="BatchReplyCollector")
class BatchReplyCollectorWorkflow:
    """Collects one batch system's replies forever, one collection every `interval`.

    Guarantees: at most one collection at a time per system (one workflow id per system), and a
    reply file is acknowledged only after each of its replies reached its bundle (or its bundle
    was found gone), so a crash re-reads the file and the bundles ignore replies already applied.
    """

    @workflow.run
    async def run(self, collector: CollectorInput) -> None:
        """Collect, pause, repeat; continue as new every `ROUNDS_PER_RUN` rounds."""
        for _ in range(ROUNDS_PER_RUN):
            try:
                result = await workflow.execute_activity(
                    COLLECT_BATCH_REPLIES,
                    collector.system,
                    task_queue=legacy_task_queue(collector.task_queue_prefix, collector.system),
                    start_to_close_timeout=COLLECT_TIMEOUT,
                    heartbeat_timeout=COLLECT_HEARTBEAT_TIMEOUT,
                    retry_policy=COLLECT_RETRY,
                    result_type=CollectResult,
                )
                if result.replies or result.problems:
                    workflow.logger.info(
                        "Collected %d replies from %d files of %s (%d dropped, %d problems)",
                        result.replies,
                        result.files,
                        collector.system,
                        result.dropped,
                        result.problems,
                    )
            except ActivityError:
                # The system or the server is unreachable: the files wait, the next round retries.
                workflow.logger.warning("Could not collect the replies of %s this round", collector.system)
            await workflow.sleep(collector.interval)
        workflow.continue_as_new(collector)
