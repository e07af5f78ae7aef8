"""How the SOAP registrar adapter builds its messages and maps every answer to the taxonomy (no server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree  # type: ignore[import-untyped]
from structlog.testing import capture_logs
from zeep.exceptions import Error as ZeepError

from adapters.http import NEEDS_REVIEW, REQUEST_PROBLEM
from adapters.on_registrar_births import OntarioBirthRegistrationAdapter
from adapters.samples import NEWBORN_FIELDS as NEWBORN
from adapters.sdk import (
    AdapterError,
    CallContext,
    ClosedError,
    CompensationRequest,
    NeedsAttentionError,
    RejectedError,
    StepRequest,
    TransientError,
)
from adapters.soap import fault_kind, load_wsdl
from adapters.wsdl import VITAL_STATISTICS_NS as NS
from infra.settings import LegacySystemSettings, Settings

BASE = "http://legacy.test"
ENDPOINT = f"{BASE}/soap/on-registrar-births"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SIN = "046454286"  # the CRA's published sample SIN: synthetic, but treated as personal data here
MESSAGE = {"en": "The hospital's notice does not match.", "fr": "L'avis de l'hôpital ne correspond pas."}
KEY = "bundle-1:birth_registration:submit"
REQUEST = StepRequest(
    fields={
        "language": "fr",
        "child": {"surname": "Tremblay", "sex": "F", "date_of_birth": "2026-01-31"},
        "birth_parent": {"surname": "Tremblay", "sin": SIN},
    }
)

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def context(timeout: timedelta = timedelta(seconds=5), key: str = KEY) -> CallContext:
    return CallContext(
        idempotency_key=key,
        bundle_ref="bundle-1",
        step_id="birth_registration",
        operation="submit",
        attempt=1,
        deadline=datetime.now(UTC) + timeout,
    )


def adapter_with(handler: Handler, **kwargs: Any) -> OntarioBirthRegistrationAdapter:
    return OntarioBirthRegistrationAdapter(
        BASE, httpx.AsyncClient(transport=httpx.MockTransport(handler)), **kwargs
    )


def envelope(body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:vs="{NS}">'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )


def registered(number: str = "ON-2026-0000001", operation: str = "RegisterBirth") -> str:
    return envelope(
        f"<vs:{operation}Response><vs:registration_number>{number}</vs:registration_number>"
        "<vs:state>registered</vs:state><vs:message><vs:en>The birth is registered.</vs:en>"
        f"<vs:fr>La naissance est enregistrée.</vs:fr></vs:message></vs:{operation}Response>"
    )


def fault(faultcode: str, code: str | None = None, message: dict[str, str] | None = MESSAGE) -> str:
    """A fault whose faultstring echoes personal data, as real services' often do."""
    detail = ""
    if code is not None or message is not None:
        parts = f"<vs:code>{code}</vs:code>" if code is not None else ""
        if message is not None:
            parts += f"<vs:message><vs:en>{message['en']}</vs:en><vs:fr>{message['fr']}</vs:fr></vs:message>"
        detail = f"<detail><vs:ServiceFault>{parts}</vs:ServiceFault></detail>"
    return envelope(
        f"<soap:Fault><faultcode>soap:{faultcode}</faultcode>"
        f"<faultstring>SIN {SIN} refused</faultstring>{detail}</soap:Fault>"
    )


def answer(status: int, content: str | bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def handle(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=content, headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})}
        )

    return handle


async def submit_error(handler: Handler) -> AdapterError:
    with pytest.raises((TransientError, RejectedError, NeedsAttentionError)) as caught:
        await adapter_with(handler).submit(context(), REQUEST)
    error = caught.value
    assert SIN not in str(error)
    assert SIN not in error.detail
    assert "refused" not in error.detail, "a fault string never reaches the error"
    return error


# --- what the adapter sends --------------------------------------------------------------------


