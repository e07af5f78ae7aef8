"""BirthNoticeMatchWorkflow on the time-skipping test server, with the real NoticeActivities.

A tiny stand-in workflow plays the bundle: it offers its statement through the real
`offer_birth_statement` activity, records every `birth_notice_result` signal, and can withdraw or
re-offer. Waits of days are workflow time that the test server skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel, SecretStr
from stdnum import luhn
from structlog.testing import capture_logs
from temporalio import workflow
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.notices import NO_HEALTH_NUMBER, NoticeActivities, deliver_notice
from bundles.notices import (
    NOTICE_SCHEMA,
    OFFER_BIRTH_STATEMENT,
    WITHDRAW_STATEMENT_SIGNAL,
    BirthNotice,
    MatchState,
    OfferResult,
    StatementOfferCall,
    StatementWithdrawal,
)
from infra.settings import Settings
from tests.encryption import TEST_DATA_CONVERTER
from workflows.birth_notice import BirthNoticeMatchWorkflow
from workflows.models import SIGNAL_BIRTH_NOTICE_RESULT, NoticeMatchResult
from workflows.names import BIRTH_NOTICE_WORKFLOW_PREFIX, bundle_task_queue

T = TypeVar("T")

# ---------------------------------------------------------------------- the stand-in bundle


class StandInInput(BaseModel):
    payload: dict[str, Any]
    step_id: str = "birth_registration"
    wait: timedelta = timedelta(days=30)


@workflow.defn(sandboxed=False)
class StandInBundle:
    """Offers a statement like the bundle's registration step, and records what comes back."""

    def __init__(self) -> None:
        self._results: list[NoticeMatchResult] = []
        self._offers: list[OfferResult] = []
        self._to_offer: list[dict[str, Any]] = []
        self._withdraw = False

    @workflow.run
    async def run(self, start: StandInInput) -> None:
        self._to_offer.append(start.payload)
        while True:
            await workflow.wait_condition(lambda: bool(self._to_offer) or self._withdraw)
            if self._withdraw and self._offers and self._offers[-1].match_workflow_id:
                self._withdraw = False
                await workflow.get_external_workflow_handle(self._offers[-1].match_workflow_id).signal(
                    WITHDRAW_STATEMENT_SIGNAL,
                    StatementWithdrawal(
                        bundle_workflow_id=workflow.info().workflow_id, step_id=start.step_id
                    ),
                )
            while self._to_offer:
                offer = await workflow.execute_activity(
                    OFFER_BIRTH_STATEMENT,
                    StatementOfferCall(
                        bundle_workflow_id=workflow.info().workflow_id,
                        step_id=start.step_id,
                        payload=self._to_offer.pop(0),
                        wait=start.wait,
                    ),
                    result_type=OfferResult,
                    start_to_close_timeout=timedelta(seconds=30),
                )
                self._offers.append(offer)

    @workflow.signal(name=SIGNAL_BIRTH_NOTICE_RESULT)
    def birth_notice_result(self, result: NoticeMatchResult) -> None:
        self._results.append(result)

    @workflow.signal
    def offer_again(self, payload: dict[str, Any]) -> None:
        self._to_offer.append(payload)

    @workflow.signal
    def withdraw(self) -> None:
        self._withdraw = True

    @workflow.query
    def results(self) -> list[NoticeMatchResult]:
        return self._results

    @workflow.query
    def offers(self) -> list[OfferResult]:
        return self._offers


# ---------------------------------------------------------------------- synthetic facts


def health_number() -> str:
    """A fresh valid Ontario health number (10 digits, Luhn), so tests never share a matcher."""
    body = "".join(random.choice("0123456789") for _ in range(9))
    return body + luhn.calc_check_digit(body)


def statement(hn: str, **child: Any) -> dict[str, Any]:
    """A birth_registration payload as the plan projects it (JSON-shaped, names included)."""
    return {
        "language": "en",
        "child": {
            "given_names": "Zoë-Chloé",
            "surname": "O'Neil-Bélanger",
            "sex": "F",
            "date_of_birth": "2026-11-10",
            "time_of_birth": "04:32:00",
            "plurality": 1,
            "place_of_birth": {
                "facility_name": "Bytown General Hospital",
                "municipality": "Ottawa",
                "province": "ON",
            },
            **child,
        },
        "birth_parent": {
            "given_names": "Marie-Ève",
            "surname": "Bélanger",
            "date_of_birth": "1992-03-14",
            "health_number": f"{hn}AB",
        },
    }


