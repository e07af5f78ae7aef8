"""`SoapAdapter`: the shared base of adapters whose legacy system is a SOAP 1.1 web service.

It speaks through zeep (`AsyncClient` over httpx), from a WSDL copy shipped with the adapter:
zeep parses a WSDL synchronously and may follow imports over the network, so the local file is
parsed once per process, with DTDs, entities and external references forbidden, and never at
call time. Every call carries the call's idempotency key in a SOAP header, is bounded by the
call's deadline, and ends in a result or one error of the taxonomy in `adapters.sdk`.

SOAP 1.1 answers every fault with HTTP 500, whatever its cause, so the fault code decides, not
the status: `Client` faults are the system's decisions about the request (`Client.Rejected`,
`Client.NeedsReview`) or our mistakes; `Server` faults mean "try again later". HTTP 503 and 429
(an outage, planned maintenance, a rate limit in front of the service) keep their `Retry-After`.

No fault string, detail text or response body ever goes into an error's `code` or `detail`: SOAP
faults commonly echo the request, and the request holds personal data. Only the system's own
`code` is kept, and only when it has the shape of a code.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import httpx
import zeep
from pydantic import BaseModel, ValidationError
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault
from zeep.exceptions import TransportError as ZeepTransportError
from zeep.helpers import serialize_object
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsdl import Document

from adapters.http import (
    DEFAULT_MAX_TIMEOUT,
    NEEDS_REVIEW,
    REQUEST_PROBLEM,
    SYSTEM_CODE,
    TRANSIENT_CODES,
    UNREADABLE_ANSWER,
    error_for_status,
    exchange_failure,
    retry_after,
)
from adapters.mapping import FieldMap
from adapters.sdk import (
    Adapter,
    AdapterError,
    CallContext,
    ClosedError,
    NeedsAttentionError,
    RejectedError,
    TransientError,
)
from bundles.models import LocalizedText

if TYPE_CHECKING:
    from infra.settings import Settings

SOAP_SETTINGS = zeep.Settings(
    strict=True,
    xml_huge_tree=False,
    forbid_dtd=True,
    forbid_entities=True,
    forbid_external=True,
)
"""How zeep parses WSDLs and answers: no DTD, no entity, no external fetch, libxml2's size limits."""

ResultT = TypeVar("ResultT", bound=BaseModel)

CLOSED_FOR_MAINTENANCE = "closed_for_maintenance"
"""The fault code of a system closed for planned maintenance (with a `Retry-After`)."""


class _CallTransport(AsyncTransport):
    """zeep's httpx transport for one call: bounded by the call's timeout, keeping the HTTP answer.

    `AsyncTransport.__init__` is not called on purpose: it opens a blocking client for loading
    remote documents (these adapters never load one) and replaces the headers of the client it is
    given, which may be shared with other adapters.
    """

    def __init__(self, client: httpx.AsyncClient | None, timeout: float | None = None) -> None:
        self.cache = None
        self.client = client
        self.timeout = timeout
        self.sent = False
        self.response: httpx.Response | None = None
        self._close_session = False
        self.logger = logging.getLogger(__name__)

    def _load_remote_data(self, url: str) -> bytes:
        del url
        message = "SOAP adapters load their WSDL from a local file, never from the network"
        raise ZeepTransportError(message)  # type: ignore[no-untyped-call]  # zeep leaves it unannotated

    async def post(self, address: str, message: bytes | str, headers: dict[str, str]) -> httpx.Response:
        # Unlike zeep's own post, never logs the message: it holds personal data.
        if self.client is None or self.timeout is None:
            # Never an unbounded call: only the transports `call` builds, with a timeout, post.
            raise ZeepTransportError("this transport only loads local documents")  # type: ignore[no-untyped-call]
        self.sent = True
        self.response = await self.client.post(
            address, content=message, headers=headers, timeout=httpx.Timeout(self.timeout)
        )
        return self.response

    async def aclose(self) -> None:
        # The adapter owns the client, not the transport of one call.
        return


def _status(response: httpx.Response | None) -> int:
    return response.status_code if response is not None else 0


@functools.cache
def load_wsdl(path: Path) -> Document:
    """A local WSDL, parsed once per process and shared by every adapter built from it.

    Raises:
        zeep.exceptions.Error: The file is not a WSDL zeep can use, or refers to a remote document.
        OSError: The file cannot be read.
    """
    # zeep annotates `transport` as a class, but uses (and needs) an instance.
    return Document(str(path), _CallTransport(None), settings=SOAP_SETTINGS)  # type: ignore[arg-type]


