"""Worker role: the bundle workflow, one activity worker per legacy system's task queue, and the
status-event publisher on its own queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.control import SystemGate
from activities.events import EventActivities, EventPublisher, KafkaEventPublisher, NoEventPublisher
from activities.notices import NoticeActivities
from activities.replies import CollectorInput, ReplyActivities
from activities.retention import RetentionActivities, RetentionSweeper, start_retention_sweeper
from activities.steps import BundleActivities
from adapters.registry import build_adapters
from adapters.sdk import Adapter, PolledReplies
from infra.ops.engine import start_system_control
from infra.records import RecordStore, open_record_store
from infra.settings import LegacySystemSettings, Settings
from infra.temporal import connect
from workflows.birth_notice import BirthNoticeMatchWorkflow
from workflows.bundle import BundleWorkflow
from workflows.names import bundle_task_queue, events_task_queue, legacy_task_queue, reply_collector_id
from workflows.reply_collector import BatchReplyCollectorWorkflow
from workflows.retention import RetentionSweepWorkflow
from workflows.system_control import SystemControlWorkflow

log = structlog.get_logger("tellonce.worker")


def build_workers(
    client: Client,
    adapters: Mapping[str, Adapter],
    *,
    task_queue_prefix: str,
    max_concurrent_activities: int = 200,
    max_concurrent_workflow_tasks: int = 200,
    event_publisher: EventPublisher | None = None,
    correlation_secret: bytes,
    upsert_search_attributes: bool = True,
    legacy_systems: Mapping[str, LegacySystemSettings] | None = None,
    record_store: RecordStore | None = None,
    retention_period: timedelta | None = None,
    control_refresh: timedelta | None = timedelta(seconds=1),
    workflow_sandbox: bool = True,
    max_cached_workflows: int = 1000,
) -> list[Worker]:
    """One worker for bundle workflows, and one per legacy system so each can be throttled alone.

    The bundle worker also runs the birth-notice matchers and their activities, keyed with the
    `correlation_secret` (`upsert_search_attributes` is off only on the time-skipping server).
    With an `event_publisher`, the bundle worker publishes status events inline (local activities)
    and one more worker publishes them on the events queue, apart from the legacy calls, for
    bundles whose inline batch failed and those of engine revision 1: a broker outage then holds
    only event slots, never a system's.
    `legacy_systems` caps each system: calls per second across every worker (enforced by the
    Temporal server for the system's task queue) and calls in flight per worker process.
    Each system's calls pass its gate (`control_refresh`: how long a worker trusts its copy of
    the system's pause and breaker state; None for no gate), which holds them while the system's
    `SystemControlWorkflow` (run on the bundle queue) says so.
    `workflow_sandbox` runs the workflows in the SDK's sandbox (tests keep it, to catch
    non-deterministic workflow code; `tellonce worker` follows `worker_workflow_sandbox`), and
    `max_cached_workflows` bounds the workflows kept in memory between their tasks.
    Systems whose adapter reads reply files (`PolledReplies`) also run the reply-collecting
    activity on their queue; its workflow runs on the bundle queue (`start_reply_collectors`).
    """
    limits = legacy_systems or {}
    gate = (
        SystemGate(client, task_queue_prefix, refresh=control_refresh, report_every=control_refresh)
        if control_refresh is not None
        else None
    )
    activities = BundleActivities(adapters, gate)
    replies = ReplyActivities(client, adapters)
    notices = NoticeActivities(
        client,
        secret=correlation_secret,
        task_queue_prefix=task_queue_prefix,
        upsert_search_attributes=upsert_search_attributes,
    )
    bundle_activities: list[Callable[..., Any]] = [
        notices.offer_birth_statement,
        notices.report_unmatched_notice,
    ]
    events = EventActivities(event_publisher) if event_publisher is not None else None
    # Bundles publish their events inline, as local activities run by this worker. Without a
    # publisher the activity still answers, unavailable, so a bundle moves its events to the
    # events queue (and waits there for a worker that has one) instead of failing its task.
    bundle_activities.append((events or EventActivities(NoEventPublisher())).publish_bundle_events)
    if record_store is not None and retention_period is not None:
        sweeper = RetentionSweeper(
            client, record_store, task_queue_prefix=task_queue_prefix, retention_period=retention_period
        )
        bundle_activities.append(RetentionActivities(sweeper).sweep_expired_bundles)
    workers = [
        Worker(
            client,
            task_queue=bundle_task_queue(task_queue_prefix),
            workflows=[
                BundleWorkflow,
                BirthNoticeMatchWorkflow,
                BatchReplyCollectorWorkflow,
                RetentionSweepWorkflow,
                SystemControlWorkflow,
            ],
            activities=bundle_activities,
            max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
            # One inline call at a time per workflow task: a slot for each task that may hold one,
            # so a burst does not time inline batches out while they wait for a slot.
            max_concurrent_local_activities=max_concurrent_workflow_tasks,
            max_cached_workflows=max_cached_workflows,
            workflow_runner=SandboxedWorkflowRunner() if workflow_sandbox else UnsandboxedWorkflowRunner(),
        )
    ]
    for system in adapters:
        limit = limits.get(system) or LegacySystemSettings()
        workers.append(
            Worker(
                client,
                task_queue=legacy_task_queue(task_queue_prefix, system),
                activities=[
                    activities.invoke_step,
                    activities.compensate_step,
                    *([replies.collect_batch_replies] if isinstance(adapters[system], PolledReplies) else []),
                ],
                max_concurrent_activities=limit.max_concurrent or max_concurrent_activities,
                max_task_queue_activities_per_second=limit.rate_limit_per_s,
            )
        )
    if events is not None:
        workers.append(
            Worker(
                client,
                task_queue=events_task_queue(task_queue_prefix),
                activities=[events.publish_bundle_events],
                max_concurrent_activities=max_concurrent_activities,
            )
        )
    return workers


def batch_systems(adapters: Mapping[str, Adapter]) -> list[str]:
    """The systems whose replies tellonce fetches itself (reply files), sorted."""
    return sorted(system for system, adapter in adapters.items() if isinstance(adapter, PolledReplies))


async def start_reply_collectors(
    client: Client, adapters: Mapping[str, Adapter], *, task_queue_prefix: str, interval: timedelta
) -> list[str]:
    """Start one reply collector per batch system, or find the one already running.

    Every worker process calls this at start-up: the fixed workflow id and `USE_EXISTING` make
    them share one collector per system and deployment prefix.

    Returns:
        The collectors' workflow ids.
    """
    ids = []
    for system in batch_systems(adapters):
        workflow_id = reply_collector_id(task_queue_prefix, system)
        await client.start_workflow(
            BatchReplyCollectorWorkflow.run,
            CollectorInput(system=system, task_queue_prefix=task_queue_prefix, interval=interval),
            id=workflow_id,
            task_queue=bundle_task_queue(task_queue_prefix),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        ids.append(workflow_id)
    return ids


async def start_system_controls(client: Client, settings: Settings, systems: list[str]) -> list[str]:
    """Start each system's control workflow, or find the one running (every worker does this)."""
    ids = []
    for system in systems:
        handle = await start_system_control(client, settings, system)
        ids.append(handle.id)
    return ids


