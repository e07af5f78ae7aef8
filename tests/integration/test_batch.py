"""ESDC's SIN intake as a batch system: request files over SFTP to the real sandbox, replies later.

The adapter talks to the sandbox process's SFTP server; the sandbox's batch run answers every
second. The last two tests carry replies into bundles: dropped replies end in `reply_overdue`
(time-skipping server), collected ones complete the bundle (dev server).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.replies import CollectResult, ReplyActivities
from adapters.batch import DirectoryTransport, request_file_name
from adapters.contract_kit import call_context, closed_port
from adapters.esdc_sin import REPLY_LAYOUT, EsdcSinAdapter
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import AsyncReply, ReplyBatch, StepRequest, TransientError
from bundles.models import BundleDefinition
from bundles.plan import BundlePlan, resolve_plan
from infra.sandbox.client import SandboxAdmin
from infra.worker import start_reply_collectors
from tests.conftest import SandboxProcess
from tests.workflow.support import (
    DEFINITION,
    new_prefix,
    running_workers,
    start_bundle,
    step,
    wait_for,
)
from workflows.models import BundleState, StepState
from workflows.names import idempotency_key

pytestmark = pytest.mark.integration

SAMPLE = StepRequest(fields=NEWBORN_FIELDS)
SYSTEM = "esdc-sin"
REPLY_WITHIN = 20.0
"""Seconds to wait for a reply; the sandbox's run answers every second."""


@pytest.fixture
async def admin(sandbox: SandboxProcess) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox.url) as client:
        yield client
        await client.clear_faults(SYSTEM)


@pytest.fixture
async def adapter(sandbox: SandboxProcess) -> AsyncIterator[EsdcSinAdapter]:
    built = EsdcSinAdapter.from_settings(sandbox.settings())
    yield built
    await built.aclose()


def new_key(prefix: str = "") -> str:
    return idempotency_key(f"{prefix}{uuid.uuid4()}", "social_insurance_number", "submit")


async def reply_to(adapter: EsdcSinAdapter, key: str) -> tuple[AsyncReply, ReplyBatch]:
    """Poll the outbox (without acknowledging) until the reply to `key` appears."""
    deadline = asyncio.get_running_loop().time() + REPLY_WITHIN
    while True:
        for batch in await adapter.fetch_replies(call_context("test-collector", operation="status")):
            for reply in batch.replies:
                if reply.correlation_id == key:
                    return reply, batch
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"no reply within {REPLY_WITHIN}s")
        await asyncio.sleep(0.25)


async def ledger_entries(admin: SandboxAdmin, key_prefix: str) -> list[dict[str, Any]]:
    """The ledger entries of a key prefix, once the sandbox's batch run has recorded any."""
    deadline = asyncio.get_running_loop().time() + REPLY_WITHIN
    while not (entries := await admin.ledger(SYSTEM, key_prefix=key_prefix)):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("the system never took the request")
        await asyncio.sleep(0.25)
    return entries


async def test_a_request_over_sftp_is_answered_later_and_its_reply_file_acknowledged(
    adapter: EsdcSinAdapter, sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    key = new_key()
    taken = await adapter.submit(call_context(key), SAMPLE)
    assert taken.pending_reply
    assert taken.reference == request_file_name(key).removesuffix(".dat")

    reply, batch = await reply_to(adapter, key)
    assert reply.outcome == "accepted"
    assert reply.reference is not None and reply.reference.startswith("SIN-REQ-")
    (entry,) = await admin.ledger(SYSTEM, key_prefix=key)
    assert entry["reference"] == reply.reference
    assert entry["fields"]["child"]["first_name"] == "Élodie"
    assert entry["fields"]["province_registration_number"] == "ON-2026-0000042"

    if all(r.correlation_id == key for r in batch.replies):  # never take another test's replies away
        await adapter.acknowledge(call_context("test-collector", operation="status"), batch.receipt)
        exchange = sandbox.data_dir / "sandbox" / "batch" / SYSTEM
        assert (exchange / "outbox" / "done" / batch.receipt).is_file()
        assert not (exchange / "outbox" / batch.receipt).exists()
        remaining = await adapter.fetch_replies(call_context("test-collector", operation="status"))
        assert batch.receipt not in {b.receipt for b in remaining}


async def test_the_same_key_sent_twice_has_one_effect(adapter: EsdcSinAdapter, admin: SandboxAdmin) -> None:
    key = new_key()
    await adapter.submit(call_context(key), SAMPLE)
    first, _ = await reply_to(adapter, key)
    # The retry after the system already consumed the file: answered from its record.
    await adapter.submit(call_context(key, attempt=2), SAMPLE)
    deadline = asyncio.get_running_loop().time() + REPLY_WITHIN
    while True:
        entries = await admin.ledger(SYSTEM, key_prefix=key)
        if entries and entries[0]["replays"] == 1:
            break
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"the second request was not answered: {entries}")
        await asyncio.sleep(0.25)
    assert len(entries) == 1 and entries[0]["reference"] == first.reference


