"""REST habits against the real sandbox and Temporal dev server: maintenance, ETags, pages, rate limits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.models import StepCall, StepCallResult
from adapters.contract_kit import call_context
from adapters.http import JsonRestAdapter
from adapters.on_certificates import OntarioCertificateAdapter
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import Adapter, CallContext, ClosedError, CompensationRequest, StepRequest, SubmitResult
from infra.sandbox.client import SandboxAdmin
from infra.settings import LegacySystemSettings
from infra.worker import build_workers
from workflows.names import legacy_task_queue

pytestmark = pytest.mark.integration

SYSTEM = "on-certificates"
SAMPLE = StepRequest(fields=NEWBORN_FIELDS)


@pytest.fixture
async def admin(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox_url) as client:
        try:
            yield client
        finally:
            await client.clear_faults(SYSTEM)


class Exchanges:
    """Every HTTP exchange an adapter's client made: method, path, status and conditional header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, str | None]] = []

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        self.seen.append(
            (request.method, request.url.path, response.status_code, request.headers.get("If-None-Match"))
        )


@pytest.fixture
async def recorded(sandbox_url: str) -> AsyncIterator[tuple[JsonRestAdapter, Exchanges]]:
    exchanges = Exchanges()
    async with httpx.AsyncClient(event_hooks={"response": [exchanges]}) as client:
        yield OntarioCertificateAdapter(sandbox_url, client), exchanges


def prefix() -> str:
    return f"habits-{uuid.uuid4().hex[:12]}:"


async def test_a_call_during_maintenance_is_closed_until_the_system_reopens(
    admin: SandboxAdmin, recorded: tuple[JsonRestAdapter, Exchanges]
) -> None:
    adapter, _ = recorded
    keys = prefix()
    await admin.set_faults(SYSTEM, maintenance_for_s=1800, key_prefix=keys)

    with pytest.raises(ClosedError) as raised:
        await adapter.submit(call_context(f"{keys}certificate:submit"), SAMPLE)

    assert raised.value.code == "closed_for_maintenance"
    assert raised.value.retry_after is not None
    assert timedelta(minutes=29) < raised.value.retry_after <= timedelta(minutes=30)
    assert await admin.ledger(SYSTEM, key_prefix=keys) == []

    await admin.clear_faults(SYSTEM)
    accepted = await adapter.submit(call_context(f"{keys}certificate:submit"), SAMPLE)
    assert [e["reference"] for e in await admin.ledger(SYSTEM, key_prefix=keys)] == [accepted.reference]


async def test_maintenance_closes_every_rest_route(sandbox_url: str, admin: SandboxAdmin) -> None:
    keys = prefix()
    async with httpx.AsyncClient(base_url=sandbox_url) as client:
        created = await client.post(
            f"/systems/{SYSTEM}/requests",
            json={"fields": {"certificate": {"form": "short", "copies": 1}}},
            headers={"Idempotency-Key": f"{keys}certificate:submit"},
        )
        assert created.status_code == 201
        reference = created.json()["reference"]
        # No key prefix: reads carry no key, and the whole system is closed.
        await admin.set_faults(SYSTEM, maintenance_for_s=600)
        answers = [
            await client.post(
                f"/systems/{SYSTEM}/requests",
                json={"fields": {}},
                headers={"Idempotency-Key": f"{keys}other:submit"},
            ),
            await client.post(
                f"/systems/{SYSTEM}/requests/{reference}/cancel",
                headers={"Idempotency-Key": f"{keys}certificate:compensate"},
            ),
            await client.get(f"/systems/{SYSTEM}/requests/{reference}"),
            await client.get(f"/systems/{SYSTEM}/requests", params={"page_size": "1"}),
        ]
    for response in answers:
        assert response.status_code == 503, response.request.url
        assert response.json()["code"] == "closed_for_maintenance"
        assert 590 <= int(response.headers["Retry-After"]) <= 600


