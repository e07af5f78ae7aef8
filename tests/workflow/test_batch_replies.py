"""The batch reply collector's loop on the time-skipping server: rounds, failures, continue-as-new."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.replies import COLLECT_BATCH_REPLIES, CollectorInput, CollectResult
from tests.encryption import TEST_DATA_CONVERTER
from tests.workflow.support import new_prefix
from workflows.names import bundle_task_queue, legacy_task_queue, reply_collector_id
from workflows.reply_collector import ROUNDS_PER_RUN, BatchReplyCollectorWorkflow

INTERVAL = timedelta(minutes=5)


class Collections:
    """Stands in for the collecting activity: counts rounds; the first `failures` attempts fail."""

    def __init__(self, failures: int) -> None:
        self.attempts = 0
        self.failures = failures
        self.systems: set[str] = set()

    @activity.defn(name=COLLECT_BATCH_REPLIES)
    async def collect(self, system: str) -> CollectResult:
        self.attempts += 1
        self.systems.add(system)
        if self.attempts <= self.failures:
            raise RuntimeError("SFTP server unreachable")
        return CollectResult(files=1, replies=2, delivered=2)


async def test_the_collector_keeps_going_past_failed_rounds_and_continues_as_new(
    own_time_env: WorkflowEnvironment,
) -> None:
    env, prefix = own_time_env, new_prefix()
    collections = Collections(failures=3)  # every attempt of the first round
    collector_id = reply_collector_id(prefix, "esdc-sin")
    async with (
        Worker(env.client, task_queue=bundle_task_queue(prefix), workflows=[BatchReplyCollectorWorkflow]),
        Worker(
            env.client, task_queue=legacy_task_queue(prefix, "esdc-sin"), activities=[collections.collect]
        ),
    ):
        handle = await env.client.start_workflow(
            BatchReplyCollectorWorkflow.run,
            CollectorInput(system="esdc-sin", task_queue_prefix=prefix, interval=INTERVAL),
            id=collector_id,
            task_queue=bundle_task_queue(prefix),
        )
        first_run = handle.result_run_id
        deadline = asyncio.get_running_loop().time() + 60
        while collections.attempts < ROUNDS_PER_RUN + collections.failures + 2:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"only {collections.attempts} collections")
            await env.sleep(INTERVAL)
        latest = await env.client.get_workflow_handle(collector_id).describe()
        await env.client.get_workflow_handle(collector_id).terminate("test over")

    assert collections.systems == {"esdc-sin"}
    # A new run, with the same id: history stays bounded, and the loop survived the failed round.
    assert latest.run_id != first_run
    assert latest.status == WorkflowExecutionStatus.RUNNING
    first_handle = env.client.get_workflow_handle(collector_id, run_id=first_run)
    assert (await first_handle.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    replayer = Replayer(workflows=[BatchReplyCollectorWorkflow], data_converter=TEST_DATA_CONVERTER)
    await replayer.replay_workflow(await first_handle.fetch_history())