def fault_kind(faultcode: str | None) -> tuple[str, str]:
    """The class (`Client`, `Server`, ...) and the dotted refinement of a SOAP 1.1 faultcode.

    `soap:Client.NeedsReview` is `("Client", "NeedsReview")`; SOAP 1.1 refines codes with dots.
    """
    local = (faultcode or "").strip().rpartition(":")[2]
    top, _, sub = local.partition(".")
    return top, sub


def fault_detail(detail: Any) -> tuple[str | None, LocalizedText | None]:
    """The system's `code` and bilingual `message` (`message/en`, `message/fr`) of a fault's detail.

    Looked up by local name under `<detail>`, so any system following this convention fits. A
    code without the shape of a code (it could quote the request) is dropped.
    """
    if detail is None or not hasattr(detail, "iter"):
        return None, None
    code = detail.findtext(".//{*}code")
    en = detail.findtext(".//{*}message/{*}en")
    fr = detail.findtext(".//{*}message/{*}fr")
    kept = code.strip() if isinstance(code, str) and SYSTEM_CODE.match(code.strip()) else None
    message = LocalizedText(en=en.strip(), fr=fr.strip()) if en and fr and en.strip() and fr.strip() else None
    return kept, message


class SoapAdapter(Adapter):
    """A legacy system behind a SOAP 1.1 (document/literal) service described by a local WSDL.

    Subclasses set `system`, `wsdl`, `binding`, `service_path` and `field_map`, and implement
    `submit` (and `status` if the service has a read) with `call`.

    Args:
        base_url: Where the system's service lives when `endpoint` is not given: the service is at
            `base_url + service_path` (the legacy sandbox's layout).
        client: An httpx client to share; when given, the caller closes it.
        endpoint: The service's full address, as a deployment configures it.
        max_timeout: Upper bound of one call, however far the call's deadline is.
    """

    wsdl: ClassVar[Path]
    """The WSDL copy the adapter ships."""
    binding: ClassVar[str]
    """The QName of the WSDL binding to call, e.g. `{urn:...}ServiceBinding`."""
    service_path: ClassVar[str]
    """The service's path under the legacy sandbox's base URL."""
    request_id_header: ClassVar[str] = "RequestId"
    """The WSDL's header part that carries the idempotency key."""
    field_map: ClassVar[FieldMap] = FieldMap()

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        *,
        endpoint: str | None = None,
        max_timeout: timedelta = DEFAULT_MAX_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint or f"{base_url.rstrip('/')}{self.service_path}"
        self.max_timeout = max_timeout
        self._document = load_wsdl(self.wsdl)
        if self.binding not in self._document.bindings:
            raise ValueError(f"{self.wsdl.name} has no binding {self.binding}")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(max_timeout.total_seconds()))

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient | None = None) -> Self:
        """The adapter at the system's configured endpoint (default the sandbox's), with its calendar."""
        own = settings.legacy_system(cls.system)
        adapter = cls(settings.sandbox_base_url, http_client, endpoint=own.url)
        adapter.availability = own.availability
        return adapter

    def to_request(self, ctx: CallContext, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The operation's body for a step's projected fields, by `field_map`.

        Projected values the system does not take are dropped (their paths, never their values,
        are logged).
        """
        mapped, unused = self.field_map.apply(fields)
        if unused:
            ctx.log.warning("adapter.fields_unused", system=self.system, paths=unused)
        return mapped

    async def call(self, ctx: CallContext, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Call one operation, bounded by the call's deadline; its answer as plain dicts and values.

        The idempotency key travels in the `request_id_header` SOAP header.

        Raises:
            TransientError: Deadline already passed, timeout, connection failure, a `Server`
                fault, HTTP 429/5xx (`ClosedError` for planned maintenance with a `Retry-After`).
            RejectedError: A `Client` fault: the system's refusal (`Client.Rejected`, with its code
                and message) or a request we built wrongly (generic message).
            NeedsAttentionError: `Client.NeedsReview`, an unexpected status, or an unreadable answer.
        """
        timeout = self.timeout_for(ctx)
        transport = _CallTransport(self._client, timeout)
        # A client per call is cheap (the parsed WSDL is shared) and keeps each call's HTTP answer apart.
        client = zeep.AsyncClient(  # type: ignore[no-untyped-call]
            self._document, transport=transport, settings=SOAP_SETTINGS
        )
        # `AsyncClient.create_service` returns a synchronous proxy: build the asynchronous one.
        service = AsyncServiceProxy(  # type: ignore[no-untyped-call]
            client, self._document.bindings[self.binding], address=self.endpoint
        )
        headers = {self.request_id_header: ctx.idempotency_key}
        started = time.monotonic()
        try:
            # httpx bounds each phase (connect, read...) separately: the outer timeout bounds the sum.
            async with asyncio.timeout(timeout):
                result = await service[operation](**body, _soapheaders=headers)
        except Fault as exc:
            # `from None`: a fault's string and detail may echo the request.
            raise self.fault_error(exc, transport.response) from None
        except ZeepTransportError:
            raise self.transport_error(transport.response) from None
        except (TimeoutError, httpx.HTTPError) as exc:
            raise exchange_failure(exc, self.system, timeout) from exc
        except (ZeepError, TypeError, ValueError, SyntaxError):
            if not transport.sent:
                # zeep could not build the message from the mapped fields: our bug, nothing sent.
                raise RejectedError(
                    "request_invalid",
                    REQUEST_PROBLEM,
                    detail=f"the request does not fit the WSDL of {self.system}",
                ) from None
            raise self.unreadable(_status(transport.response)) from None
        finally:
            if transport.response is not None:
                ctx.log.info(
                    "adapter.answered",
                    system=self.system,
                    operation=ctx.operation,
                    status=transport.response.status_code,
                    elapsed_ms=round((time.monotonic() - started) * 1000),
                )
        answer = serialize_object(result, dict)  # type: ignore[no-untyped-call]
        if not isinstance(answer, dict):
            raise self.unreadable(_status(transport.response))
        return answer

    def timeout_for(self, ctx: CallContext) -> float:
        """Seconds this call may take: what is left before the deadline, at most `max_timeout`."""
        left = min(ctx.remaining(datetime.now(UTC)), self.max_timeout)
        if left <= timedelta(0):
            raise TransientError("deadline_passed", detail=f"no time left to call {self.system}")
        return left.total_seconds()

    def fault_error(self, fault: Fault, response: httpx.Response | None) -> AdapterError:
        """The taxonomy error for a SOAP fault (see the module's docstring for the rules)."""
        status = response.status_code if response is not None else 500
        kind, refinement = fault_kind(fault.code)
        code, message = fault_detail(fault.detail)
        detail = f"SOAP fault from {self.system} (HTTP {status})"
        if kind == "Client":
            if refinement == "NeedsReview":
                return NeedsAttentionError(code or "needs_review", message or NEEDS_REVIEW, detail=detail)
            if refinement == "Rejected" and code is not None and message is not None:
                return RejectedError(code, message, detail=detail)
            # Any other client fault is a request we built wrongly: not the resident's doing.
            return RejectedError(code or "client_fault", REQUEST_PROBLEM, detail=detail)
        if kind == "Server":
            wait = retry_after(response) if response is not None else None
            if code == CLOSED_FOR_MAINTENANCE and wait is not None:
                return ClosedError(CLOSED_FOR_MAINTENANCE, reopens_in=wait, detail=detail)
            transient = TRANSIENT_CODES.get(status, "server_error")
            return TransientError(transient, detail=detail, retry_after=wait)
        # No usable fault code (VersionMismatch, or an error page without a Fault): the status decides.
        return self.transport_error(response)

    def transport_error(self, response: httpx.Response | None) -> AdapterError:
        """The taxonomy error for an answer that is not a SOAP message zeep could read."""
        if response is None:
            return TransientError("connection_failed", detail=f"no HTTP answer from {self.system}")
        error = error_for_status(response, self.system)
        return error if error is not None else self.unreadable(response.status_code)

    def unreadable(self, status: int) -> NeedsAttentionError:
        """The error for a success answer we cannot read (the effect may have happened)."""
        return NeedsAttentionError(
            "unreadable_answer", UNREADABLE_ANSWER, detail=f"HTTP {status} from {self.system}"
        )

    def parse(self, model: type[ResultT], values: dict[str, Any], ctx: CallContext) -> ResultT:
        """An answer's values as a result model, or `NeedsAttentionError` (the effect may have happened)."""
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            # The error count only: pydantic's messages quote the input.
            ctx.log.warning("adapter.unreadable_answer", system=self.system, errors=exc.error_count())
            raise self.unreadable(200) from None

    async def aclose(self) -> None:
        """Close the HTTP client if this adapter opened it."""
        if self._owns_client:
            await self._client.aclose()