async def run_worker(settings: Settings) -> None:
    """Run every worker until cancelled, then close the adapters' and the event producer's connections."""
    client = await connect(settings)
    adapters = build_adapters(settings)
    # Consumers de-duplicate by event id either way; idempotence only spares them the work.
    publisher = (
        KafkaEventPublisher(settings, idempotent=settings.idempotent_producer)
        if settings.events_enabled
        else None
    )
    workers = build_workers(
        client,
        adapters,
        task_queue_prefix=settings.task_queue_prefix,
        correlation_secret=settings.correlation_secret.get_secret_value().encode(),
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        event_publisher=publisher,
        legacy_systems=settings.legacy_systems,
        record_store=open_record_store(settings),
        retention_period=settings.retention_period,
        control_refresh=settings.ops_control_refresh,
        workflow_sandbox=settings.worker_workflow_sandbox,
        max_cached_workflows=settings.worker_max_cached_workflows,
    )
    retention_sweeper = await start_retention_sweeper(client, task_queue_prefix=settings.task_queue_prefix)
    collectors = await start_reply_collectors(
        client, adapters, task_queue_prefix=settings.task_queue_prefix, interval=settings.batch_poll_interval
    )
    controls = await start_system_controls(client, settings, sorted(adapters))
    log.info(
        "worker.started",
        system_controls=len(controls),
        task_queues=[w.task_queue for w in workers],
        systems=sorted(adapters),
        events=publisher.topic if publisher else None,
        reply_collectors=collectors,
        retention_sweeper=retention_sweeper,
    )
    try:
        async with asyncio.TaskGroup() as group:
            for worker in workers:
                group.create_task(worker.run())
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
        if publisher is not None:
            await publisher.close()
        log.info("worker.stopped")
