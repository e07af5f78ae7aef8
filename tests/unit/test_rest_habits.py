"""The REST adapter's manners with real systems: maintenance, 429, conditional reads, pages (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from adapters.http import JsonRestAdapter
from adapters.on_certificates import OntarioCertificateAdapter
from adapters.sdk import (
    SYSTEM_CLOSED,
    CallContext,
    ClosedError,
    NeedsAttentionError,
    StatusResult,
    StepRequest,
    TransientError,
)

BASE = "http://legacy.test"
ACCEPTED = {"en": "Ordered.", "fr": "Commandé."}


def context(operation: str = "submit") -> CallContext:
    return CallContext(
        idempotency_key=f"bundle-1:certificate:{operation}",
        bundle_ref="bundle-1",
        step_id="certificate",
        operation="status" if operation == "status" else "submit",
        attempt=1,
        deadline=datetime.now(UTC) + timedelta(seconds=5),
    )


def adapter_for(handler: Any, **kwargs: Any) -> JsonRestAdapter:
    return OntarioCertificateAdapter(
        BASE, httpx.AsyncClient(transport=httpx.MockTransport(handler)), **kwargs
    )


def answering(response: httpx.Response) -> JsonRestAdapter:
    return adapter_for(lambda _request: response)


def body(code: str) -> dict[str, Any]:
    return {"code": code, "message": {"en": "Closed.", "fr": "Fermé."}}


async def submit(adapter: JsonRestAdapter) -> None:
    await adapter.submit(context(), StepRequest(fields={"certificate": {"form": "short"}}))


# --- 503: closed versus down ----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["closed_for_maintenance", "closed"])
async def test_503_closed_with_retry_after_is_closed_until_then(code: str) -> None:
    adapter = answering(httpx.Response(503, json=body(code), headers={"Retry-After": "1800"}))
    with pytest.raises(ClosedError) as raised:
        await submit(adapter)
    assert raised.value.code == code
    assert raised.value.retry_after == timedelta(minutes=30)
    assert raised.value.message == SYSTEM_CLOSED
    assert raised.value.detail == "HTTP 503 from on-certificates"


async def test_503_closed_until_an_http_date() -> None:
    reopens = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    adapter = answering(
        httpx.Response(
            503,
            json=body("closed_for_maintenance"),
            headers={"Retry-After": format_datetime(reopens, usegmt=True)},
        )
    )
    with pytest.raises(ClosedError) as raised:
        await submit(adapter)
    assert raised.value.retry_after is not None
    assert timedelta(hours=2) - timedelta(seconds=5) <= raised.value.retry_after <= timedelta(hours=2)


async def test_closed_without_a_reopening_time_counts_as_an_ordinary_outage() -> None:
    adapter = answering(httpx.Response(503, json=body("closed_for_maintenance")))
    with pytest.raises(TransientError) as raised:
        await submit(adapter)
    assert not isinstance(raised.value, ClosedError)
    assert raised.value.code == "closed_for_maintenance"
    assert raised.value.retry_after is None


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(503, json=body("unavailable"), headers={"Retry-After": "60"}),
        httpx.Response(503, text="<html>Service Unavailable</html>", headers={"Retry-After": "60"}),
        httpx.Response(502, json=body("closed_for_maintenance"), headers={"Retry-After": "60"}),
    ],
    ids=["other-code", "no-json", "not-503"],
)
async def test_other_outages_stay_transient(response: httpx.Response) -> None:
    with pytest.raises(TransientError) as raised:
        await submit(answering(response))
    assert not isinstance(raised.value, ClosedError)
    assert raised.value.retry_after == timedelta(seconds=60)


# --- 429 ------------------------------------------------------------------------------------------


async def test_429_retry_after_in_seconds() -> None:
    adapter = answering(httpx.Response(429, json=body("rate_limited"), headers={"Retry-After": "90"}))
    with pytest.raises(TransientError) as raised:
        await submit(adapter)
    assert raised.value.code == "rate_limited"
    assert raised.value.retry_after == timedelta(seconds=90)


async def test_429_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    adapter = answering(httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    with pytest.raises(TransientError) as raised:
        await submit(adapter)
    assert raised.value.retry_after is not None
    assert timedelta(minutes=10) - timedelta(seconds=5) <= raised.value.retry_after <= timedelta(minutes=10)


async def test_429_with_a_date_already_past_means_now() -> None:
    when = datetime.now(UTC) - timedelta(minutes=1)
    adapter = answering(httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    with pytest.raises(TransientError) as raised:
        await submit(adapter)
    assert raised.value.retry_after == timedelta(0)


# --- ETags ----------------------------------------------------------------------------------------


class TaggedSystem:
    """A system answering status reads with an ETag, and 304 when the client already has it."""

    def __init__(self) -> None:
        self.state = "ordered"
        self.seen: list[str | None] = []
        self.full_answers = 0

    def etag(self) -> str:
        return f'"v-{self.state}"'

    def __call__(self, request: httpx.Request) -> httpx.Response:
        conditional = request.headers.get("If-None-Match")
        self.seen.append(conditional)
        if request.url.path.endswith("/unknown"):
            return httpx.Response(404, json=body("unknown_reference"))
        if conditional == self.etag():
            return httpx.Response(304, headers={"ETag": self.etag()})
        self.full_answers += 1
        reference = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(
            200,
            json={"reference": reference, "state": self.state, "message": ACCEPTED},
            headers={"ETag": self.etag()},
        )


async def test_status_reads_are_conditional_and_a_304_reuses_the_last_answer() -> None:
    system = TaggedSystem()
    adapter = adapter_for(system)
    ctx = context("status")

    first = await adapter.status(ctx, "SO-CERT-1")
    again = await adapter.status(ctx, "SO-CERT-1")
    expected = StatusResult.model_validate(
        {"reference": "SO-CERT-1", "state": "ordered", "message": ACCEPTED}
    )
    assert first == again == expected
    assert system.seen == [None, '"v-ordered"']
    assert system.full_answers == 1

    system.state = "cancelled"
    changed = await adapter.status(ctx, "SO-CERT-1")
    assert changed is not None
    assert changed.state == "cancelled"
    assert system.full_answers == 2
    assert system.seen[-1] == '"v-ordered"'


async def test_the_etag_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    system = TaggedSystem()
    adapter = adapter_for(system, etag_cache_size=2)
    ctx = context("status")
    for reference in ("A", "B", "A", "C"):  # A is used again before C arrives: B is dropped
        await adapter.status(ctx, reference)
    system.seen.clear()
    for reference in ("A", "B"):
        await adapter.status(ctx, reference)
    assert system.seen == ['"v-ordered"', None]


async def test_an_unknown_reference_is_none_and_is_not_remembered() -> None:
    system = TaggedSystem()
    adapter = adapter_for(system)
    assert await adapter.status(context("status"), "unknown") is None
    assert await adapter.status(context("status"), "unknown") is None
    assert system.seen == [None, None]


async def test_a_304_without_anything_remembered_needs_attention() -> None:
    adapter = answering(httpx.Response(304))
    with pytest.raises(NeedsAttentionError) as raised:
        await adapter.status(context("status"), "SO-CERT-1")
    assert raised.value.code == "unexpected_status_304"


# --- pagination -----------------------------------------------------------------------------------


class PagedSystem:
    """A system listing `total` requests, `page_size` at a time, with an opaque cursor."""

    def __init__(self, total: int) -> None:
        self.references = [f"SO-CERT-{n:04d}" for n in range(total)]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        size = int(request.url.params["page_size"])
        cursor = request.url.params.get("cursor")
        start = int(cursor.removeprefix("tok-")) if cursor else 0
        items = [
            {"reference": r, "state": "ordered", "message": ACCEPTED, "received_at": "2026-11-23T10:00:00Z"}
            for r in self.references[start : start + size]
        ]
        more = start + size < len(self.references)
        return httpx.Response(
            200, json={"requests": items, "next_cursor": f"tok-{start + size}" if more else None}
        )


async def test_listing_follows_cursors_to_the_end() -> None:
    system = PagedSystem(total=7)
    adapter = adapter_for(system)
    since = datetime(2026, 11, 1, tzinfo=UTC)

    listed = [item async for item in adapter.list_requests(context("status"), since=since, page_size=3)]

    assert [item.reference for item in listed] == system.references
    assert [r.url.params.get("cursor") for r in system.requests] == [None, "tok-3", "tok-6"]
    assert all(r.url.params["since"] == since.isoformat() for r in system.requests)
    assert all(r.url.path == "/systems/on-certificates/requests" for r in system.requests)
    assert all("Idempotency-Key" not in r.headers for r in system.requests)


async def test_an_empty_list_is_one_call() -> None:
    system = PagedSystem(total=0)
    assert [item async for item in adapter_for(system).list_requests(context("status"))] == []
    assert len(system.requests) == 1


async def test_a_cursor_that_does_not_move_is_not_followed_forever() -> None:
    page = {"requests": [], "next_cursor": "same"}
    adapter = answering(httpx.Response(200, json=page))
    with pytest.raises(NeedsAttentionError) as raised:
        _ = [item async for item in adapter.list_requests(context("status"))]
    assert raised.value.code == "pagination_loop"


@pytest.mark.parametrize(
    "page",
    [
        {"next_cursor": None},
        {"requests": [{"state": "x"}], "next_cursor": None},
        {"requests": [], "next_cursor": 3},
    ],
    ids=["no-requests", "item-without-reference", "numeric-cursor"],
)
async def test_an_unreadable_page_needs_attention(page: dict[str, Any]) -> None:
    with pytest.raises(NeedsAttentionError) as raised:
        _ = [
            item async for item in answering(httpx.Response(200, json=page)).list_requests(context("status"))
        ]
    assert raised.value.code == "unreadable_answer"


async def test_a_failing_page_is_classified_like_any_call() -> None:
    adapter = answering(
        httpx.Response(503, json=body("closed_for_maintenance"), headers={"Retry-After": "5"})
    )
    with pytest.raises(ClosedError):
        _ = [item async for item in adapter.list_requests(context("status"))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": datetime(2026, 11, 1)}, "since must be timezone-aware"),  # noqa: DTZ001 - the point of the test
        ({"page_size": 0}, "page_size must be between 1 and 1000, got 0"),
        ({"page_size": 1001}, "page_size must be between 1 and 1000, got 1001"),
    ],
)
async def test_bad_listing_arguments_are_refused_before_any_call(
    kwargs: dict[str, Any], message: str
) -> None:
    system = PagedSystem(total=1)
    with pytest.raises(ValueError, match=message):
        _ = [item async for item in adapter_for(system).list_requests(context("status"), **kwargs)]
    assert system.requests == []


@pytest.mark.parametrize(
    "failure",
    [
        lambda request: httpx.TooManyRedirects("redirect loop", request=request),
        lambda request: httpx.DecodingError("bad gzip", request=request),
    ],
)
async def test_an_answer_that_cannot_be_read_is_for_a_person_not_a_library_error(failure: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure(request)

    with pytest.raises(NeedsAttentionError) as caught:
        await submit(adapter_for(handler))
    assert caught.value.code == "unreadable_answer"