def notice(hn: str | None, notice_id: str = "NLB-2026-0001234", **child: Any) -> BirthNotice:
    return BirthNotice.model_validate(
        {
            "schema": NOTICE_SCHEMA,
            "notice_id": notice_id,
            "facility": {"kind": "hospital", "id": "3910", "name": "Hôpital général de Bytown"},
            "issued_at": "2026-11-10T09:15:00-05:00",
            "child": {"date_of_birth": "2026-11-10", "time_of_birth": "04:34", "sex": "F", **child},
            "birth_parent": {"health_number": hn, "date_of_birth": "1992-03-14"},
        }
    )


# ---------------------------------------------------------------------- harness


@dataclass
class Harness:
    env: WorkflowEnvironment
    settings: Settings
    activities: NoticeActivities
    started: set[str] = field(default_factory=set)

    @property
    def client(self) -> Client:
        return self.env.client

    async def bundle(self, payload: dict[str, Any], **kwargs: Any) -> WorkflowHandle[Any, Any]:
        handle = await self.client.start_workflow(
            StandInBundle.run,
            StandInInput(payload=payload, **kwargs),
            id=f"bundle-{uuid.uuid4()}",
            task_queue=bundle_task_queue(self.settings.task_queue_prefix),
        )
        self.started.add(handle.id)
        offers = await eventually(lambda: handle.query(StandInBundle.offers), bool)
        assert offers[0].match_workflow_id is not None
        self.started.add(offers[0].match_workflow_id)
        return handle

    async def deliver(self, birth_notice: BirthNotice) -> str:
        # The received time comes from the test server's clock, which earlier tests moved on.
        workflow_id = await deliver_notice(
            self.client,
            birth_notice,
            settings=self.settings,
            received_at=await self.env.get_current_time(),
            upsert_search_attributes=False,
        )
        self.started.add(workflow_id)
        return workflow_id

    async def finish(self, workflow_id: str, after: timedelta = timedelta(days=8)) -> MatchState:
        """Skip workflow time past the matcher's linger (or final limit) and take its result.

        Only handles the test client starts skip time by themselves while awaiting a result.
        """
        await self.env.sleep(after)
        return await self.matcher(workflow_id).result()

    def matcher(self, workflow_id: str) -> WorkflowHandle[BirthNoticeMatchWorkflow, MatchState]:
        return self.client.get_workflow_handle_for(BirthNoticeMatchWorkflow.run, workflow_id)

    async def matcher_of(self, bundle: WorkflowHandle[Any, Any]) -> str:
        offers = await bundle.query(StandInBundle.offers)
        workflow_id = offers[0].match_workflow_id
        assert workflow_id is not None
        return str(workflow_id)


