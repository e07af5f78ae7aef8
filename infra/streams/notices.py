"""Birth notices from `vital-events.birth-notices`: hand each to its matcher, or dead-letter it.

`bundles.notices.parse_notice` checks a notice; `activities.notices.deliver_notice` signals (or
starts) the matcher workflow, which de-duplicates by the notice id, so a notice delivered
twice after a crash is harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from temporalio.client import Client
from temporalio.service import RPCError

from activities.notices import deliver_notice
from bundles.notices import BirthNotice, NoticeInvalid, parse_notice
from infra.settings import Settings
from infra.streams.decoding import rejected_reason
from infra.streams.dlq import DeadLetters
from infra.streams.models import DlqReason
from infra.streams.records import Record
from infra.streams.retry import until_done

log = structlog.get_logger("tellonce.streams")


def read_notice(record: Record) -> BirthNotice:
    """The record's notice.

    Raises:
        NoticeInvalid: with the reasons it goes to the DLQ.
    """
    return parse_notice(record.value or b"")


class NoticeConsumer:
    """Delivers each birth notice to its matcher, or dead-letters it."""

    def __init__(self, client: Client, dead_letters: DeadLetters, settings: Settings) -> None:
        self.client = client
        self.dead_letters = dead_letters
        self.settings = settings

    async def handle(self, record: Record) -> None:
        """Deliver one notice, or dead-letter it; return once either is durable."""
        try:
            notice = read_notice(record)
        except NoticeInvalid as exc:
            reasons = [DlqReason(code=r.code, path=r.path, message=r.message) for r in exc.reasons]
            await self.dead_letters.send(record, reasons, self.settings.kafka_topic_birth_notices_dlq)
            return
        received_at = datetime.fromtimestamp(record.timestamp / 1000, UTC)

        async def attempt() -> str:
            return await deliver_notice(self.client, notice, settings=self.settings, received_at=received_at)

        try:
            matcher = await until_done(attempt, what="deliver_notice", where=record.where)
        except RPCError as exc:
            # `until_done` raises only what retrying cannot fix: Temporal refused the request.
            dlq = self.settings.kafka_topic_birth_notices_dlq
            await self.dead_letters.send(record, [rejected_reason(exc)], dlq)
            return
        log.info("streams.notice_delivered", matcher=matcher, **record.where)
