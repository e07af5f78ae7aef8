"""`JsonRestAdapter`: the shared base of adapters whose legacy system speaks REST with JSON bodies.

It sends the call's idempotency key, bounds every call by the call's deadline (never an infinite
timeout) and turns every HTTP outcome into a result or one error of the taxonomy in `adapters.sdk`.
No response body ever goes into an error's `code` or `detail`: bodies can echo personal data.

It also has the habits real REST systems expect of a polite client: a 503 that says the system is
closed for maintenance becomes a `ClosedError` (wait, don't count an attempt), status reads are
conditional (`If-None-Match` with the ETag last seen), and listings follow the system's cursor.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field, ValidationError

from adapters.mapping import FieldMap
from adapters.sdk import (
    Adapter,
    AdapterError,
    CallContext,
    ClosedError,
    NeedsAttentionError,
    RejectedError,
    StatusResult,
    StepRequest,
    SubmitResult,
    TransientError,
)
from bundles.models import LocalizedText

if TYPE_CHECKING:
    from infra.settings import Settings

REQUEST_PROBLEM = LocalizedText(
    en="We could not send this request to the program because of a problem on our side. "
    "Our team has been told.",
    fr="Nous n'avons pas pu transmettre cette demande au programme en raison d'un problème "
    "de notre côté. Notre équipe a été avisée.",
)
NEEDS_REVIEW = LocalizedText(
    en="The program must review this request; an agent will follow up.",
    fr="Le programme doit examiner cette demande; un agent fera le suivi.",
)
UNREADABLE_ANSWER = LocalizedText(
    en="The program answered in a way we could not read; an agent will check.",
    fr="Le programme a répondu d'une manière que nous n'avons pas pu lire; un agent vérifiera.",
)

SYSTEM_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A system's own error code is kept only when it has this shape: short, stable, no data in it."""

DEFAULT_MAX_TIMEOUT = timedelta(seconds=60)
ETAG_CACHE_SIZE = 1_000
"""Status answers remembered per adapter for conditional reads (least recently used dropped)."""
MAX_PAGE_SIZE = 1_000

ResultT = TypeVar("ResultT", bound=BaseModel)


def retry_after(response: httpx.Response) -> timedelta | None:
    """The `Retry-After` hint (seconds or an HTTP date), if the response has a usable one."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return timedelta(seconds=int(raw))
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - datetime.now(UTC), timedelta(0))


def _system_error(response: httpx.Response) -> tuple[str | None, LocalizedText | None]:
    """`code` and `message` of a `{"code", "message": {"en", "fr"}}` error body, where valid."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    try:
        message = LocalizedText.model_validate(body.get("message"))
    except ValidationError:
        message = None
    return (code if isinstance(code, str) and SYSTEM_CODE.match(code) else None), message


TRANSIENT_CODES = {408: "request_timeout", 429: "rate_limited", 503: "unavailable"}
"""Statuses that mean "try again later" besides every 5xx (`server_error`)."""

CLOSED_CODES = frozenset({"closed", "closed_for_maintenance"})
"""Codes of a 503 body by which a system says it is closed rather than failing."""


def exchange_failure(exc: TimeoutError | httpx.HTTPError, system: str, timeout: float) -> AdapterError:
    """The taxonomy error of an HTTP exchange that failed before a status could be read.

    A timeout or a connection failure is transient. An answer that came but could not be read
    (undecodable body, redirect loop) may mean the request took effect: a person looks.
    """
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return TransientError("timeout", detail=f"no answer from {system} within {timeout:.1f}s")
    if isinstance(exc, httpx.TransportError):
        return TransientError("connection_failed", detail=f"{type(exc).__name__} calling {system}")
    return NeedsAttentionError(
        "unreadable_answer", UNREADABLE_ANSWER, detail=f"unreadable answer from {system}"
    )


def error_for_status(response: httpx.Response, system: str) -> AdapterError | None:
    """Classify a response: None for 2xx, otherwise the taxonomy error to raise.

    Args:
        response: The legacy system's answer.
        system: The system id, for the error's `detail`.

    Returns:
        `ClosedError` for a 503 whose body code is `closed` or `closed_for_maintenance` and that
        says when the system reopens (`Retry-After`); `TransientError` for 408, 429 and other 5xx
        (honouring `Retry-After`); `RejectedError` for 422 (with the system's own code and
        bilingual message) and for other 4xx (our bug, with a generic message);
        `NeedsAttentionError` for 409 and for anything unexpected.
    """
    status = response.status_code
    detail = f"HTTP {status} from {system}"
    if 200 <= status < 300:
        return None
    if status == 503:
        return _unavailable(response, detail)
    if status in TRANSIENT_CODES or status >= 500:
        code = TRANSIENT_CODES.get(status, "server_error")
        return TransientError(code, detail=detail, retry_after=retry_after(response))
    if 400 <= status < 500:
        return _refusal(response, detail)
    return NeedsAttentionError(f"unexpected_status_{status}", UNREADABLE_ANSWER, detail=detail)