async def test_a_registration_is_a_soap_call_with_the_key_in_its_header() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=registered(), headers={"Content-Type": "text/xml"})

    result = await adapter_with(handle).submit(
        context(timeout=timedelta(seconds=3)), StepRequest(fields=NEWBORN)
    )

    assert result.reference == "ON-2026-0000001"
    assert result.message is not None
    assert result.message.fr == "La naissance est enregistrée."
    (request,) = seen
    assert request.method == "POST"
    assert request.url == ENDPOINT
    assert request.headers["Content-Type"].startswith("text/xml")
    assert request.headers["SOAPAction"].strip('"') == f"{NS}#RegisterBirth"
    timeouts = request.extensions["timeout"]
    assert all(0 < value <= 3 for value in timeouts.values()), "timeouts are finite and within the deadline"
    root = etree.fromstring(request.content)
    assert root.findtext(f"{{{SOAP_ENV}}}Header/{{{NS}}}RequestId") == KEY
    body = root.find(f"{{{SOAP_ENV}}}Body/{{{NS}}}RegisterBirth")
    assert [etree.QName(child).localname for child in body] == [
        "child",
        "parent_1",
        "informant",
        "correspondence_language",
    ], "the WSDL's order, whatever the field map's"
    assert body.findtext(f"{{{NS}}}child/{{{NS}}}birth_date") == "2026-01-31"
    assert body.findtext(f"{{{NS}}}parent_1/{{{NS}}}surname_at_birth") == "Gagnon"
    assert body.findtext(f"{{{NS}}}parent_1/{{{NS}}}birthplace/{{{NS}}}province_or_country") == "QC"
    assert body.findtext(f"{{{NS}}}informant/{{{NS}}}address/{{{NS}}}postal_code") == "k1a 0b1"
    assert b"046" not in request.content, "the SIN is not part of a Statement of Live Birth"


async def test_unused_projected_fields_are_logged_by_path_only() -> None:
    with capture_logs() as logs:
        await adapter_with(answer(200, registered())).submit(context(), StepRequest(fields=NEWBORN))
    (unused,) = [entry for entry in logs if entry["event"] == "adapter.fields_unused"]
    assert "birth_parent.sin" in unused["paths"]
    assert "046 454 286" not in json.dumps(logs, default=str)


async def test_a_request_that_does_not_fit_the_wsdl_is_never_sent() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=registered())

    missing_sex = StepRequest(fields={"child": {"surname": "Tremblay", "date_of_birth": "2026-01-31"}})
    with pytest.raises(RejectedError) as caught:
        await adapter_with(handle).submit(context(), missing_sex)
    assert caught.value.code == "request_invalid"
    assert caught.value.message == REQUEST_PROBLEM
    assert not calls


# --- faults --------------------------------------------------------------------------------------


async def test_a_rejection_keeps_the_registrars_code_and_both_languages() -> None:
    error = await submit_error(answer(500, fault("Client.Rejected", "nolb_mismatch")))
    assert isinstance(error, RejectedError)
    assert error.code == "nolb_mismatch"
    assert error.message.model_dump() == MESSAGE
    assert error.detail == "SOAP fault from on-registrar-births (HTTP 500)"


@pytest.mark.parametrize(
    "body",
    [
        fault("Client.Rejected", f"sin_{SIN}_unknown x"),
        fault("Client.Rejected", "nolb_mismatch", message=None),
        fault("Client.Rejected", None, message=None),
        fault("Client.InvalidRequest", "invalid_request"),
        fault("Client"),
    ],
)
async def test_other_client_faults_are_our_bug_with_a_generic_message(body: str) -> None:
    error = await submit_error(answer(500, body))
    assert isinstance(error, RejectedError)
    assert error.message == REQUEST_PROBLEM
    assert error.code in {"client_fault", "invalid_request", "nolb_mismatch"}


async def test_review_needs_attention_with_the_registrars_code() -> None:
    error = await submit_error(answer(500, fault("Client.NeedsReview", "nolb_review")))
    assert isinstance(error, NeedsAttentionError)
    assert error.code == "nolb_review"
    assert error.message.model_dump() == MESSAGE


