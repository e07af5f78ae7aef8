"""The batch-file adapter on a shared directory, answered by the sandbox's batch run in-process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.batch import DirectoryTransport, SftpTransport, request_file_name, transport_from_settings
from adapters.contract_kit import call_context
from adapters.esdc_sin import REPLY_LAYOUT, REQUEST_LAYOUT, EsdcSinAdapter
from adapters.fixedwidth import FieldSpec
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import NeedsAttentionError, ReplyBatch, StepRequest, TransientError
from infra.sandbox.batch import BatchExchange
from infra.sandbox.faults import FaultUpdate, FieldRule, utcnow
from infra.sandbox.systems import fresh_states
from infra.settings import Settings

SAMPLE = StepRequest(fields=NEWBORN_FIELDS)
KEY = "0b6f3c1e-6a57-4a8e-9d55-3a8f1f0e2c11:social_insurance_number:submit"


class World:
    """An adapter and the sandbox's batch run sharing one directory, with no servers."""

    def __init__(self, root: Path) -> None:
        settings = Settings(environment="test", batch_transport="directory", batch_directory=root)
        self.root = root
        self.states = fresh_states()
        self.exchange = BatchExchange(self.states, settings)
        self.adapter = EsdcSinAdapter.from_settings(settings)

    @property
    def state(self) -> Any:
        return self.states["esdc-sin"]

    def folder(self, name: str) -> list[str]:
        path = self.root / "esdc-sin" / name
        return sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else []

    def fault(self, **update: Any) -> None:
        self.state.faults.update(FaultUpdate(**update), utcnow())

    async def fetch(self) -> list[ReplyBatch]:
        return await self.adapter.fetch_replies(call_context("collector", operation="status"))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_one_request_file_per_key_named_by_a_hash_and_rewritten_on_retry(world: World) -> None:
    first = await world.adapter.submit(call_context(KEY), SAMPLE)
    second = await world.adapter.submit(call_context(KEY, attempt=2), SAMPLE)

    assert first.pending_reply and first == second
    assert world.folder("inbox") == [request_file_name(KEY)]
    assert first.reference == request_file_name(KEY).removesuffix(".dat")
    assert "Tremblay" not in first.reference and KEY not in request_file_name(KEY)
    decoded = REQUEST_LAYOUT.decode_file(
        (world.root / "esdc-sin" / "inbox" / request_file_name(KEY)).read_bytes()
    )
    assert decoded.problems == []
    (record,) = decoded.records
    assert record.values["correlation_id"] == KEY
    assert record.values["child_first_name"] == "Élodie"  # names keep their accents
    assert record.values["province_registration_number"] == "ON-2026-0000042"
    assert record.values["parent_sin"] == "046454286"
    assert record.values["mailing_postal_code"] == "K1A0B1"
    assert record.values["language"] == "F"


async def test_the_run_answers_once_and_acknowledging_moves_the_reply(world: World) -> None:
    await world.adapter.submit(call_context(KEY), SAMPLE)
    assert world.exchange.run_once() == 1

    (batch,) = await world.fetch()
    (reply,) = batch.replies
    assert reply.correlation_id == KEY and reply.outcome == "accepted"
    assert reply.reference is not None and reply.reference.startswith("SIN-REQ-")
    assert reply.reply_id == f"{batch.receipt}:2"
    assert reply.message is not None and reply.message.fr
    assert world.folder("inbox/processed") == [request_file_name(KEY)]
    (entry,) = world.state.ledger
    assert entry.idempotency_key == KEY
    assert entry.fields["child"]["first_name"] == "Élodie"
    assert entry.fields["child"]["birth_date"] == "2026-01-31"

    ctx = call_context("collector", operation="status")
    await world.adapter.acknowledge(ctx, batch.receipt)
    await world.adapter.acknowledge(ctx, batch.receipt)  # idempotent
    assert await world.fetch() == []
    assert world.folder("outbox/done") == [batch.receipt]


async def test_a_request_dropped_again_after_processing_is_answered_from_the_record(world: World) -> None:
    await world.adapter.submit(call_context(KEY), SAMPLE)
    world.exchange.run_once()
    await world.adapter.submit(call_context(KEY, attempt=2), SAMPLE)
    world.exchange.run_once()

    first, second = await world.fetch()
    assert first.replies[0].reference == second.replies[0].reference
    (entry,) = world.state.ledger
    assert entry.replays == 1