def _unavailable(response: httpx.Response, detail: str) -> TransientError:
    """A 503: closed until a known time when the system says so, otherwise a plain outage."""
    code, _message = _system_error(response)
    hint = retry_after(response)
    if code in CLOSED_CODES:
        if hint is not None:
            return ClosedError(code, reopens_in=hint, detail=detail)
        # "Closed" without a reopening time cannot be waited out without counting: an attempt it is,
        # so a system that never reopens reaches the step's retry limit and a person.
        return TransientError(code, detail=detail)
    return TransientError("unavailable", detail=detail, retry_after=hint)


def _refusal(response: httpx.Response, detail: str) -> AdapterError:
    status = response.status_code
    code, message = _system_error(response)
    if status == 409:
        return NeedsAttentionError(code or "needs_review", message or NEEDS_REVIEW, detail=detail)
    if status == 422 and code is not None and message is not None:
        return RejectedError(code, message, detail=detail)
    # Anything else a system refuses is a request we built wrongly: not the resident's doing.
    return RejectedError(f"bad_request_{status}", REQUEST_PROBLEM, detail=detail)


class JsonRestAdapter(Adapter):
    """Base of adapters for systems that take `POST {base}/systems/{system}/requests` with JSON.

    Subclasses set `system` and `field_map` (or override `to_request`). The sandbox's systems
    all speak this protocol; a real REST system usually differs only in paths and field names.

    Args:
        base_url: The system's base URL, e.g. the sandbox's `http://127.0.0.1:8001`.
        client: An httpx client to share; when given, the caller closes it. Without one the
            adapter opens its own, so one slow system cannot exhaust another's connections.
        max_timeout: Upper bound of one call, however far the call's deadline is.
        etag_cache_size: How many status answers to remember for conditional reads.
    """

    field_map: ClassVar[FieldMap] = FieldMap()

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        *,
        max_timeout: timedelta = DEFAULT_MAX_TIMEOUT,
        etag_cache_size: int = ETAG_CACHE_SIZE,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_timeout = max_timeout
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(max_timeout.total_seconds()))
        self._etag_cache_size = etag_cache_size
        # reference -> (ETag, the answer it tagged); holds no personal data (StatusResult has none).
        self._etags: OrderedDict[str, tuple[str, StatusResult]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient | None = None) -> Self:
        """The adapter at the system's configured URL (default the sandbox), with its calendar."""
        own = settings.legacy_system(cls.system)
        adapter = cls(own.url or settings.sandbox_base_url, http_client)
        adapter.availability = own.availability
        return adapter

    def to_request(self, ctx: CallContext, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The system's request fields for a step's projected fields.

        Args:
            ctx: The call, for logging.
            fields: The step's projected fields.

        Returns:
            The fields in the system's own format; projected values the system does not take
            are dropped (their paths, never their values, are logged).
        """
        mapped, unused = self.field_map.apply(fields)
        if unused:
            ctx.log.warning("adapter.fields_unused", system=self.system, paths=unused)
        return mapped

    def requests_url(self, *parts: str) -> str:
        """`{base}/systems/{system}/requests[/part...]`, each part URL-encoded."""
        suffix = "".join(f"/{quote(part, safe='')}" for part in parts)
        return f"{self.base_url}/systems/{self.system}/requests{suffix}"

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        """Send the step's request; the system de-duplicates on the idempotency key.

        Raises:
            TransientError: Outage, timeout, 5xx, 429.
            RejectedError: The system refused the request (422) or we built it wrongly (4xx).
            NeedsAttentionError: The system wants a person to review it (409).
        """
        body = await self.call(
            ctx, "POST", self.requests_url(), {"fields": self.to_request(ctx, request.fields)}
        )
        return self.parse(SubmitResult, body, ctx)

    async def status(self, ctx: CallContext, reference: str) -> StatusResult | None:
        """The system's view of an accepted request; None when it does not know the reference.

        The read is conditional: with the ETag of the last answer for this reference, a
        `304 Not Modified` costs the system no body and returns the remembered answer.
        """
        cached = self._etags.get(reference)
        headers = {"If-None-Match": cached[0]} if cached is not None else {}
        response = await self.send(ctx, "GET", self.requests_url(reference), None, headers=headers)
        if response.status_code == 304 and cached is not None:
            self._etags.move_to_end(reference)
            return cached[1]
        try:
            body = self.body_of(response)
        except RejectedError as exc:
            if exc.code == "bad_request_404":
                self._etags.pop(reference, None)
                return None
            raise
        result = self.parse(StatusResult, body, ctx)
        etag = response.headers.get("ETag")
        if etag:
            self._remember(reference, etag, result)
        else:
            self._etags.pop(reference, None)
        return result

    def _remember(self, reference: str, etag: str, result: StatusResult) -> None:
        self._etags[reference] = (etag, result)
        self._etags.move_to_end(reference)
        while len(self._etags) > self._etag_cache_size:
            self._etags.popitem(last=False)

    async def list_requests(
        self, ctx: CallContext, *, since: datetime | None = None, page_size: int = 100
    ) -> AsyncIterator[StatusResult]:
        """Every request the system holds from tellonce, oldest first, for reconciliation.

        Pages through `GET {base}/systems/{system}/requests?since=&page_size=&cursor=`, whose body
        is `{"requests": [{"reference", "state", "message", ...}], "next_cursor": str | null}`:
        the cursor is the system's own opaque token, sent back as it came, until it is null. Each
        page is one call bounded by what is left of `ctx`'s deadline.

        Args:
            ctx: The call (its deadline bounds the whole listing).
            since: Only requests the system received at or after this (timezone-aware) time.
            page_size: Requests per page, 1 to 1,000.

        Raises:
            ValueError: `since` without a time zone, or `page_size` out of range.
            TransientError: As for any call, on any page.
            NeedsAttentionError: A page that cannot be read, or a cursor that does not move.
        """
        if since is not None and since.utcoffset() is None:
            raise ValueError("since must be timezone-aware")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        params: dict[str, str] = {"page_size": str(page_size)}
        if since is not None:
            params["since"] = since.isoformat()
        seen: set[str] = set()
        while True:
            response = await self.send(ctx, "GET", self.requests_url(), None, params=params)
            page = _Page.read(self.body_of(response))
            if page is None:
                ctx.log.warning("adapter.unreadable_answer", system=self.system, what="request_list")
                raise self.unreadable(response.status_code)
            for item in page.requests:
                yield item
            if page.next_cursor is None:
                return
            if page.next_cursor in seen:
                # A cursor seen before would list the same pages forever.
                raise NeedsAttentionError(
                    "pagination_loop", UNREADABLE_ANSWER, detail=f"{self.system} repeated a list cursor"
                )
            seen.add(page.next_cursor)
            params["cursor"] = page.next_cursor

    async def call(
        self, ctx: CallContext, method: str, url: str, json: dict[str, Any] | None
    ) -> dict[str, Any]:
        """One HTTP call bounded by the call's deadline; returns the JSON body of a 2xx answer.

        Writes (POST) carry the call's `Idempotency-Key`; reads do not need one.

        Raises:
            ClosedError: 503 saying the system is closed until a known time.
            TransientError: Deadline already passed, timeout, connection failure, 408/429/5xx.
            RejectedError: 4xx other than 408/409/429.
            NeedsAttentionError: 409, an unexpected status, or an unreadable 2xx body.
        """
        return self.body_of(await self.send(ctx, method, url, json))

    async def send(
        self,
        ctx: CallContext,
        method: str,
        url: str,
        json: dict[str, Any] | None,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One HTTP exchange bounded by the call's deadline, whatever its status (see `body_of`).

        Raises:
            TransientError: Deadline already passed, timeout, connection failure.
        """
        timeout = self.timeout_for(ctx)
        sent = dict(headers or {})
        if method != "GET":
            sent["Idempotency-Key"] = ctx.idempotency_key
        started = time.monotonic()
        try:
            # httpx bounds each phase (connect, read...) separately: the outer timeout bounds the sum.
            async with asyncio.timeout(timeout):
                response = await self._client.request(
                    method, url, json=json, headers=sent, params=params, timeout=httpx.Timeout(timeout)
                )
        except (TimeoutError, httpx.HTTPError) as exc:
            raise exchange_failure(exc, self.system, timeout) from exc
        ctx.log.info(
            "adapter.answered",
            system=self.system,
            operation=ctx.operation,
            status=response.status_code,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return response

    def body_of(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a 2xx answer, or the taxonomy error its status means."""
        error = error_for_status(response, self.system)
        if error is not None:
            raise error
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self.unreadable(response.status_code)
        return body

    def timeout_for(self, ctx: CallContext) -> float:
        """Seconds this call may take: what is left before the deadline, at most `max_timeout`."""
        left = min(ctx.remaining(datetime.now(UTC)), self.max_timeout)
        if left <= timedelta(0):
            raise TransientError("deadline_passed", detail=f"no time left to call {self.system}")
        return left.total_seconds()

    def parse(self, model: type[ResultT], body: dict[str, Any], ctx: CallContext) -> ResultT:
        """A 2xx body as a result model, or `NeedsAttentionError` (the effect may have happened)."""
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            # The error count only: pydantic's messages quote the input.
            ctx.log.warning("adapter.unreadable_answer", system=self.system, errors=exc.error_count())
            raise self.unreadable(200) from None

    def unreadable(self, status: int) -> NeedsAttentionError:
        """The error for a success answer we cannot read (the effect may have happened)."""
        return NeedsAttentionError(
            "unreadable_answer", UNREADABLE_ANSWER, detail=f"HTTP {status} from {self.system}"
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this adapter opened it."""
        if self._owns_client:
            await self._client.aclose()


class _Page(BaseModel):
    """One page of a system's request list."""

    requests: list[StatusResult]
    next_cursor: str | None = Field(default=None, min_length=1, max_length=512)

    @classmethod
    def read(cls, body: dict[str, Any]) -> _Page | None:
        try:
            return cls.model_validate(body)
        except ValidationError:
            return None