async def test_a_refusal_comes_back_as_a_rejected_reply_in_both_languages(
    adapter: EsdcSinAdapter, admin: SandboxAdmin
) -> None:
    prefix = f"reject-{uuid.uuid4().hex[:8]}-"
    message = {"en": "The parent cannot apply here.", "fr": "Le parent ne peut pas faire la demande ici."}
    rule = {"field": "child.last_name", "equals": "Tremblay", "code": "not_eligible", "message": message}
    await admin.set_faults(SYSTEM, key_prefix=prefix, reject_when=rule)
    key = new_key(prefix)
    await adapter.submit(call_context(key), SAMPLE)

    reply, _ = await reply_to(adapter, key)
    assert (reply.outcome, reply.code) == ("rejected", "not_eligible")
    assert reply.message is not None and reply.message.model_dump() == message
    assert await admin.ledger(SYSTEM, key_prefix=key) == []


async def test_a_garbled_reply_line_is_a_problem_and_a_malformed_reply(
    adapter: EsdcSinAdapter, admin: SandboxAdmin
) -> None:
    prefix = f"garble-{uuid.uuid4().hex[:8]}-"
    await admin.set_faults(SYSTEM, key_prefix=prefix, malformed_replies=True)
    key = new_key(prefix)
    await adapter.submit(call_context(key), SAMPLE)

    reply, batch = await reply_to(adapter, key)
    assert (reply.outcome, reply.code) == ("needs_attention", "malformed_reply")
    line = reply.reply_id.rsplit(":", 1)[1]
    assert f"line {line}: outcome: not_allowed" in batch.problems
    assert "Tremblay" not in " ".join(batch.problems)


async def test_dropped_replies_never_arrive_though_the_system_took_the_request(
    adapter: EsdcSinAdapter, admin: SandboxAdmin
) -> None:
    prefix = f"drop-{uuid.uuid4().hex[:8]}-"
    await admin.set_faults(SYSTEM, key_prefix=prefix, drop_replies=True)
    dropped = new_key(prefix)
    await adapter.submit(call_context(dropped), SAMPLE)
    await ledger_entries(admin, dropped)
    # A request sent after the dropped one was taken is answered by a later run: by then any
    # reply to the dropped one would be in the outbox already.
    later = new_key()
    await adapter.submit(call_context(later), SAMPLE)
    await reply_to(adapter, later)
    batches = await adapter.fetch_replies(call_context("test-collector", operation="status"))
    assert dropped not in {r.correlation_id for b in batches for r in b.replies}


async def test_an_unreachable_sftp_server_is_transient(sandbox: SandboxProcess) -> None:
    adapter = EsdcSinAdapter.from_settings(sandbox.settings(sftp_port=closed_port()))
    with pytest.raises(TransientError) as caught:
        await adapter.submit(call_context(new_key()), SAMPLE)
    assert caught.value.code == "connection_failed"
    with pytest.raises(TransientError):
        await adapter.fetch_replies(call_context("test-collector", operation="status"))


# --- replies into bundles -------------------------------------------------------------------------


def sin_only_plan(reply_timeout: str = "PT2H") -> BundlePlan:
    """A one-step bundle whose step is ESDC's batch intake."""
    definition: dict[str, Any] = DEFINITION.model_dump(mode="json")
    sin = next(s for s in definition["steps"] if s["id"] == "sin")
    sin.update(adapter=SYSTEM, needs=[], references=[], eligibility=None, reply_timeout=reply_timeout)
    definition["steps"] = [sin]
    submission = {
        "child": {"given_names": "Zoë", "surname": "Tremblay", "sex": "F", "date_of_birth": "2026-11-10"}
    }
    return resolve_plan(BundleDefinition.model_validate(definition), submission, {"sin": True})


