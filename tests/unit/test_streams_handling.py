"""The streams role's decisions without a broker or a server: DLQ reason paths, which Temporal
refusals are dead-lettered rather than retried, the reply signal, and what replay commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from bundles.models import LocalizedText
from bundles.submissions import SubmissionInvalid
from bundles.submissions.validation import FieldError
from infra.intake import Intake
from infra.streams import retry
from infra.streams.decoding import Unreadable, safe_dotted_path, validation_reasons
from infra.streams.dlq import DeadLetters
from infra.streams.models import LegacyReplyMessage, SubmissionEnvelope
from infra.streams.records import Record
from infra.streams.replay import commit_offsets
from infra.streams.replies import ReplyConsumer
from infra.streams.retry import rejected_by_temporal, until_done
from infra.streams.submissions import SubmissionConsumer
from workflows.models import LegacyReply
from workflows.names import idempotency_key

PERSONAL = ("Jean Tremblay", "046454286", "2024-05-01", "Tremblay.Jean")


def rpc_error(status: RPCStatusCode) -> RPCError:
    return RPCError("Jean Tremblay's payload is too large", status, b"")


def record(topic: str = "legacy.esdc.replies", partition: int = 2, offset: int = 41) -> Record:
    return Record(topic, partition, offset, b"key", b"{}", (), 0)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.001)


# ------------------------------------------------------------------------ reason paths


def test_a_key_the_sender_chose_is_not_repeated_in_a_reason() -> None:
    data: dict[str, Any] = {
        "schema": "tellonce.submission/v1",
        "submission_id": str(uuid.uuid4()),
        "bundle_id": "newborn-on",
        "channel": "hospital-intake",
        "submission": {},
        "unexpected_field": 1,
        **dict.fromkeys(PERSONAL, "x"),
    }
    with pytest.raises(ValidationError) as caught:
        SubmissionEnvelope.model_validate(data)
    reasons = validation_reasons(caught.value, "envelope_invalid")
    paths = sorted(r.path for r in reasons)
    assert paths == ["?", "?", "?", "?", "unexpected_field"]
    assert not any(p in str(r) for p in PERSONAL for r in reasons)


def test_dotted_submission_paths_keep_fields_and_indexes_only() -> None:
    assert safe_dotted_path("birth_parent.sin") == "birth_parent.sin"
    assert safe_dotted_path("children.0.given_name") == "children.0.given_name"
    assert safe_dotted_path("consents.Tremblay.Jean") == "consents.?"
    assert safe_dotted_path("consents.ccb") == "consents.ccb"
    assert safe_dotted_path("birth_parent.046454286") == "birth_parent.?"
    assert safe_dotted_path("Jean Tremblay") == "?"
    assert safe_dotted_path("") == ""


@dataclass
class StubIntake:
    """Just enough of `Intake` for `SubmissionConsumer.start`."""

    error: BaseException
    catalogue: frozenset[str] = frozenset({"newborn-on"})
    calls: int = 0

    async def submit(self, *_: Any, **__: Any) -> None:
        self.calls += 1
        raise self.error


def envelope() -> SubmissionEnvelope:
    return SubmissionEnvelope.model_validate(
        {
            "schema": "tellonce.submission/v1",
            "submission_id": str(uuid.uuid4()),
            "bundle_id": "newborn-on",
            "channel": "hospital-intake",
            "submission": {},
        }
    )


async def start(error: BaseException) -> tuple[list[str], list[str], StubIntake]:
    intake = StubIntake(error)
    consumer = SubmissionConsumer(cast("Intake", intake), cast("DeadLetters", None), "dlq", keyring=None)
    with pytest.raises(Unreadable) as caught:
        await asyncio.wait_for(consumer.start(record("tellonce.submissions"), envelope(), {}), 5)
    reasons = caught.value.reasons
    return [r.code for r in reasons], [r.path for r in reasons], intake


async def test_a_consent_key_in_a_submission_error_is_not_repeated() -> None:
    text = LocalizedText(en="Unknown consent purpose.", fr="Finalité de consentement inconnue.")
    invalid = SubmissionInvalid(
        [
            FieldError(path="consents.Jean Tremblay", code="unknown_consent_purpose", message=text),
            FieldError(path="consents.046454286", code="unknown_consent_purpose", message=text),
            FieldError(path="birth_parent.sin", code="sin_checksum", message=text),
        ]
    )
    codes, paths, _ = await start(invalid)
    assert codes == ["unknown_consent_purpose", "unknown_consent_purpose", "sin_checksum"]
    assert paths == ["submission.consents.?", "submission.consents.?", "submission.birth_parent.sin"]


# ------------------------------------------------------------------- Temporal refusals


@pytest.mark.parametrize(
    ("status", "rejected"),
    [
        (RPCStatusCode.INVALID_ARGUMENT, True),
        (RPCStatusCode.FAILED_PRECONDITION, False),  # also a namespace not active (failover)
        (RPCStatusCode.UNAVAILABLE, False),
        (RPCStatusCode.DEADLINE_EXCEEDED, False),
        (RPCStatusCode.RESOURCE_EXHAUSTED, False),
        (RPCStatusCode.PERMISSION_DENIED, False),  # a credential, not the record
    ],
)
def test_only_a_refusal_of_the_request_itself_is_permanent(status: RPCStatusCode, rejected: bool) -> None:
    assert rejected_by_temporal(rpc_error(status)) is rejected


def failing_then_ok(errors: list[BaseException]) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return "done"

    return attempt, calls


async def test_until_done_raises_a_refused_request_at_once() -> None:
    attempt, calls = failing_then_ok([rpc_error(RPCStatusCode.INVALID_ARGUMENT)])
    with pytest.raises(RPCError):
        await asyncio.wait_for(until_done(attempt, what="test"), 5)
    assert calls == [1]


async def test_until_done_retries_an_unavailable_server() -> None:
    errors: list[BaseException] = [
        rpc_error(RPCStatusCode.UNAVAILABLE),
        rpc_error(RPCStatusCode.DEADLINE_EXCEEDED),
        rpc_error(RPCStatusCode.RESOURCE_EXHAUSTED),
    ]
    attempt, calls = failing_then_ok(errors)
    assert await asyncio.wait_for(until_done(attempt, what="test"), 5) == "done"
    assert calls == [4]


async def test_a_start_temporal_refuses_is_dead_lettered_by_status_name() -> None:
    codes, paths, intake = await start(rpc_error(RPCStatusCode.INVALID_ARGUMENT))
    assert (codes, paths, intake.calls) == (["rejected_by_temporal"], [""], 1)


# ------------------------------------------------------------------------------ replies


@dataclass
class StubHandle:
    signal_error: BaseException | None = None
    signals: list[Any] = field(default_factory=list)

    async def describe(self) -> Any:
        return type("Described", (), {"status": WorkflowExecutionStatus.RUNNING})()

    async def signal(self, name: str, arg: Any) -> None:
        if self.signal_error is not None:
            raise self.signal_error
        self.signals.append(arg)


@dataclass
class StubClient:
    handle: StubHandle

    def get_workflow_handle(self, workflow_id: str) -> StubHandle:
        return self.handle


def reply_consumer(handle: StubHandle) -> ReplyConsumer:
    client = cast("Client", StubClient(handle))
    return ReplyConsumer(
        client, cast("DeadLetters", None), {"legacy.esdc.replies": "esdc"}, "dlq", keyring=None
    )


def reply_message() -> LegacyReplyMessage:
    correlation_id = idempotency_key("bundle-1", "esdc-sin", "submit")
    return LegacyReplyMessage(correlation_id=correlation_id, outcome="accepted", reference="SIN-REQ-1")


async def test_a_reply_signal_names_its_record_so_a_redelivery_is_recognised() -> None:
    handle = StubHandle()
    consumer = reply_consumer(handle)
    await consumer.deliver(record(partition=2, offset=41), reply_message(), "bundle-1")
    await consumer.deliver(record(partition=2, offset=41), reply_message(), "bundle-1")  # redelivered
    await consumer.deliver(record(partition=2, offset=57), reply_message(), "bundle-1")  # a new reply
    sent = cast("list[LegacyReply]", handle.signals)
    assert [s.reply_id for s in sent] == [
        "legacy.esdc.replies:2:41",
        "legacy.esdc.replies:2:41",
        "legacy.esdc.replies:2:57",
    ]
    assert {s.system for s in sent} == {"esdc"}


async def test_a_reply_temporal_refuses_is_dead_lettered_not_retried() -> None:
    consumer = reply_consumer(StubHandle(signal_error=rpc_error(RPCStatusCode.INVALID_ARGUMENT)))
    with pytest.raises(Unreadable) as caught:
        await asyncio.wait_for(consumer.deliver(record(), reply_message(), "bundle-1"), 5)
    assert [(r.code, r.path) for r in caught.value.reasons] == [("rejected_by_temporal", "")]
    assert "INVALID_ARGUMENT" in caught.value.reasons[0].message
    assert "Jean" not in caught.value.reasons[0].message


async def test_a_reply_to_a_bundle_that_closed_meanwhile_is_still_no_open_bundle() -> None:
    consumer = reply_consumer(StubHandle(signal_error=rpc_error(RPCStatusCode.NOT_FOUND)))
    with pytest.raises(Unreadable) as caught:
        await consumer.deliver(record(), reply_message(), "bundle-1")
    assert [r.code for r in caught.value.reasons] == ["no_open_bundle"]


# ------------------------------------------------------------------------------- replay


def test_replay_commits_only_up_to_the_first_dead_letter_left_out() -> None:
    p0, p1, p2 = (TopicPartition("dlq", n) for n in range(3))
    ends = {p0: 10, p1: 7, p2: 4}
    assert commit_offsets(ends, {}) == ends
    assert commit_offsets(ends, {0: 3, 2: 0}) == {p0: 3, p1: 7, p2: 0}
    # Never back before what an earlier run committed (a run with --from-beginning).
    assert commit_offsets(ends, {0: 3, 2: 0}, {p0: 5, p1: None, p2: None}) == {p0: 5, p1: 7, p2: 0}
