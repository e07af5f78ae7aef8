"""The raw baseline: a bundle's shape written directly on the Temporal SDK, and nothing else.

One workflow runs the same steps in the same dependency pattern as the tellonce bundle it mirrors
(`infra.bench.shape`), each step one no-op activity; a step that waits for an outside fact waits
for a signal first, and a step whose legacy system answers later waits for a reply signal after its
activity. No validation, plan, status, search attributes, events, encryption or matching.
This module holds only what the workflow sandbox must import: dataclasses and temporalio.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy

RAW_WORKFLOW = "RawBundle"
RAW_ACTIVITY = "raw_step"
NOTICE_SIGNAL = "outside_fact"
REPLY_SIGNAL = "step_reply"

STEP_TIMEOUT = timedelta(seconds=30)
STEP_RETRY = RetryPolicy(maximum_attempts=3)
"""A no-op never fails; the policy is explicit only so the baseline schedules what tellonce does."""


@dataclass(frozen=True)
class RawStep:
    """One step of the shape: what it needs first, and the signals it waits for."""

    id: str
    needs: tuple[str, ...] = ()
    awaits_fact: bool = False
    """Waits for the `outside_fact` signal before its call (tellonce: the hospital's birth notice)."""
    reply_later: bool = False
    """Waits for a `step_reply` signal after its call (tellonce: a batch file or queue reply)."""


@dataclass(frozen=True)
class RawBundleInput:
    """The shape to run."""

    steps: list[RawStep] = field(default_factory=list)


@dataclass(frozen=True)
class RawCall:
    """What the no-op activity receives: the step, and whom to signal if it answers later."""

    workflow_id: str
    step_id: str
    reply_later: bool = False


@workflow.defn(name=RAW_WORKFLOW)
class RawBundleWorkflow:
    """Runs each step once its needs are done; completes when every step has."""

    def __init__(self) -> None:
        self._fact = False
        self._replies: set[str] = set()
        self._done: set[str] = set()

    @workflow.signal(name=NOTICE_SIGNAL)
    def outside_fact(self) -> None:
        """The outside fact some step waits for has arrived."""
        self._fact = True

    @workflow.signal(name=REPLY_SIGNAL)
    def step_reply(self, step_id: str) -> None:
        """A step's legacy system has answered."""
        self._replies.add(step_id)

    @workflow.run
    async def run(self, bundle: RawBundleInput) -> int:
        """Run the shape; returns the number of steps done."""
        await asyncio.gather(*(self._step(step) for step in bundle.steps))
        return len(self._done)

    async def _step(self, step: RawStep) -> None:
        await workflow.wait_condition(lambda: all(need in self._done for need in step.needs))
        if step.awaits_fact:
            await workflow.wait_condition(lambda: self._fact)
        await workflow.execute_activity(
            RAW_ACTIVITY,
            RawCall(workflow.info().workflow_id, step.id, step.reply_later),
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        if step.reply_later:
            await workflow.wait_condition(lambda: step.id in self._replies)
        self._done.add(step.id)


class RawActivities:
    """The no-op step call; a step that answers later has its reply signalled at once."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=RAW_ACTIVITY)
    async def raw_step(self, call: RawCall) -> None:
        """Do nothing, except deliver the reply of a step that answers later (no legacy delay)."""
        if call.reply_later:
            await self._client.get_workflow_handle(call.workflow_id).signal(REPLY_SIGNAL, call.step_id)