@asynccontextmanager
async def harness(env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    settings = Settings(
        environment="test",
        task_queue_prefix=f"t-{uuid.uuid4().hex[:10]}",
        correlation_secret=SecretStr(uuid.uuid4().hex),
    )
    activities = NoticeActivities(
        env.client,
        secret=settings.correlation_secret.get_secret_value().encode(),
        task_queue_prefix=settings.task_queue_prefix,
        upsert_search_attributes=False,
    )
    worker = Worker(
        env.client,
        task_queue=bundle_task_queue(settings.task_queue_prefix),
        workflows=[BirthNoticeMatchWorkflow, StandInBundle],
        activities=[activities.offer_birth_statement, activities.report_unmatched_notice],
    )
    h = Harness(env, settings, activities)
    async with worker:
        try:
            yield h
        finally:
            # The test server shares one clock: a workflow left with a timer and no worker would
            # stop every later test's skip. End whatever is still running, each once it is idle:
            # terminated mid workflow task, it keeps the test server's clock locked.
            for workflow_id in h.started:
                handle = env.client.get_workflow_handle(workflow_id)
                with contextlib.suppress(RPCError):
                    await eventually(functools.partial(idle, handle), bool)
                    await handle.terminate()


async def idle(handle: WorkflowHandle[Any, Any]) -> bool:
    """Closed, or open with no workflow task scheduled or running since the last one completed."""
    if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
        return True
    kinds = [e.WhichOneof("attributes") for e in (await handle.fetch_history()).events]
    last_done = max(i for i, kind in enumerate(kinds) if kind == "workflow_task_completed_event_attributes")
    return not any(kind.startswith("workflow_task_") for kind in kinds[last_done + 1 :] if kind)


async def eventually(
    probe: Callable[[], Awaitable[T]], predicate: Callable[[T], bool], timeout: float = 10
) -> T:
    """Poll until the predicate holds (workflow tasks run asynchronously to the test)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if predicate(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met; last value: {value!r}")
        await asyncio.sleep(0.05)


async def results(bundle: WorkflowHandle[Any, Any], count: int) -> list[NoticeMatchResult]:
    return await eventually(lambda: bundle.query(StandInBundle.results), lambda r: len(r) >= count)


async def state(h: Harness, workflow_id: str, predicate: Callable[[MatchState], bool]) -> MatchState:
    return await eventually(lambda: h.matcher(workflow_id).query(BirthNoticeMatchWorkflow.state), predicate)


async def assert_replays(h: Harness, workflow_id: str) -> None:
    history = await h.matcher(workflow_id).fetch_history()
    await Replayer(workflows=[BirthNoticeMatchWorkflow], data_converter=TEST_DATA_CONVERTER).replay_workflow(
        history
    )


# ---------------------------------------------------------------------- tests


async def test_notice_first_then_statement_matches(own_time_env: WorkflowEnvironment) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        matcher_id = await h.deliver(notice(hn))
        assert matcher_id.startswith(BIRTH_NOTICE_WORKFLOW_PREFIX)
        assert hn not in matcher_id
        await state(h, matcher_id, lambda s: s.notices_seen == 1)

        bundle = await h.bundle(statement(hn))
        assert await h.matcher_of(bundle) == matcher_id
        [result] = await results(bundle, 1)
        assert (result.outcome, result.notice_id, result.step_id) == (
            "matched",
            "NLB-2026-0001234",
            "birth_registration",
        )
        # Every notice matched and no statement waits: the matcher ends after its short linger.
        final = await h.finish(matcher_id)
        assert final.state == "completed"
        assert [m.bundle_workflow_id for m in final.matched] == [bundle.id]
        assert not final.open_notices and not final.open_statements
        await assert_replays(h, matcher_id)


async def test_statement_first_then_notice_matches(own_time_env: WorkflowEnvironment) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        bundle = await h.bundle(statement(hn))
        matcher_id = await h.matcher_of(bundle)
        waiting = await state(h, matcher_id, lambda s: len(s.open_statements) == 1)
        assert waiting.state == "in_progress" and not waiting.open_notices

        assert await h.deliver(notice(hn)) == matcher_id
        [result] = await results(bundle, 1)
        assert result.outcome == "matched"


async def test_conflict_names_the_facts_then_a_corrected_notice_matches(
    own_time_env: WorkflowEnvironment,
) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        bundle = await h.bundle(statement(hn))
        matcher_id = await h.matcher_of(bundle)
        # Sex differs; 10 minutes apart is within the tolerance; the facility names the same place.
        await h.deliver(notice(hn, sex="M", time_of_birth="04:42"))
        [conflict] = await results(bundle, 1)
        assert conflict.outcome == "conflict"
        assert conflict.differences == ["child.sex"]
        assert conflict.notice_id == "NLB-2026-0001234"
        assert "M" not in conflict.model_dump_json(include={"differences"}).replace("child.sex", "")
        shown = await state(h, matcher_id, lambda s: s.open_statements[0].conflict_with is not None)
        assert shown.open_statements[0].differences == ["child.sex"]

        # The same conflicting notice again changes nothing: the conflict is not signalled twice.
        await h.deliver(notice(hn, sex="M", time_of_birth="04:42"))
        await asyncio.sleep(0.3)
        assert len(await bundle.query(StandInBundle.results)) == 1

        # The hospital corrects its notice (same number, new facts): now they match.
        await h.deliver(notice(hn, sex="F"))
        _, matched = await results(bundle, 2)
        assert (matched.outcome, matched.notice_id) == ("matched", "NLB-2026-0001234")
        final = await h.finish(matcher_id)
        assert final.notices_seen == 1 and final.state == "completed"
        await assert_replays(h, matcher_id)


async def test_duplicate_notice_is_ignored_and_a_retried_offer_hears_matched_again(
    own_time_env: WorkflowEnvironment,
) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        matcher_id = await h.deliver(notice(hn))
        await h.deliver(notice(hn))
        dup = await state(h, matcher_id, lambda s: s.notices_seen >= 1)
        assert dup.notices_seen == 1 and len(dup.open_notices) == 1

        bundle = await h.bundle(statement(hn))
        await results(bundle, 1)
        # Kafka redelivers the notice after the match: still one notice, nothing reported.
        with capture_logs() as logs:
            await h.deliver(notice(hn))
            await bundle.signal(StandInBundle.offer_again, statement(hn))
            again = await results(bundle, 2)
        assert [r.outcome for r in again] == ["matched", "matched"]
        after = await state(h, matcher_id, lambda s: len(s.matched) == 1)
        assert after.notices_seen == 1 and not after.open_notices and not after.open_statements
        assert not [e for e in logs if e["event"] == "birth_notice.needs_attention"]


async def test_twins_pair_by_birth_order_and_wait_for_both_notices(own_time_env: WorkflowEnvironment) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        first = await h.bundle(statement(hn, plurality=2, birth_order=1, time_of_birth="04:32:00"))
        matcher_id = await h.matcher_of(first)
        # Only the second twin's notice so far: it differs from the first twin's statement, but a
        # twin's statement waits for both notices before calling anything a conflict.
        await h.deliver(notice(hn, "NLB-2026-0000002", plurality=2, birth_order=2, time_of_birth="04:41"))
        await state(h, matcher_id, lambda s: s.notices_seen == 1)
        await asyncio.sleep(0.3)
        assert await first.query(StandInBundle.results) == []

        second = await h.bundle(statement(hn, plurality=2, birth_order=2, time_of_birth="04:40:00"))
        await h.deliver(notice(hn, "NLB-2026-0000001", plurality=2, birth_order=1, time_of_birth="04:33"))
        [one] = await results(first, 1)
        [two] = await results(second, 1)
        assert (one.outcome, one.notice_id) == ("matched", "NLB-2026-0000001")
        assert (two.outcome, two.notice_id) == ("matched", "NLB-2026-0000002")
        final = await h.finish(matcher_id)
        assert final.state == "completed" and len(final.matched) == 2
        await assert_replays(h, matcher_id)


async def test_notice_without_statement_is_reported_then_kept_until_the_final_limit(
    own_time_env: WorkflowEnvironment,
) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        with capture_logs() as logs:
            matcher_id = await h.deliver(notice(hn))
            early = await state(h, matcher_id, lambda s: s.notices_seen == 1)
            assert early.state == "in_progress" and not early.open_notices[0].reported

            await own_time_env.sleep(timedelta(days=31))
            reported = await state(h, matcher_id, lambda s: s.state == "needs_attention")
            assert reported.open_notices[0].reported
            await eventually(
                lambda: asyncio.sleep(0, [e for e in logs if e["event"] == "birth_notice.needs_attention"]),
                bool,
            )
        [entry] = [e for e in logs if e["event"] == "birth_notice.needs_attention"]
        assert entry["log_level"] == "warning"
        assert (entry["notice_id"], entry["facility_id"], entry["reason"]) == (
            "NLB-2026-0001234",
            "3910",
            "unmatched",
        )
        assert hn not in str(entry) and "1992" not in str(entry)
        # What the Temporal UI shows operators, in plain words and ids only.
        metadata = await h.matcher(matcher_id).query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
        assert "Notice NLB-2026-0001234 from facility 3910" in metadata.current_details
        assert hn not in metadata.current_details

        final = await h.finish(matcher_id, timedelta(days=366))
        assert final.state == "completed_with_exceptions"
        assert [n.notice_id for n in final.open_notices] == ["NLB-2026-0001234"]
        await assert_replays(h, matcher_id)


async def test_late_statement_still_matches_a_reported_notice(own_time_env: WorkflowEnvironment) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        matcher_id = await h.deliver(notice(hn))
        await own_time_env.sleep(timedelta(days=45))
        await state(h, matcher_id, lambda s: s.state == "needs_attention")
        bundle = await h.bundle(statement(hn))
        [result] = await results(bundle, 1)
        assert result.outcome == "matched"
        back = await state(h, matcher_id, lambda s: not s.open_notices)
        assert back.state in ("in_progress", "completed")


async def test_withdrawn_statement_is_not_told_about_a_later_notice(
    own_time_env: WorkflowEnvironment,
) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        bundle = await h.bundle(statement(hn))
        matcher_id = await h.matcher_of(bundle)
        await bundle.signal(StandInBundle.withdraw)
        await state(h, matcher_id, lambda s: not s.open_statements)

        await h.deliver(notice(hn))
        later = await state(h, matcher_id, lambda s: s.notices_seen == 1)
        assert len(later.open_notices) == 1 and not later.matched
        await asyncio.sleep(0.3)
        assert await bundle.query(StandInBundle.results) == []


async def test_withdrawn_statement_alone_lets_the_matcher_finish(own_time_env: WorkflowEnvironment) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        bundle = await h.bundle(statement(hn))
        matcher_id = await h.matcher_of(bundle)
        await bundle.signal(StandInBundle.withdraw)
        final = await h.finish(matcher_id)
        assert final.state == "completed" and not final.matched and not final.open_statements


async def test_notice_without_health_number_goes_to_operations_at_once(
    own_time_env: WorkflowEnvironment,
) -> None:
    async with harness(own_time_env) as h:
        with capture_logs() as logs:
            matcher_id = await h.deliver(notice(None))
            shown = await state(h, matcher_id, lambda s: s.state == "needs_attention")
            await eventually(
                lambda: asyncio.sleep(0, [e for e in logs if e["event"] == "birth_notice.needs_attention"]),
                bool,
            )
        assert shown.operator_only
        assert matcher_id.startswith(BIRTH_NOTICE_WORKFLOW_PREFIX + "nohn-")
        [entry] = [e for e in logs if e["event"] == "birth_notice.needs_attention"]
        assert entry["reason"] == "no_health_number"


async def test_statement_without_health_number_is_not_correlated() -> None:
    activities = NoticeActivities(
        client=None,  # type: ignore[arg-type]  # never reached: there is nothing to signal
        secret=b"secret",
        task_queue_prefix="t",
    )
    payload = statement("0000000000")
    del payload["birth_parent"]["health_number"]
    result = await ActivityEnvironment().run(
        activities.offer_birth_statement,
        StatementOfferCall(
            bundle_workflow_id="b-1", step_id="birth_registration", payload=payload, wait=timedelta(days=1)
        ),
    )
    assert result == OfferResult(match_workflow_id=None, reason=NO_HEALTH_NUMBER)


async def test_a_matched_statement_withdrawn_unused_gives_its_notice_back(
    own_time_env: WorkflowEnvironment,
) -> None:
    hn = health_number()
    async with harness(own_time_env) as h:
        matcher_id = await h.deliver(notice(hn))
        bundle = await h.bundle(statement(hn))
        [result] = await results(bundle, 1)
        assert result.outcome == "matched"
        # The bundle stops before it registers (the resident withdrew in that very moment).
        await bundle.signal(StandInBundle.withdraw)
        reopened = await state(h, matcher_id, lambda s: not s.matched)
        assert [n.notice_id for n in reopened.open_notices] == ["NLB-2026-0001234"]

        # Another statement with the same facts (the parents apply again) can still match it.
        again = await h.bundle(statement(hn))
        [second] = await results(again, 1)
        assert (second.outcome, second.notice_id) == ("matched", "NLB-2026-0001234")
        await assert_replays(h, matcher_id)
