"""`JsonRestAdapter`: the shared base of adapters whose legacy system speaks REST with JSON bodies.

It sends the call's idempotency key, bounds every call by the call's deadline (never an infinite
timeout) and turns every HTTP outcome into a result or one error of the taxonomy in `adapters.sdk`.
No response body ever goes into an error's `code` or `detail`: bodies can echo personal data.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from adapters.mapping import FieldMap
from adapters.sdk import (
    Adapter,
    AdapterError,
    CallContext,
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


def error_for_status(response: httpx.Response, system: str) -> AdapterError | None:
    """Classify a response: None for 2xx, otherwise the taxonomy error to raise.

    Args:
        response: The legacy system's answer.
        system: The system id, for the error's `detail`.

    Returns:
        `TransientError` for 408, 429 and 5xx (honouring `Retry-After`); `RejectedError` for 422
        (with the system's own code and bilingual message) and for other 4xx (our bug, with a
        generic message); `NeedsAttentionError` for 409 and for anything unexpected.
    """
    status = response.status_code
    detail = f"HTTP {status} from {system}"
    if 200 <= status < 300:
        return None
    if status in TRANSIENT_CODES or status >= 500:
        code = TRANSIENT_CODES.get(status, "server_error")
        return TransientError(code, detail=detail, retry_after=retry_after(response))
    if 400 <= status < 500:
        return _refusal(response, detail)
    return NeedsAttentionError(f"unexpected_status_{status}", UNREADABLE_ANSWER, detail=detail)


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
    """

    field_map: ClassVar[FieldMap] = FieldMap()

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        *,
        max_timeout: timedelta = DEFAULT_MAX_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_timeout = max_timeout
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(max_timeout.total_seconds()))

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
        """The system's view of an accepted request; None when it does not know the reference."""
        try:
            body = await self.call(ctx, "GET", self.requests_url(reference), None)
        except RejectedError as exc:
            if exc.code == "bad_request_404":
                return None
            raise
        return self.parse(StatusResult, body, ctx)

    async def call(
        self, ctx: CallContext, method: str, url: str, json: dict[str, Any] | None
    ) -> dict[str, Any]:
        """One HTTP call bounded by the call's deadline; returns the JSON body of a 2xx answer.

        Writes (POST) carry the call's `Idempotency-Key`; reads do not need one.

        Raises:
            TransientError: Deadline already passed, timeout, connection failure, 408/429/5xx.
            RejectedError: 4xx other than 408/409/429.
            NeedsAttentionError: 409, an unexpected status, or an unreadable 2xx body.
        """
        timeout = self.timeout_for(ctx)
        headers = {"Idempotency-Key": ctx.idempotency_key} if method != "GET" else {}
        started = time.monotonic()
        try:
            # httpx bounds each phase (connect, read...) separately: the outer timeout bounds the sum.
            async with asyncio.timeout(timeout):
                response = await self._client.request(
                    method, url, json=json, headers=headers, timeout=httpx.Timeout(timeout)
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientError(
                "timeout", detail=f"no answer from {self.system} within {timeout:.1f}s"
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError(
                "connection_failed", detail=f"{type(exc).__name__} calling {self.system}"
            ) from exc
        ctx.log.info(
            "adapter.answered",
            system=self.system,
            operation=ctx.operation,
            status=response.status_code,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
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