async def test_rules_answer_rejected_or_review_in_both_languages(world: World) -> None:
    message = {"en": "Refused.", "fr": "Refusé."}
    rule = FieldRule(field="child.last_name", equals="Tremblay", code="not_eligible", message=message)
    world.fault(reject_when=rule, key_prefix="rejected-")
    await world.adapter.submit(call_context(f"rejected-{KEY}"), SAMPLE)
    await world.adapter.submit(call_context(KEY), SAMPLE)  # outside the rule's key prefix
    world.exchange.run_once()
    review = FieldRule(field="child.sex", equals="F", code="name_mismatch")
    world.fault(reject_when=None, review_when=review, key_prefix="review-")
    await world.adapter.submit(call_context(f"review-{KEY}"), SAMPLE)
    world.exchange.run_once()

    replies = {r.correlation_id: r for batch in await world.fetch() for r in batch.replies}
    rejected = replies[f"rejected-{KEY}"]
    assert (rejected.outcome, rejected.code) == ("rejected", "not_eligible")
    assert rejected.message is not None and rejected.message.model_dump() == message
    reviewed = replies[f"review-{KEY}"]
    assert (reviewed.outcome, reviewed.code) == ("needs_attention", "name_mismatch")
    assert reviewed.message is not None and reviewed.message.en and reviewed.message.fr
    assert replies[KEY].outcome == "accepted"
    assert [e.idempotency_key for e in world.state.ledger] == [KEY]


async def test_a_reply_with_only_a_code_speaks_from_the_code_table(world: World) -> None:
    line = REPLY_LAYOUT.encode_file(
        "B1", utcnow().date(), [{"correlation_id": KEY, "outcome": "R", "reason_code": "sin_already_issued"}]
    )
    outbox = world.root / "esdc-sin" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "REPLY-1.dat").write_bytes(line)
    (batch,) = await world.fetch()
    (reply,) = batch.replies
    assert reply.message == REPLY_LAYOUT.codes["sin_already_issued"]


async def test_a_garbled_reply_line_is_a_problem_and_sends_its_step_to_an_operator(world: World) -> None:
    world.fault(malformed_replies=True, key_prefix="bad-")
    await world.adapter.submit(call_context(f"bad-{KEY}"), SAMPLE)
    await world.adapter.submit(call_context(KEY), SAMPLE)
    world.exchange.run_once()

    (batch,) = await world.fetch()
    replies = {r.correlation_id: r for r in batch.replies}
    assert replies[KEY].outcome == "accepted"
    garbled = replies[f"bad-{KEY}"]
    assert (garbled.outcome, garbled.code) == ("needs_attention", "malformed_reply")
    assert len(batch.problems) == 1 and batch.problems[0].endswith("outcome: not_allowed")
    assert batch.problems[0].startswith("line ")


async def test_a_line_whose_correlation_id_cannot_be_read_is_only_a_problem(world: World) -> None:
    good = REPLY_LAYOUT.encode_file(
        "B1", utcnow().date(), [{"correlation_id": KEY, "outcome": "A", "reference": "R-1"}]
    )
    lines = good.split(b"\r\n")
    _, start, end = next(span for span in REPLY_LAYOUT.spans["D"] if span[0].name == "correlation_id")
    lines[1] = lines[1][:start] + b" " * (end - start) + lines[1][end:]
    outbox = world.root / "esdc-sin" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "REPLY-1.dat").write_bytes(b"\r\n".join(lines))
    (batch,) = await world.fetch()
    assert batch.replies == ()
    assert batch.problems == ("line 2: correlation_id: required",)


async def test_dropped_replies_leave_the_request_accepted_and_unanswered(world: World) -> None:
    world.fault(drop_replies=True)
    await world.adapter.submit(call_context(KEY), SAMPLE)
    assert world.exchange.run_once() == 0
    assert await world.fetch() == []
    assert [e.outcome for e in world.state.ledger] == ["accepted"]


async def test_requests_wait_while_the_system_is_down(world: World) -> None:
    world.fault(down=True, key_prefix=KEY[:8])
    await world.adapter.submit(call_context(KEY), SAMPLE)
    world.exchange.run_once()
    assert world.folder("inbox") == [request_file_name(KEY)]
    assert world.state.ledger == []
    world.fault(down=False)
    world.exchange.run_once()
    assert world.folder("inbox") == []
    assert len(world.state.ledger) == 1


