"""Birth-notice activities and delivery: hand a statement or a notice to its matcher workflow.

Both sides use signal-with-start, so whichever of notice and statement comes first starts the
matcher (`workflows.birth_notice.BirthNoticeMatchWorkflow`) and the other finds it running.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from bundles.notices import (
    NOTICE_SIGNAL,
    OFFER_BIRTH_STATEMENT,
    REPORT_UNMATCHED_NOTICE,
    STATEMENT_SIGNAL,
    STATEMENT_UNREADABLE,
    BirthNotice,
    BirthNoticeMatchInput,
    NoticeArrival,
    OfferResult,
    StatementArrival,
    StatementInvalidError,
    StatementOfferCall,
    UnmatchedNoticeReport,
    correlation_key,
    facts_from_notice,
    facts_from_statement,
    match_workflow_id,
    unkeyed_notice_key,
)
from infra.settings import Settings
from workflows.birth_notice import BirthNoticeMatchWorkflow
from workflows.names import bundle_task_queue

log = structlog.get_logger("tellonce.activities.notices")

NO_HEALTH_NUMBER = "no_health_number"
"""`OfferResult.reason` when a statement has no health number to correlate on."""


class NoticeActivities:
    """Activities of the birth-notice matcher, given a Temporal client and the correlation secret."""

    def __init__(
        self,
        client: Client,
        *,
        secret: bytes,
        task_queue_prefix: str,
        upsert_search_attributes: bool = True,
    ) -> None:
        self._client = client
        self._secret = secret
        self._task_queue = bundle_task_queue(task_queue_prefix)
        self._upsert_search_attributes = upsert_search_attributes

    @activity.defn(name=OFFER_BIRTH_STATEMENT)
    async def offer_birth_statement(self, call: StatementOfferCall) -> OfferResult:
        """Hand a bundle's Statement of Live Birth to the matcher of its key, starting it if needed.

        Returns:
            The matcher's workflow id; or None and ``no_health_number`` when the statement cannot
            be correlated (an operator pairs it).

        Raises:
            ApplicationError: ``StatementUnreadable`` (non-retryable) when the payload lacks the
                child's birth date or holds a malformed fact; names fields, never values.
        """
        bound = log.bind(bundle=call.bundle_workflow_id, step=call.step_id)
        try:
            facts = facts_from_statement(call.payload)
        except StatementInvalidError as exc:
            raise ApplicationError(str(exc), type=STATEMENT_UNREADABLE, non_retryable=True) from None
        key = correlation_key(facts, self._secret)
        if key is None:
            bound.info("birth_statement.not_correlated", reason=NO_HEALTH_NUMBER)
            return OfferResult(match_workflow_id=None, reason=NO_HEALTH_NUMBER)
        workflow_id = match_workflow_id(key)
        arrival = StatementArrival(
            bundle_workflow_id=call.bundle_workflow_id,
            step_id=call.step_id,
            facts=facts,
            offered_at=datetime.now(UTC),
            wait=call.wait,
        )
        await self._client.start_workflow(
            BirthNoticeMatchWorkflow.run,
            BirthNoticeMatchInput(key=key, upsert_search_attributes=self._upsert_search_attributes),
            id=workflow_id,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=STATEMENT_SIGNAL,
            start_signal_args=[arrival],
        )
        bound.info("birth_statement.offered", matcher=workflow_id)
        return OfferResult(match_workflow_id=workflow_id, reason=None)

    @activity.defn(name=REPORT_UNMATCHED_NOTICE)
    async def report_unmatched_notice(self, report: UnmatchedNoticeReport) -> None:
        """Tell operations about a notice that needs a person: a structured warning, ids only."""
        log.warning(
            "birth_notice.needs_attention",
            matcher=report.match_workflow_id,
            notice_id=report.notice_id,
            facility_id=report.facility_id,
            reason=report.reason,
            since=report.since.isoformat(),
        )


async def deliver_notice(
    client: Client,
    notice: BirthNotice,
    *,
    settings: Settings,
    received_at: datetime | None = None,
    upsert_search_attributes: bool = True,
) -> str:
    """Deliver a notice to its matcher, starting the matcher if no statement has yet.

    A notice without a health number goes to a matcher keyed by facility, child's and birth
    parent's birth dates, which no statement can find: it is reported to operations at once.

    Args:
        client: A Temporal client with tellonce's data converter.
        notice: The parsed notice (`bundles.notices.parse_notice`).
        settings: For the correlation secret and the task-queue prefix.
        received_at: When the notice was received (the Kafka record's time); now when not given.
        upsert_search_attributes: Off only on the time-skipping test server.

    Returns:
        The matcher's workflow id (not personal: a keyed digest).
    """
    secret = settings.correlation_secret.get_secret_value().encode()
    facts = facts_from_notice(notice)
    key = correlation_key(facts, secret)
    operator_only = key is None
    if key is None:
        key = unkeyed_notice_key(facts, secret)
    workflow_id = match_workflow_id(key)
    await client.start_workflow(
        BirthNoticeMatchWorkflow.run,
        BirthNoticeMatchInput(
            key=key, operator_only=operator_only, upsert_search_attributes=upsert_search_attributes
        ),
        id=workflow_id,
        task_queue=bundle_task_queue(settings.task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=NOTICE_SIGNAL,
        start_signal_args=[NoticeArrival(notice=notice, received_at=received_at or datetime.now(UTC))],
    )
    log.info(
        "birth_notice.delivered",
        matcher=workflow_id,
        notice_id=notice.notice_id,
        facility_id=notice.facility.id,
        operator_only=operator_only,
    )
    return workflow_id
