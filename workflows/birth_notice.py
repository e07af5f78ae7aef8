"""`BirthNoticeMatchWorkflow`: pairs hospital Notices of Live Birth with parents' statements."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from bundles.notices import (
        NOTICE_SIGNAL,
        REPORT_UNMATCHED_NOTICE,
        STATE_QUERY,
        STATEMENT_SIGNAL,
        WITHDRAW_STATEMENT_SIGNAL,
        BirthFacts,
        BirthNoticeMatchInput,
        MatchedPair,
        MatchState,
        NoticeArrival,
        NoticeView,
        ReportReason,
        StatementArrival,
        StatementView,
        StatementWithdrawal,
        UnmatchedNoticeReport,
        differences,
        facts_from_notice,
        time_gap,
    )
    from workflows.models import SIGNAL_BIRTH_NOTICE_RESULT, NoticeMatchResult
    from workflows.names import SA_BUNDLE_ID, SA_JURISDICTION, SA_STATE

BIRTH_NOTICE_BUNDLE_ID = "birth-notice"
"""`TellonceBundleId` of matchers, so operations find them next to bundles."""

REPORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=20,
)
"""Reporting is a log line: retry it for a while, then rely on the search attribute alone."""

REPORT_TIMEOUT = timedelta(seconds=30)

_UNKNOWN_GAP = 24 * 60
"""Sort key for a pair whose times of birth are not both known: after every pair whose are."""

StatementKey = tuple[str, str]
"""(bundle workflow id, step id)."""


@dataclass
class _Notice:
    arrival: NoticeArrival
    facts: BirthFacts
    seq: int
    report_at: datetime
    reported: bool = False


@dataclass
class _Statement:
    arrival: StatementArrival
    seq: int
    expires_at: datetime
    # The last conflict signalled (notice id, differences), so the same one is not sent twice.
    reported: tuple[str, tuple[str, ...]] | None = None

    @property
    def key(self) -> StatementKey:
        return (self.arrival.bundle_workflow_id, self.arrival.step_id)


@dataclass
class _Match:
    notice: _Notice
    statement: StatementArrival
    at: datetime


@dataclass
class _Outbox:
    results: list[tuple[str, NoticeMatchResult]] = field(default_factory=list)
    reports: list[UnmatchedNoticeReport] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.results or self.reports)


@workflow.defn
class BirthNoticeMatchWorkflow:
    """Holds the open notices and statements of one correlation key until they pair.

    Guarantees:
    * A statement is paired with an open notice only when no fact both state differs; the bundle
      then gets one `birth_notice_result` signal `matched`, and both leave the open sets. Several
      candidates (twins) pair by closest time of birth, then by arrival.
    * A statement with only conflicting notices gets `conflict` with the names of the differing
      facts against the closest notice, once per distinct conflict; a corrected notice (same
      notice id, new facts) or a re-offered statement is evaluated again. A statement of a
      multiple birth waits for as many notices as its plurality (or its own wait) first.
    * A notice delivered again with the same facts changes nothing.
    * A notice with no statement after `notice_wait` is reported to operations (search attribute
      `TellonceState=needs_attention`, current details, and the `report_unmatched_notice`
      activity), and keeps waiting for a late bundle until `final_limit`.
    * Nothing personal leaves the workflow: signals, reports, details and the query carry notice
      ids, facility ids, bundle ids, fact names and times only.
    """

    @workflow.init
    def __init__(self, start: BirthNoticeMatchInput) -> None:
        # `init` so that the signal that starts the matcher finds its settings already in place.
        self._input = start
        self._notices: dict[str, _Notice] = {}
        self._statements: dict[StatementKey, _Statement] = {}
        self._matches: dict[str, _Match] = {}
        self._corrections_reported: set[tuple[str, BirthFacts]] = set()
        self._notices_seen = 0
        self._seq = 0
        self._outbox = _Outbox()
        self._dirty = False
        self._final_at = workflow.now() + start.final_limit
        self._idle_since: datetime | None = None
        self._finished: MatchState | None = None
        self._visible_state: str | None = None

    # ------------------------------------------------------------------ orchestration

    @workflow.run
    async def run(self, start: BirthNoticeMatchInput) -> MatchState:
        """Pair notices and statements until nothing is left open, or the final limit passes."""
        if start.upsert_search_attributes:
            workflow.upsert_search_attributes(
                [
                    SA_BUNDLE_ID.value_set(BIRTH_NOTICE_BUNDLE_ID),
                    SA_JURISDICTION.value_set(start.jurisdiction),
                ]
            )
        while True:
            now = workflow.now()
            self._evaluate(now)
            if self._outbox:
                await self._flush()
                continue
            self._sync_visibility()
            if self._done(now):
                break
            self._dirty = False
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(lambda: self._dirty, timeout=self._next_wake(now) - now)
        self._finished = self._state()
        self._sync_visibility()
        return self._finished

    def _evaluate(self, now: datetime) -> None:
        """Pair what matches, signal new conflicts, let statements expire and notices fall due."""
        self._pair(now)
        self._signal_conflicts(now)
        for key in [k for k, s in self._statements.items() if now >= s.expires_at]:
            del self._statements[key]
        for notice in self._notices.values():
            if not notice.reported and now >= notice.report_at:
                notice.reported = True
                reason: ReportReason = "no_health_number" if self._input.operator_only else "unmatched"
                self._outbox.reports.append(self._report(notice, reason))
        if self._notices or self._statements:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now

    def _pair(self, now: datetime) -> None:
        candidates = sorted(
            (self._gap(notice, statement), statement.seq, notice.seq, statement.key, notice_id)
            for notice_id, notice in self._notices.items()
            for statement in self._statements.values()
            if not differences(notice.facts, statement.arrival.facts)
        )
        for _gap, _sseq, _nseq, statement_key, notice_id in candidates:
            if notice_id not in self._notices or statement_key not in self._statements:
                continue  # already paired with a closer candidate
            notice = self._notices.pop(notice_id)
            statement = self._statements.pop(statement_key)
            self._matches[notice_id] = _Match(notice=notice, statement=statement.arrival, at=now)
            self._send(statement.arrival, "matched", notice_id, [], now)

    def _signal_conflicts(self, now: datetime) -> None:
        if not self._notices:
            return
        for statement in self._statements.values():
            facts = statement.arrival.facts
            waiting_for_siblings = (facts.plurality or 1) > self._notices_seen
            if waiting_for_siblings and now < statement.expires_at:
                continue
            closest = min(
                self._notices.values(),
                key=lambda n: (len(differences(n.facts, facts)), self._gap(n, statement), n.seq),
            )
            found = (closest.arrival.notice.notice_id, tuple(differences(closest.facts, facts)))
            if statement.reported != found:
                statement.reported = found
                self._send(statement.arrival, "conflict", found[0], list(found[1]), now)

    def _done(self, now: datetime) -> bool:
        if now >= self._final_at:
            return True
        return self._idle_since is not None and now >= self._idle_since + self._input.linger

    def _next_wake(self, now: datetime) -> datetime:
        wakes = [self._final_at]
        wakes += [n.report_at for n in self._notices.values() if not n.reported]
        wakes += [s.expires_at for s in self._statements.values()]
        if self._idle_since is not None:
            wakes.append(self._idle_since + self._input.linger)
        # A wake in the past (a notice received long ago) is due now; Temporal wants a positive timeout.
        return max(min(wakes), now + timedelta(seconds=1))

    async def _flush(self) -> None:
        """Deliver queued results to bundles and reports to operations, in order."""
        results, reports = self._outbox.results, self._outbox.reports
        self._outbox = _Outbox()
        for bundle_workflow_id, result in results:
            try:
                await workflow.get_external_workflow_handle(bundle_workflow_id).signal(
                    SIGNAL_BIRTH_NOTICE_RESULT, result
                )
            except FailureError:
                # The bundle has ended (withdrawn, or failed and closed): nobody is left to tell,
                # and a notice it matched was not used, so it is open again.
                workflow.logger.warning(
                    "birth_notice.result_undelivered",
                    extra={"bundle": bundle_workflow_id, "step": result.step_id, "outcome": result.outcome},
                )
                self._reopen_matches_of((bundle_workflow_id, result.step_id))
        for report in reports:
            try:
                await workflow.execute_activity(
                    REPORT_UNMATCHED_NOTICE,
                    report,
                    start_to_close_timeout=REPORT_TIMEOUT,
                    retry_policy=REPORT_RETRY,
                )
            except ActivityError:
                # The search attribute and current details still show the notice to operations.
                workflow.logger.warning("birth_notice.report_failed", extra={"notice": report.notice_id})

    # ------------------------------------------------------------------ messages

    @workflow.signal(name=NOTICE_SIGNAL)
    def notice(self, arrival: NoticeArrival) -> None:
        """A notice arrived: new, a redelivery (ignored) or a correction (replaces an unmatched one)."""
        notice_id = arrival.notice.notice_id
        facts = facts_from_notice(arrival.notice)
        matched = self._matches.get(notice_id)
        if matched is not None:
            if matched.notice.facts != facts and (notice_id, facts) not in self._corrections_reported:
                # The birth is registered on the facts it matched; a person decides about the change.
                self._corrections_reported.add((notice_id, facts))
                self._outbox.reports.append(self._report(matched.notice, "corrected_after_match"))
                self._dirty = True
            return
        existing = self._notices.get(notice_id)
        if existing is not None:
            if existing.facts != facts:
                existing.arrival, existing.facts = arrival, facts
                existing.seq = self._next_seq()
                self._dirty = True
            return
        self._notices_seen += 1
        wait = timedelta(0) if self._input.operator_only else self._input.notice_wait
        self._notices[notice_id] = _Notice(
            arrival=arrival, facts=facts, seq=self._next_seq(), report_at=workflow.now() + wait
        )
        self._dirty = True

    @workflow.signal(name=STATEMENT_SIGNAL)
    def statement(self, arrival: StatementArrival) -> None:
        """A bundle offered (or re-offered) its statement."""
        key = (arrival.bundle_workflow_id, arrival.step_id)
        self._dirty = True
        for notice_id, match in list(self._matches.items()):
            if (match.statement.bundle_workflow_id, match.statement.step_id) != key:
                continue
            if not differences(match.notice.facts, arrival.facts):
                # A retried offer (its first answer was lost): say `matched` again.
                self._send(arrival, "matched", notice_id, [], workflow.now())
                return
            # Amended so that it no longer matches: the notice is open again for re-evaluation.
            del self._matches[notice_id]
            self._notices[notice_id] = match.notice
        # Waits are counted on the workflow's clock from arrival, not on the sender's clock.
        self._statements[key] = _Statement(
            arrival=arrival, seq=self._next_seq(), expires_at=workflow.now() + arrival.wait
        )

    @workflow.signal(name=WITHDRAW_STATEMENT_SIGNAL)
    def withdraw_statement(self, withdrawal: StatementWithdrawal) -> None:
        """The bundle stopped waiting without registering on this match.

        A bundle withdraws only when it will not send the registration on the notice (the
        resident withdrew, an operator skipped, failed or paired the step by hand, or amended
        facts moved it to another matcher), so a notice it had matched is open again: it can
        pair with another statement, or be reported to operations in time.
        """
        key = (withdrawal.bundle_workflow_id, withdrawal.step_id)
        if self._statements.pop(key, None) is not None:
            self._dirty = True
        self._reopen_matches_of(key)

    def _reopen_matches_of(self, key: StatementKey) -> None:
        for notice_id, match in list(self._matches.items()):
            if (match.statement.bundle_workflow_id, match.statement.step_id) == key:
                del self._matches[notice_id]
                self._notices[notice_id] = match.notice
                self._dirty = True

    @workflow.query(name=STATE_QUERY)
    def state(self) -> MatchState:
        """Ids, counts and deadlines of what the matcher holds; no personal data."""
        return self._finished or self._state()

    # ------------------------------------------------------------------ bookkeeping

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @staticmethod
    def _gap(notice: _Notice, statement: _Statement) -> int:
        gap = time_gap(notice.facts.child_time_of_birth, statement.arrival.facts.child_time_of_birth)
        return _UNKNOWN_GAP if gap is None else gap

    def _send(
        self,
        statement: StatementArrival,
        outcome: Literal["matched", "conflict"],
        notice_id: str,
        diffs: list[str],
        now: datetime,
    ) -> None:
        result = NoticeMatchResult(
            step_id=statement.step_id, outcome=outcome, notice_id=notice_id, differences=diffs, at=now
        )
        self._outbox.results.append((statement.bundle_workflow_id, result))

    def _report(self, notice: _Notice, reason: ReportReason) -> UnmatchedNoticeReport:
        return UnmatchedNoticeReport(
            match_workflow_id=workflow.info().workflow_id,
            notice_id=notice.arrival.notice.notice_id,
            facility_id=notice.arrival.notice.facility.id,
            reason=reason,
            since=notice.arrival.received_at,
        )

    def _state(self) -> MatchState:
        now = workflow.now()
        attention = any(n.reported for n in self._notices.values())
        if self._finished is None and not (now >= self._final_at or self._done(now)):
            state = "needs_attention" if attention else "in_progress"
        else:
            state = "completed_with_exceptions" if self._notices else "completed"
        return MatchState.model_validate(
            {
                "state": state,
                "operator_only": self._input.operator_only,
                "notices_seen": self._notices_seen,
                "open_notices": [
                    NoticeView(
                        notice_id=n.arrival.notice.notice_id,
                        facility_id=n.arrival.notice.facility.id,
                        received_at=n.arrival.received_at,
                        report_at=n.report_at,
                        reported=n.reported,
                    )
                    for n in sorted(self._notices.values(), key=lambda n: n.seq)
                ],
                "open_statements": [
                    StatementView(
                        bundle_workflow_id=s.arrival.bundle_workflow_id,
                        step_id=s.arrival.step_id,
                        offered_at=s.arrival.offered_at,
                        expires_at=s.expires_at,
                        conflict_with=s.reported[0] if s.reported else None,
                        differences=list(s.reported[1]) if s.reported else [],
                    )
                    for s in sorted(self._statements.values(), key=lambda s: s.seq)
                ],
                "matched": [
                    MatchedPair(
                        notice_id=notice_id,
                        bundle_workflow_id=m.statement.bundle_workflow_id,
                        step_id=m.statement.step_id,
                        at=m.at,
                    )
                    for notice_id, m in self._matches.items()
                ],
                "final_at": self._final_at,
            }
        )

    def _sync_visibility(self) -> None:
        """Keep the search attribute and the UI's current details in step, in plain words."""
        current = self._state()
        lines = [
            f"Notice {n.notice_id} from facility {n.facility_id} has had no matching statement "
            f"since {n.received_at.isoformat(timespec='minutes')}."
            for n in current.open_notices
            if n.reported
        ]
        lines += [
            f"Statement of {s.bundle_workflow_id} ({s.step_id}) conflicts with notice {s.conflict_with} "
            f"on {', '.join(s.differences)}."
            for s in current.open_statements
            if s.conflict_with
        ]
        summary = (
            f"**{current.state}**: {len(current.open_notices)} open notice(s), "
            f"{len(current.open_statements)} waiting statement(s), {len(current.matched)} matched"
        )
        workflow.set_current_details("\n".join([summary, *(f"- {line}" for line in lines)]))
        if current.state != self._visible_state:
            self._visible_state = current.state
            if self._input.upsert_search_attributes:
                workflow.upsert_search_attributes([SA_STATE.value_set(current.state)])