async def test_status_reads_are_conditional_against_the_sandbox(
    admin: SandboxAdmin, recorded: tuple[JsonRestAdapter, Exchanges]
) -> None:
    adapter, exchanges = recorded
    keys = prefix()
    accepted = await adapter.submit(call_context(f"{keys}certificate:submit"), SAMPLE)
    status_ctx = call_context(f"{keys}certificate:status", operation="status")

    first = await adapter.status(status_ctx, accepted.reference)
    again = await adapter.status(status_ctx, accepted.reference)
    assert first is not None
    assert first == again
    assert first.state == "ordered"
    reads = [e for e in exchanges.seen if e[0] == "GET"]
    assert [(status, bool(tag)) for _, _, status, tag in reads] == [(200, False), (304, True)]

    # Cancelled: the body changes, so does its ETag, and the old one no longer matches.
    await adapter.compensate(
        call_context(f"{keys}certificate:compensate", operation="compensate"),
        CompensationRequest(reference=accepted.reference, fields={}),
    )
    changed = await adapter.status(status_ctx, accepted.reference)
    assert changed is not None
    assert changed.state == "cancelled"
    assert [e[2] for e in exchanges.seen if e[0] == "GET"][-1] == 200


async def test_the_sandbox_etag_is_strong_and_a_match_has_no_body(sandbox_url: str) -> None:
    keys = prefix()
    async with httpx.AsyncClient(base_url=sandbox_url) as client:
        created = await client.post(
            f"/systems/{SYSTEM}/requests",
            json={"fields": {"certificate": {"form": "short", "copies": 1}}},
            headers={"Idempotency-Key": f"{keys}certificate:submit"},
        )
        path = f"/systems/{SYSTEM}/requests/{created.json()['reference']}"
        full = await client.get(path)
        etag = full.headers["ETag"]
        assert etag.startswith('"')
        assert etag.endswith('"')
        assert (await client.get(path)).headers["ETag"] == etag  # same body, same tag
        for conditional in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            unchanged = await client.get(path, headers={"If-None-Match": conditional})
            assert unchanged.status_code == 304, conditional
            assert unchanged.content == b""
            assert unchanged.headers["ETag"] == etag
        assert (await client.get(path, headers={"If-None-Match": '"stale"'})).status_code == 200


async def test_listing_pages_through_everything_received_since(
    recorded: tuple[JsonRestAdapter, Exchanges],
) -> None:
    adapter, exchanges = recorded
    keys = prefix()
    since = datetime.now(UTC)
    created = [
        (await adapter.submit(call_context(f"{keys}n{n}:submit"), SAMPLE)).reference for n in range(12)
    ]
    exchanges.seen.clear()

    listed = [
        item
        async for item in adapter.list_requests(
            call_context(f"{keys}list", operation="status"), since=since, page_size=5
        )
    ]

    references = [item.reference for item in listed]
    # Tests run one at a time, but other requests may have arrived since: ours, in order, all there.
    assert [r for r in references if r in created] == created
    assert len(references) == len(set(references))
    assert all(item.state == "ordered" for item in listed if item.reference in created)
    assert len(exchanges.seen) >= 3
    assert all(status == 200 for _, _, status, _ in exchanges.seen)