async def test_an_unreadable_request_file_is_set_aside_with_a_reply(world: World) -> None:
    await world.adapter.submit(call_context(KEY), SAMPLE)
    path = world.root / "esdc-sin" / "inbox" / request_file_name(KEY)
    start = next(s for spec, s, _ in REQUEST_LAYOUT.spans["D"] if spec.name == "child_birth_date")
    data = bytearray(path.read_bytes())
    line = REQUEST_LAYOUT.record_length + 2
    data[line + start : line + start + 8] = b"20261399"
    path.write_bytes(bytes(data))
    world.exchange.run_once()

    assert world.folder("inbox/rejected") == [path.name]
    (batch,) = await world.fetch()
    (reply,) = batch.replies
    assert (reply.outcome, reply.code) == ("needs_attention", "request_unreadable")
    assert world.state.ledger == []


async def test_a_request_that_does_not_fit_the_layout_needs_a_person(world: World) -> None:
    fields = {**NEWBORN_FIELDS, "child": {**NEWBORN_FIELDS["child"], "surname": "Łukasiewicz-" + "x" * 40}}
    with pytest.raises(NeedsAttentionError) as caught:
        await world.adapter.submit(call_context(KEY), StepRequest(fields=fields))
    assert caught.value.code == "request_not_encodable"
    assert caught.value.detail == "child_last_name: too_wide"
    assert "Łukasiewicz" not in str(caught.value)
    assert world.folder("inbox") == []


async def test_no_time_left_or_no_server_is_transient() -> None:
    adapter = EsdcSinAdapter(DirectoryTransport(Path("/nonexistent")))
    with pytest.raises(TransientError) as caught:
        await adapter.submit(call_context(KEY, timeout=timedelta(0)), SAMPLE)
    assert caught.value.code == "deadline_passed"
    unreachable = EsdcSinAdapter(SftpTransport("127.0.0.1", 1, "tellonce", password="x"))
    with pytest.raises(TransientError) as caught:
        await unreachable.fetch_replies(call_context("collector", operation="status"))
    assert caught.value.code == "connection_failed"


def test_settings_choose_the_transport(tmp_path: Path) -> None:
    directory = transport_from_settings(Settings(batch_transport="directory", batch_directory=tmp_path))
    assert isinstance(directory, DirectoryTransport) and directory.root == tmp_path
    sftp = transport_from_settings(Settings(sftp_host="files.example", sftp_port=2222))
    assert isinstance(sftp, SftpTransport) and (sftp.host, sftp.port) == ("files.example", 2222)


def test_the_correlation_id_field_holds_any_key_tellonce_makes() -> None:
    spec = next(s for s in REQUEST_LAYOUT.detail.fields if s.name == "correlation_id")
    assert isinstance(spec, FieldSpec) and spec.required
    # A uuid, the longest step id of the catalogue and a revision still fit.
    assert len(f"{KEY}:r99") <= spec.width


async def test_a_reply_file_cut_short_is_delivered_so_far_but_not_acknowledged(world: World) -> None:
    whole = REPLY_LAYOUT.encode_file(
        "B1",
        utcnow().date(),
        [
            {"correlation_id": KEY, "outcome": "A", "reference": "R-1"},
            {"correlation_id": f"second-{KEY}", "outcome": "A", "reference": "R-2"},
        ],
    )
    lines = whole.split(b"\r\n")
    outbox = world.root / "esdc-sin" / "outbox"
    outbox.mkdir(parents=True)
    # The system is still writing: the header and the first record are there, nothing more.
    (outbox / "REPLY-1.dat").write_bytes(b"\r\n".join(lines[:2]) + b"\r\n")
    (partial,) = await world.fetch()
    assert not partial.complete
    assert [r.correlation_id for r in partial.replies] == [KEY]

    (outbox / "REPLY-1.dat").write_bytes(whole)
    (finished,) = await world.fetch()
    assert finished.complete and len(finished.replies) == 2
    # The same line read twice is the same reply: its bundle applies it once.
    assert finished.replies[0].reply_id == partial.replies[0].reply_id
