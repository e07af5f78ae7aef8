"""Birth notices from `vital-events.birth-notices`: hand each to its matcher, or dead-letter it.

`infra.streams.sealing.read_notice` opens a notice's sealed personal part (with a keyring, a
notice in the clear is refused as `not_encrypted`) and `bundles.notices.parse_notice` checks it;
`activities.notices.deliver_notice` signals (or starts) the matcher workflow, which
de-duplicates by the notice id, so a notice delivered twice after a crash is harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from temporalio.client import Client
from temporalio.service import RPCError

from activities.notices import deliver_notice
from bundles.notices import NoticeInvalid
from infra.settings import Settings
from infra.streams.decoding import rejected_reason
from infra.streams.dlq import DeadLetters
from infra.streams.models import DlqReason
from infra.streams.records import Record
from infra.streams.retry import until_done
from infra.streams.sealing import read_notice

log = structlog.get_logger("tellonce.streams")


class NoticeConsumer:
    """Delivers each birth notice to its matcher, or dead-letters it; the settings' keyring opens notices."""

    def __init__(self, client: Client, dead_letters: DeadLetters, settings: Settings) -> None:
        self.client = client
        self.dead_letters = dead_letters
        self.settings = settings

    async def handle(self, record: Record) -> None:
        """Deliver one notice, or dead-letter it; return once either is durable."""
        try:
            notice = read_notice(record.value or b"", self.settings.keyring)
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