async def test_review_without_a_detail_still_needs_attention() -> None:
    error = await submit_error(answer(500, fault("Client.NeedsReview", message=None)))
    assert isinstance(error, NeedsAttentionError)
    assert error.code == "needs_review"
    assert error.message == NEEDS_REVIEW


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "wait"),
    [
        (500, fault("Server.Error", "internal_error"), {}, "server_error", None),
        (500, fault("Server"), {}, "server_error", None),
        (503, fault("Server.Unavailable", "unavailable"), {"Retry-After": "30"}, "unavailable", 30),
        (503, fault("Server.Closed", "closed_for_maintenance"), {}, "unavailable", None),
        (429, fault("Server.Busy", "rate_limited"), {"Retry-After": "7"}, "rate_limited", 7),
        (503, b"", {}, "unavailable", None),
        (502, b"<html>Bad gateway</html>", {"Content-Type": "text/html"}, "server_error", None),
        (500, envelope("<vs:Nothing/>"), {}, "server_error", None),
    ],
)
async def test_server_side_trouble_is_transient(
    status: int, body: str | bytes, headers: dict[str, str], code: str, wait: int | None
) -> None:
    error = await submit_error(answer(status, body, headers))
    assert type(error) is TransientError, "closed without a reopening time is an ordinary attempt"
    assert error.code == code
    assert error.retry_after == (timedelta(seconds=wait) if wait is not None else None)


async def test_maintenance_with_a_reopening_time_is_closed() -> None:
    body = fault("Server.Closed", "closed_for_maintenance")
    error = await submit_error(answer(503, body, {"Retry-After": "120"}))
    assert isinstance(error, ClosedError)
    assert error.code == "closed_for_maintenance"
    assert error.retry_after == timedelta(seconds=120)


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (200, b"<html>ok</html>", NeedsAttentionError, "unreadable_answer"),
        (200, b"<not-soap/>", NeedsAttentionError, "unreadable_answer"),
        (200, envelope("<vs:RegisterBirthResponse><vs:state>x</vs:state></vs:RegisterBirthResponse>"),
         NeedsAttentionError, "unreadable_answer"),
        (200, envelope("<vs:Surprise/>"), NeedsAttentionError, "unreadable_answer"),
        (302, b"", NeedsAttentionError, "unexpected_status_302"),
        (400, b"Bad Request", RejectedError, "bad_request_400"),
    ],
)  # fmt: skip
async def test_answers_that_are_not_soap_results(
    status: int, body: bytes | str, kind: type[AdapterError], code: str
) -> None:
    error = await submit_error(answer(status, body))
    assert isinstance(error, kind)
    assert error.code == code


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (httpx.ConnectError("refused"), "connection_failed"),
        (httpx.RemoteProtocolError("closed"), "connection_failed"),
        (httpx.ReadTimeout("slow"), "timeout"),
    ],
)
async def test_transport_failures_are_transient(raised: Exception, code: str) -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        raise raised

    error = await submit_error(handle)
    assert isinstance(error, TransientError)
    assert error.code == code
    assert "on-registrar-births" in error.detail


async def test_a_slow_registrar_is_cut_off_at_the_deadline() -> None:
    async def handle(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, content=registered())

    started = asyncio.get_running_loop().time()
    with pytest.raises(TransientError) as caught:
        await adapter_with(handle).submit(context(timeout=timedelta(milliseconds=200)), REQUEST)
    assert caught.value.code == "timeout"
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_a_passed_deadline_makes_no_call() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=registered())

    with pytest.raises(TransientError) as caught:
        await adapter_with(handle).submit(context(timeout=timedelta(seconds=-1)), REQUEST)
    assert caught.value.code == "deadline_passed"
    assert not calls


async def test_timeout_never_exceeds_the_adapters_bound() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=registered())

    adapter = adapter_with(handle, max_timeout=timedelta(seconds=2))
    await adapter.submit(context(timeout=timedelta(hours=24)), REQUEST)
    assert max(seen[0].extensions["timeout"].values()) == 2


