"""Legacy systems' asynchronous replies from `legacy.<system>.replies`, delivered as signals.

A reply's correlation id is the idempotency key its request carried; it names the bundle (the
workflow id) and the step. The reply is signalled only to a bundle that is still running;
anything else goes to the legacy replies DLQ. A crash between the signal and the commit
delivers the reply again: the signal's `reply_id` is the record's `<topic>:<partition>:<offset>`,
and the workflow ignores a reply id it already applied (and a reply its step already has).

Whether the topic's system is the one the step calls is checked by the workflow: the step's
system comes from the bundle's plan, which only the workflow holds (the correlation id names
the step, not the system).

With a keyring a reply's answer must be sealed (`adapters.message_queue.seal_reply`, for the
topic's system and the correlation id): one in the clear is dead-lettered `not_encrypted`, one
that does not open `undecryptable`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from adapters.message_queue import UnreadableMessageError, open_reply
from infra.crypto import Keyring
from infra.streams.decoding import Unreadable, read_json_object, reason, rejected_reason, validation_reasons
from infra.streams.dlq import DeadLetters
from infra.streams.models import DlqReason, LegacyReplyMessage
from infra.streams.records import Record
from infra.streams.retry import rejected_by_temporal, until_done
from infra.streams.sealing import NOT_ENCRYPTED, UNDECRYPTABLE, not_encrypted, undecryptable
from workflows.models import SIGNAL_LEGACY_REPLY, LegacyReply
from workflows.names import legacy_replies_topic, parse_idempotency_key

log = structlog.get_logger("tellonce.streams")


def reply_topics(systems: Iterable[str]) -> dict[str, str]:
    """System id by replies topic."""
    return {legacy_replies_topic(system): system for system in sorted(systems)}


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


_NO_OPEN_BUNDLE = "No running bundle has this correlation id."


def _undeliverable(exc: RPCError) -> Unreadable:
    if rejected_by_temporal(exc):
        return Unreadable([rejected_reason(exc)])
    return Unreadable([reason("no_open_bundle", _NO_OPEN_BUNDLE, "correlation_id")])


def reply_id(record: Record) -> str:
    """The id of one reply record, the same on every redelivery: `<topic>:<partition>:<offset>`."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def _unopened(exc: UnreadableMessageError) -> DlqReason:
    if exc.reason == NOT_ENCRYPTED:
        return not_encrypted("reply")
    if exc.reason == UNDECRYPTABLE:
        return undecryptable(exc.key_id, "reply", unknown_key=exc.unknown_key)
    if exc.reason == "reply_invalid":
        return reason("reply_invalid", "The correlation id must be a string.", "correlation_id")
    return reason(exc.reason, "The sealed answer must be a JSON object.", "reply")


def read_reply(record: Record, system: str, keyring: Keyring | None) -> tuple[LegacyReplyMessage, str]:
    """The reply (its answer opened when sealed) and the workflow id its correlation id names.

    Raises:
        Unreadable: malformed record, cleartext answer where a keyring is set, sealed answer that
            does not open, invalid reply, or a correlation id tellonce never made.
    """
    try:
        data = open_reply(system, read_json_object(record.value), keyring)
    except UnreadableMessageError as exc:
        raise Unreadable([_unopened(exc)]) from None
    try:
        reply = LegacyReplyMessage.model_validate(data)
    except ValidationError as exc:
        raise Unreadable(validation_reasons(exc, "reply_invalid")) from None
    parsed = parse_idempotency_key(reply.correlation_id)
    if parsed is None:
        raise Unreadable(
            [reason("bad_correlation_id", "Not a correlation id tellonce issued.", "correlation_id")]
        )
    return reply, parsed[0]


class ReplyConsumer:
    """Signals each reply to its bundle, or dead-letters it.

    Args:
        client: Temporal client.
        dead_letters: Where refused replies go.
        systems_by_topic: System id by replies topic.
        dlq_topic: The legacy replies DLQ.
        keyring: Opens sealed answers; None accepts cleartext replies only (encryption off).
    """

    def __init__(
        self,
        client: Client,
        dead_letters: DeadLetters,
        systems_by_topic: dict[str, str],
        dlq_topic: str,
        *,
        keyring: Keyring | None,
    ) -> None:
        self.client = client
        self.dead_letters = dead_letters
        self.systems_by_topic = systems_by_topic
        self.dlq_topic = dlq_topic
        self.keyring = keyring

    async def handle(self, record: Record) -> None:
        """Deliver one reply, or dead-letter it; return once either is durable."""
        system = self.systems_by_topic.get(record.topic, record.topic)
        try:
            reply, workflow_id = read_reply(record, system, self.keyring)
            await self.deliver(record, reply, workflow_id)
        except Unreadable as exc:
            await self.dead_letters.send(record, exc.reasons, self.dlq_topic)

    async def deliver(self, record: Record, reply: LegacyReplyMessage, workflow_id: str) -> None:
        """Signal the reply to its running bundle.

        Raises:
            Unreadable: `no_open_bundle` when no such bundle runs, `rejected_by_temporal` when
                Temporal refuses the request itself.
        """
        system = self.systems_by_topic.get(record.topic, record.topic)
        handle = self.client.get_workflow_handle(workflow_id)
        where: dict[str, Any] = {**record.where, "tracking_id": workflow_id, "system": system}
        try:
            described = await until_done(
                handle.describe, what="describe_bundle", permanent=_not_found, where=where
            )
        except RPCError as exc:
            raise _undeliverable(exc) from None
        if described.status != WorkflowExecutionStatus.RUNNING:
            raise Unreadable([reason("no_open_bundle", _NO_OPEN_BUNDLE, "correlation_id")])
        signal = LegacyReply(
            correlation_id=reply.correlation_id,
            reply_id=reply_id(record),
            system=system,
            outcome=reply.outcome,
            reference=reply.reference,
            code=reply.code,
            message=reply.message,
            received_at=datetime.now(UTC),
        )

        async def attempt() -> None:
            await handle.signal(SIGNAL_LEGACY_REPLY, signal)

        try:
            await until_done(attempt, what="signal_reply", permanent=_not_found, where=where)
        except RPCError as exc:
            # NOT_FOUND: it closed between describe and signal.
            raise _undeliverable(exc) from None
        log.info("streams.reply_delivered", outcome=reply.outcome, **where)