async def test_a_listing_holds_no_personal_data(sandbox_url: str) -> None:
    keys = prefix()
    since = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=sandbox_url) as client:
        await client.post(
            f"/systems/{SYSTEM}/requests",
            json={
                "fields": {"certificate": {"form": "short", "copies": 1}, "subject": {"surname": "Bélanger"}}
            },
            headers={"Idempotency-Key": f"{keys}certificate:submit"},
        )
        page = (await client.get(f"/systems/{SYSTEM}/requests", params={"since": since.isoformat()})).json()
    assert page["next_cursor"] is None
    assert {frozenset(item) for item in page["requests"]} == {
        frozenset({"reference", "state", "message", "received_at", "fee_cents", "refunded", "refunded_cents"})
    }
    assert "Bélanger" not in str(page)
    assert keys not in str(page)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": "c2VxOjU"}, "invalid_cursor"),  # base64 of "seq:5": looks right, is not ours
        ({"page_size": "0"}, "invalid_page_size"),
        ({"page_size": "1001"}, "invalid_page_size"),
        ({"page_size": "ten"}, "invalid_page_size"),
        ({"since": "yesterday"}, "invalid_since"),
        ({"since": "2026-11-23T10:00:00"}, "invalid_since"),
    ],
)
async def test_bad_listing_parameters_get_the_sandbox_error_shape(
    sandbox_url: str, params: dict[str, str], code: str
) -> None:
    async with httpx.AsyncClient(base_url=sandbox_url) as client:
        response = await client.get(f"/systems/{SYSTEM}/requests", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code
    assert set(body["message"]) == {"en", "fr"}


# --- per-system rate limit on the real Temporal dev server ----------------------------------------


class TimedAdapter(Adapter):
    """Accepts everything and notes when each call arrived (monotonic seconds)."""

    system = SYSTEM

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        self.arrivals.append(time.monotonic())
        return SubmitResult(reference=f"T-{len(self.arrivals)}")


@workflow.defn(sandboxed=False)
class BurstOfCalls:
    """Schedules every call at once on a system's task queue: only the queue's rate limit spaces them."""

    @workflow.run
    async def run(self, task_queue: str, calls: list[StepCall]) -> list[str | None]:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "invoke_step",
                    call,
                    task_queue=task_queue,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    result_type=StepCallResult,
                )
                for call in calls
            )
        )
        return [result.reference for result in results]


BURST = 4
"""Calls the server lets through at once: it meters each of the task queue's partitions (4 by
default) with its own token bucket, which starts with one token."""


def too_early(arrivals: list[float], rate: float, burst: int) -> list[int]:
    """The calls that arrived sooner than a token bucket of `rate` a second and `burst` allows.

    By `t` seconds after the first call at most `burst + rate * t` calls can have arrived, so
    call number n (from 0) comes no sooner than `(n + 1 - burst) / rate` seconds after the first.
    A fifth of a second of slack absorbs the poller's own timing.
    """
    ordered = sorted(arrivals)
    return [n for n, at in enumerate(ordered) if at - ordered[0] < (n + 1 - burst) / rate - 0.2]


async def test_a_systems_rate_limit_spaces_its_calls_across_the_task_queue(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    adapter = TimedAdapter()
    task_prefix = f"rate-{uuid.uuid4().hex[:10]}"
    calls = [
        StepCall(
            bundle_ref=f"{task_prefix}-b{n}",
            bundle_id="newborn-on",
            step_id="certificate",
            system=SYSTEM,
            idempotency_key=f"{task_prefix}-b{n}:certificate:submit",
            attempt=1,
            timeout=timedelta(seconds=10),
            fields={},
        )
        for n in range(8)
    ]
    async with AsyncExitStack() as stack:
        for worker in build_workers(
            client,
            {SYSTEM: adapter},
            task_queue_prefix=task_prefix,
            correlation_secret=b"rate-limit-test",
            upsert_search_attributes=False,
            legacy_systems={SYSTEM: LegacySystemSettings(rate_limit_per_s=2)},
        ):
            await stack.enter_async_context(worker)
        driver_queue = f"{task_prefix}.driver"
        await stack.enter_async_context(
            Worker(
                client,
                task_queue=driver_queue,
                workflows=[BurstOfCalls],
                workflow_runner=UnsandboxedWorkflowRunner(),
            )
        )
        references = await client.execute_workflow(
            BurstOfCalls.run,
            args=[legacy_task_queue(task_prefix, SYSTEM), calls],
            id=f"{task_prefix}-burst",
            task_queue=driver_queue,
            execution_timeout=timedelta(seconds=60),
        )

    assert sorted(references, key=str) == sorted((f"T-{n}" for n in range(1, 9)), key=str)
    assert len(adapter.arrivals) == 8
    # Without the limit all eight arrive together; with it, no faster than 2 a second after the
    # queue's first burst (one more call of slack than the buckets allow).
    assert too_early(adapter.arrivals, rate=2, burst=BURST + 1) == [], adapter.arrivals