# --- status, compensation, configuration ------------------------------------------------------


async def test_status_reads_the_registration_and_an_unknown_number_is_none() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if b"ON-2026-0000001" in request.content:
            return httpx.Response(200, content=registered(operation="GetRegistration"))
        return httpx.Response(500, content=fault("Client.UnknownRegistration", "unknown_registration"))

    adapter = adapter_with(handle)
    known = await adapter.status(context(key="bundle-1:birth_registration:status"), "ON-2026-0000001")
    assert known is not None
    assert (known.reference, known.state) == ("ON-2026-0000001", "registered")
    assert await adapter.status(context(), "ON-1900-0000000") is None
    assert seen[0].headers["SOAPAction"].strip('"') == f"{NS}#GetRegistration"
    root = etree.fromstring(seen[0].content)
    assert root.findtext(f"{{{SOAP_ENV}}}Header/{{{NS}}}RequestId") == "bundle-1:birth_registration:status"


async def test_a_registration_cannot_be_undone() -> None:
    adapter = adapter_with(answer(200, registered()))
    with pytest.raises(RejectedError) as caught:
        await adapter.compensate(context(), CompensationRequest(reference="ON-2026-0000001", fields={}))
    assert caught.value.code == "compensation_unsupported"


async def test_the_endpoint_comes_from_settings_or_the_sandbox() -> None:
    default = OntarioBirthRegistrationAdapter.from_settings(Settings(sandbox_url=BASE))
    assert default.endpoint == ENDPOINT
    configured = OntarioBirthRegistrationAdapter.from_settings(
        Settings(
            sandbox_url=BASE,
            legacy_systems={"on-registrar-births": LegacySystemSettings(url="https://ogr.example/ws/vs")},
        )
    )
    assert configured.endpoint == "https://ogr.example/ws/vs"
    await default.aclose()
    await configured.aclose()


async def test_a_shared_client_is_left_open_and_untouched() -> None:
    shared = httpx.AsyncClient(
        transport=httpx.MockTransport(answer(200, registered())), headers={"X-Caller": "tellonce"}
    )
    adapter = OntarioBirthRegistrationAdapter(BASE, shared)
    await adapter.submit(context(), REQUEST)
    await adapter.aclose()
    assert not shared.is_closed
    assert shared.headers["X-Caller"] == "tellonce", "zeep's transport must not replace shared headers"
    await shared.aclose()

    own = OntarioBirthRegistrationAdapter(BASE)
    await own.aclose()
    assert own._client.is_closed


def test_a_wsdl_never_pulls_documents_from_the_network(tmp_path: Path) -> None:
    shipped = OntarioBirthRegistrationAdapter.wsdl.read_text(encoding="utf-8")
    remote = shipped.replace(
        "<wsdl:types>",
        '<wsdl:types><xs:schema><xs:import namespace="urn:elsewhere" '
        'schemaLocation="http://192.0.2.1/remote.xsd"/></xs:schema>',
    )
    path = tmp_path / "remote.wsdl"
    path.write_text(remote, encoding="utf-8")
    with pytest.raises(ZeepError):
        load_wsdl(path)


def test_the_wsdl_is_parsed_once_per_process() -> None:
    first = OntarioBirthRegistrationAdapter(BASE)
    second = OntarioBirthRegistrationAdapter(BASE)
    assert first._document is second._document


@pytest.mark.parametrize(
    ("faultcode", "kind"),
    [
        ("soap:Client.NeedsReview", ("Client", "NeedsReview")),
        ("SOAP-ENV:Server", ("Server", "")),
        ("Client.Rejected", ("Client", "Rejected")),
        (None, ("", "")),
    ],
)
def test_fault_kinds_follow_soap_11_dotted_codes(faultcode: str | None, kind: tuple[str, str]) -> None:
    assert fault_kind(faultcode) == kind
