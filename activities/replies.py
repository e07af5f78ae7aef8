"""Batch replies into bundles: read a system's reply files, signal each reply, then acknowledge."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import structlog
from pydantic import Field
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from adapters.sdk import Adapter, AsyncReply, CallContext, PolledReplies
from workflows.models import SIGNAL_LEGACY_REPLY, LegacyReply, Model
from workflows.names import parse_idempotency_key

log = structlog.get_logger("tellonce.activities")

DEFAULT_DEADLINE = timedelta(minutes=1)

COLLECT_BATCH_REPLIES = "collect_batch_replies"
"""Name of the activity that fetches, signals and acknowledges one system's reply files."""


class CollectorInput(Model):
    """What a reply collector runs with."""

    system: str = Field(description="The batch system whose reply files it reads.")
    task_queue_prefix: str = Field(
        description="The deployment's prefix: the activity runs on the system's queue."
    )
    interval: timedelta = Field(gt=timedelta(0), description="Pause between two collections.")


class CollectResult(Model):
    """What one collection did (counts only: replies are personal to their bundles)."""

    files: int = 0
    replies: int = 0
    delivered: int = 0
    dropped: int = Field(default=0, description="Replies whose bundle no longer exists or never did.")
    problems: int = Field(default=0, description="Lines that could not be read.")
    incomplete: int = Field(
        default=0, description="Files left unacknowledged because they look unfinished (read again later)."
    )


class ReplyActivities:
    """The reply-collecting activity, given the Temporal client and the adapters by system id."""

    def __init__(self, client: Client, adapters: Mapping[str, Adapter]) -> None:
        self._client = client
        self._adapters = dict(adapters)

    @activity.defn(name=COLLECT_BATCH_REPLIES)
    async def collect_batch_replies(self, system: str) -> CollectResult:
        """Fetch the system's waiting reply files, signal every reply to its bundle, acknowledge each file.

        A file is acknowledged only once each of its replies was signalled or found undeliverable
        (no such bundle: logged and counted, by system and reply id only). Any other failure
        leaves the file for the next collection; the bundles ignore a reply id already applied.
        """
        adapter = self._adapters.get(system)
        if not isinstance(adapter, PolledReplies):
            raise ValueError(f"{system} has no reply files to collect")
        info = activity.info()
        ctx = CallContext(
            idempotency_key=f"{info.workflow_id}:collect:status",
            bundle_ref=info.workflow_id or "",
            step_id="collect",
            operation="status",
            attempt=info.attempt,
            deadline=datetime.now(UTC) + (info.start_to_close_timeout or DEFAULT_DEADLINE),
            log=log.bind(system=system, attempt=info.attempt),
        )
        keep_alive = asyncio.create_task(_heartbeat_every(KEEP_ALIVE_INTERVAL))
        try:
            return await self._collect(system, adapter, ctx)
        finally:
            keep_alive.cancel()

    async def _collect(self, system: str, adapter: PolledReplies, ctx: CallContext) -> CollectResult:
        result = CollectResult()
        for batch in await adapter.fetch_replies(ctx):
            result.files += 1
            for problem in batch.problems:
                # Line, field and code only: the codec never puts a value in a problem.
                ctx.log.warning("replies.unreadable_line", file=batch.receipt, problem=problem)
            result.problems += len(batch.problems)
            for reply in batch.replies:
                result.replies += 1
                if await self._deliver(system, reply):
                    result.delivered += 1
                else:
                    result.dropped += 1
                activity.heartbeat(batch.receipt)
            if not batch.complete:
                # Its replies went out (a second reading applies them once); the rest comes later.
                result.incomplete += 1
                ctx.log.warning("replies.file_incomplete", file=batch.receipt, replies=len(batch.replies))
                continue
            await adapter.acknowledge(ctx, batch.receipt)
            ctx.log.info("replies.file_done", file=batch.receipt, replies=len(batch.replies))
        return result

    async def _deliver(self, system: str, reply: AsyncReply) -> bool:
        """Signal one reply to its bundle; False when there is no such bundle (the reply is dropped)."""
        parsed = parse_idempotency_key(reply.correlation_id)
        if parsed is None:
            log.warning(
                "replies.dropped", system=system, reply_id=reply.reply_id, reason="bad_correlation_id"
            )
            return False
        signal = LegacyReply(
            correlation_id=reply.correlation_id,
            reply_id=reply.reply_id,
            system=system,
            outcome=reply.outcome,
            reference=reply.reference,
            code=reply.code,
            message=reply.message,
            received_at=datetime.now(UTC),
        )
        try:
            await self._client.get_workflow_handle(parsed[0]).signal(SIGNAL_LEGACY_REPLY, signal)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            log.warning("replies.dropped", system=system, reply_id=reply.reply_id, reason="no_open_bundle")
            return False
        return True


KEEP_ALIVE_INTERVAL = 10.0
"""Seconds between heartbeats while a collection reads files (one exchange may take a minute)."""


async def _heartbeat_every(seconds: float) -> None:
    """Tell Temporal this collection is alive until cancelled, so a dead worker's is retried soon."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(seconds)
