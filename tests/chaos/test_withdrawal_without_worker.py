"""A resident withdraws while no worker runs (one was just SIGKILLed): the withdrawal must be
applied as soon as a worker is back, and the bundle must end withdrawn.

Found by the resilience run: a bundle started while the Temporal server restarted got its
withdrawal before its first workflow task; the update handler ran before run() had the bundle's
input, failed the task over and over, and the withdrawal hung for 20 s, then was refused. Fixed
by taking the input in `@workflow.init`; this keeps it fixed.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from tests.workflow.support import new_prefix, plan, running_workers, scripted_adapters, start_bundle
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, WithdrawRequest

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_a_withdrawal_sent_while_no_worker_runs_applies_once_one_does(
    dev_env: WorkflowEnvironment,
) -> None:
    client, prefix = dev_env.client, new_prefix()
    handle = await start_bundle(client, plan(), prefix)
    # No worker polls this bundle's queue yet: its first workflow task waits, and so does this.
    withdrawal = asyncio.ensure_future(
        handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest(), id="withdraw")
    )
    await asyncio.sleep(1.0)
    try:
        async with running_workers(client, scripted_adapters(), prefix):
            # A worker is back: the withdrawal waits for nothing else now.
            for _ in range(100):
                if withdrawal.done():
                    break
                await asyncio.sleep(0.1)
            assert withdrawal.done(), "no answer to the withdrawal 10 s after a worker started"
            assert withdrawal.result().accepted
            final = await asyncio.wait_for(handle.result(), timeout=20)
    finally:
        if not withdrawal.done():
            withdrawal.cancel()
        with contextlib.suppress(BaseException):
            await withdrawal
    assert final.state is BundleState.WITHDRAWN
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed == [], "a workflow task failed on the early withdrawal"
