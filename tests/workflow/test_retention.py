"""The retention sweeper's loop on the time-skipping server: pauses, catching up, failures, totals."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.retention import (
    SWEEP_EXPIRED_BUNDLES,
    SweepInput,
    SweepRequest,
    SweepResult,
    retention_sweeper_id,
)
from tests.encryption import TEST_DATA_CONVERTER
from tests.workflow.support import new_prefix
from workflows.names import bundle_task_queue
from workflows.retention import RetentionSweepWorkflow

INTERVAL = timedelta(hours=1)


class Rounds:
    """Stands in for the sweep activity: a full batch first, then a failed round, then small ones."""

    def __init__(self) -> None:
        self.scheduled: list[datetime] = []
        self.batch_sizes: set[int] = set()

    @activity.defn(name=SWEEP_EXPIRED_BUNDLES)
    async def sweep(self, request: SweepRequest) -> SweepResult:
        self.scheduled.append(activity.info().scheduled_time)
        self.batch_sizes.add(request.batch_size)
        round_number = len(self.scheduled)
        if round_number == 1:
            return SweepResult(expired=50, recorded=50, removed=50, more=True)
        if round_number == 2:
            raise ApplicationError("visibility store unavailable", non_retryable=True)
        return SweepResult(expired=1, recorded=1, removed=1, notices_removed=2, deferred=1)


async def test_the_sweeper_catches_up_at_once_survives_a_failed_round_and_keeps_totals(
    own_time_env: WorkflowEnvironment,
) -> None:
    env, prefix = own_time_env, new_prefix()
    rounds = Rounds()
    sweeper_id = retention_sweeper_id(prefix)
    async with Worker(
        env.client,
        task_queue=bundle_task_queue(prefix),
        workflows=[RetentionSweepWorkflow],
        activities=[rounds.sweep],
    ):
        handle = await env.client.start_workflow(
            RetentionSweepWorkflow.run,
            SweepInput(task_queue_prefix=prefix, interval=INTERVAL, batch_size=50, rounds_per_run=3),
            id=sweeper_id,
            task_queue=bundle_task_queue(prefix),
        )
        first_run = handle.result_run_id
        deadline = asyncio.get_running_loop().time() + 60
        while len(rounds.scheduled) < 5:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"only {len(rounds.scheduled)} rounds")
            await env.sleep(INTERVAL / 4)
        latest = env.client.get_workflow_handle_for(RetentionSweepWorkflow.run, sweeper_id)
        progress = await latest.query(RetentionSweepWorkflow.progress)
        described = await latest.describe()
        await latest.terminate("test over")

    assert rounds.batch_sizes == {50}
    # A full batch is followed at once by the next round; otherwise the sweeper waits its interval,
    # a failed round included.
    gaps = [later - earlier for earlier, later in zip(rounds.scheduled, rounds.scheduled[1:], strict=False)]
    assert gaps[0] < timedelta(minutes=1)
    assert all(INTERVAL <= gap < INTERVAL + timedelta(minutes=1) for gap in gaps[1:])
    # Three rounds per run: the totals crossed continue-as-new.
    assert described.run_id != first_run
    assert progress.rounds >= 4
    assert progress.failed_rounds == 1
    assert progress.removed == 50 + (progress.rounds - 2)
    assert progress.notices_removed == 2 * (progress.rounds - 2)
    assert progress.deferred_last_round == 1
    assert progress.last_round is not None
    assert progress.last_round.removed == 1
    first = env.client.get_workflow_handle(sweeper_id, run_id=first_run)
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    replayer = Replayer(workflows=[RetentionSweepWorkflow], data_converter=TEST_DATA_CONVERTER)
    await replayer.replay_workflow(await first.fetch_history())