async def test_a_step_whose_reply_is_dropped_goes_to_an_operator_after_its_reply_timeout(
    own_time_env: WorkflowEnvironment, sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    env, prefix = own_time_env, new_prefix()
    submission_id = f"drop-{uuid.uuid4()}"
    await admin.set_faults(SYSTEM, key_prefix=submission_id, drop_replies=True)
    adapter = EsdcSinAdapter.from_settings(sandbox.settings())
    async with running_workers(env.client, {SYSTEM: adapter}, prefix):
        handle = await start_bundle(env.client, sin_only_plan(), prefix, submission_id=submission_id)
        waiting = await wait_for(handle, lambda s: step(s, "sin").state is StepState.WAITING_REPLY)
        assert step(waiting, "sin").reference == request_file_name(f"{submission_id}:sin:submit")[:-4]
        parked = await wait_for(
            handle,
            lambda s: step(s, "sin").state is StepState.NEEDS_ATTENTION,
            skip=(env, timedelta(hours=1)),
        )
    last_error = step(parked, "sin").last_error
    assert last_error is not None and last_error.code == "reply_overdue"
    assert parked.state is BundleState.NEEDS_ATTENTION
    entries = await ledger_entries(admin, submission_id)
    assert [e["outcome"] for e in entries] == ["accepted"]  # the system has it: only its answer was lost


async def test_a_reply_collected_from_the_outbox_completes_the_bundle(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    client, prefix = dev_env.client, new_prefix()
    adapter = EsdcSinAdapter.from_settings(sandbox.settings())
    adapters = {SYSTEM: adapter}
    async with running_workers(client, adapters, prefix):
        (collector_id,) = await start_reply_collectors(
            client, adapters, task_queue_prefix=prefix, interval=timedelta(milliseconds=500)
        )
        # A second worker process starting finds the same collector.
        assert await start_reply_collectors(
            client, adapters, task_queue_prefix=prefix, interval=timedelta(seconds=1)
        ) == [collector_id]
        try:
            handle = await start_bundle(client, sin_only_plan(), prefix)
            final = await asyncio.wait_for(handle.result(), timeout=30)
        finally:
            await client.get_workflow_handle(collector_id).terminate("test over")
    sin = step(final, "sin")
    assert final.state is BundleState.COMPLETED and sin.state is StepState.DONE
    (entry,) = await admin.ledger(SYSTEM, key_prefix=handle.id)
    assert sin.reference == entry["reference"]


async def test_replies_for_no_open_bundle_are_dropped_and_their_file_still_acknowledged(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    adapter = EsdcSinAdapter(DirectoryTransport(tmp_path))
    outbox = tmp_path / SYSTEM / "outbox"
    outbox.mkdir(parents=True)
    records: list[dict[str, Any]] = [
        {"correlation_id": new_key("gone-"), "outcome": "A", "reference": "SIN-REQ-1"},
        {"correlation_id": "not-a-key-tellonce-made", "outcome": "R", "reason_code": "not_eligible"},
        {"correlation_id": new_key(), "outcome": "A", "reference": "SIN-REQ-2"},
    ]
    data = bytearray(REPLY_LAYOUT.encode_file("B1", date(2026, 11, 23), records))
    # The third line loses its correlation id: only a problem, no reply.
    _, start, end = next(span for span in REPLY_LAYOUT.spans["D"] if span[0].name == "correlation_id")
    line = 3 * (REPLY_LAYOUT.record_length + 2)
    data[line + start : line + end] = b" " * (end - start)
    (outbox / "REPLY-1.dat").write_bytes(bytes(data))

    activities = ReplyActivities(dev_env.client, {SYSTEM: adapter})
    with capture_logs() as logs:
        result = await ActivityEnvironment().run(activities.collect_batch_replies, SYSTEM)

    assert result == CollectResult(files=1, replies=2, delivered=0, dropped=2, problems=1)
    assert (outbox / "done" / "REPLY-1.dat").is_file()
    assert not (outbox / "REPLY-1.dat").exists()
    dropped = [entry for entry in logs if entry["event"] == "replies.dropped"]
    assert [(e["reply_id"], e["reason"]) for e in dropped] == [
        ("REPLY-1.dat:2", "no_open_bundle"),
        ("REPLY-1.dat:3", "bad_correlation_id"),
    ]
    # Only the system, file, line and codes are logged: never a correlation id or a value.
    logged = str(logs)
    assert str(records[0]["correlation_id"]) not in logged and "not-a-key" not in logged


async def test_a_reply_file_still_being_written_is_left_for_the_next_round(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    adapter = EsdcSinAdapter(DirectoryTransport(tmp_path))
    outbox = tmp_path / SYSTEM / "outbox"
    outbox.mkdir(parents=True)
    whole = REPLY_LAYOUT.encode_file(
        "B1",
        date(2026, 11, 23),
        [{"correlation_id": new_key("gone-"), "outcome": "A", "reference": "SIN-REQ-1"}] * 2,
    )
    cut = whole[: 2 * (REPLY_LAYOUT.record_length + 2)]  # header and one record, no trailer yet
    (outbox / "REPLY-1.dat").write_bytes(cut)
    activities = ReplyActivities(dev_env.client, {SYSTEM: adapter})

    first = await ActivityEnvironment().run(activities.collect_batch_replies, SYSTEM)
    assert (first.files, first.incomplete, first.replies) == (1, 1, 1)
    assert (outbox / "REPLY-1.dat").is_file() and not (outbox / "done").exists()

    (outbox / "REPLY-1.dat").write_bytes(whole)
    second = await ActivityEnvironment().run(activities.collect_batch_replies, SYSTEM)
    assert (second.files, second.incomplete, second.replies) == (1, 0, 2)
    assert (outbox / "done" / "REPLY-1.dat").is_file()
