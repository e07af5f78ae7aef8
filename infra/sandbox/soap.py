"""SOAP 1.1 endpoints of the sandbox's SOAP systems: Ontario's vital statistics birth registration.

`POST /soap/on-registrar-births` is a document/literal SOAP 1.1 service described by the WSDL the
adapter ships (`adapters/wsdl/vital_statistics_registration.wsdl`), served at
`GET /soap/on-registrar-births?wsdl` with its address pointing here. A request is parsed with
lxml (no entities, no network, no DTD, libxml2's size limits), its `RequestId` header is the
idempotency key, its body is validated against the WSDL's schema, and then it takes the same
path as a REST request: the fault gate of `infra.sandbox.app`, `SystemState.replay` or
`SystemState.submit` (the ledger records what the body carried, as a nested dict), and the
same injected latency after recording.

Status codes: every fault is HTTP 500, as SOAP 1.1 (section 6.2) and the WS-I Basic Profile
require, except the sandbox's injected outages, which keep the status a real front end would
give: 503 down or closed for maintenance, 429 rate-limited, both with `Retry-After`. The dotted
faultcode (`soap:Client.Rejected`, `soap:Server.Closed`...) says what kind of fault it is; the
`vs:ServiceFault` detail carries the stable code and the bilingual message.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import APIRouter, Request, Response
from lxml import etree  # type: ignore[import-untyped]  # lxml ships no type information

from adapters.wsdl import VITAL_STATISTICS_NS, VITAL_STATISTICS_WSDL
from bundles.models import LocalizedText
from infra.sandbox.systems import CANCELLED, SystemState

if TYPE_CHECKING:
    from fastapi.responses import JSONResponse

log = structlog.get_logger("tellonce.sandbox")

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
CONTENT_TYPE = "text/xml; charset=utf-8"
MAX_BODY_BYTES = 1_000_000
"""Larger requests are refused unread: no registration comes near it."""

REGISTRAR = "on-registrar-births"
SERVICE_PATH = f"/soap/{REGISTRAR}"

MALFORMED = LocalizedText(
    en="The request is not a well-formed SOAP 1.1 message.",
    fr="La demande n'est pas un message SOAP 1.1 bien formé.",
)
TOO_LARGE = LocalizedText(
    en="The request is too large.",
    fr="La demande est trop volumineuse.",
)
REQUEST_ID_REQUIRED = LocalizedText(
    en="The RequestId header (1 to 255 printable characters) is required.",
    fr="L'en-tête RequestId (1 à 255 caractères imprimables) est obligatoire.",
)
UNKNOWN_OPERATION = LocalizedText(
    en="The service has no such operation.",
    fr="Le service n'offre pas cette opération.",
)
UNKNOWN_REGISTRATION = LocalizedText(
    en="There is no registration with this number.",
    fr="Il n'existe aucun enregistrement portant ce numéro.",
)
NO_WSDL_QUERY = LocalizedText(
    en="Add ?wsdl to read the service's description; operations are called with POST.",
    fr="Ajoutez ?wsdl pour lire la description du service; les opérations s'appellent par POST.",
)


def _parser(*, untrusted: bool = True) -> Any:
    # No entity expansion, no network, no DTD, libxml2's default limits. A request's comments and
    # processing instructions go; the WSDL's comments are its documentation and stay.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=untrusted,
        remove_pis=untrusted,
    )


@cache
def _wsdl() -> Any:
    """The WSDL document, parsed once (the same file the adapter ships)."""
    return etree.parse(str(VITAL_STATISTICS_WSDL), _parser(untrusted=False))


@cache
def _schema() -> Any:
    """The XML Schema embedded in the WSDL (it declares its own prefixes, so it stands alone)."""
    element = _wsdl().find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
    return etree.XMLSchema(element)


def wsdl_at(address: str) -> bytes:
    """The WSDL with its service address rewritten to `address`."""
    document = etree.ElementTree(copy.deepcopy(_wsdl().getroot()))
    for node in document.iter(f"{{{WSDL_SOAP_NS}}}address"):
        node.set("location", address)
    result: bytes = etree.tostring(document, xml_declaration=True, encoding="UTF-8")
    return result


class SoapFaultError(Exception):
    """A fault to answer with: its HTTP status, dotted faultcode, detail code and message."""

    def __init__(
        self,
        status: int,
        faultcode: str,
        code: str,
        message: LocalizedText,
        *,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.faultcode = faultcode
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def _vs(name: str) -> str:
    return f"{{{VITAL_STATISTICS_NS}}}{name}"


def _envelope() -> tuple[Any, Any]:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "vs": VITAL_STATISTICS_NS})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    return envelope, body


def _localized(parent: Any, name: str, text: LocalizedText | Mapping[str, Any]) -> None:
    values = text.model_dump() if isinstance(text, LocalizedText) else text
    node = etree.SubElement(parent, _vs(name))
    for language in ("en", "fr"):
        etree.SubElement(node, _vs(language)).text = str(values.get(language, ""))


def _xml(envelope: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    content = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return Response(content, status_code=status, media_type=CONTENT_TYPE, headers=headers)


def fault_response(fault: SoapFaultError) -> Response:
    """A SOAP 1.1 fault message, its `vs:ServiceFault` detail holding the code and bilingual message."""
    envelope, body = _envelope()
    node = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    # SOAP 1.1's fault children are unqualified.
    etree.SubElement(node, "faultcode").text = f"soap:{fault.faultcode}"
    etree.SubElement(node, "faultstring").text = fault.message.en
    detail = etree.SubElement(etree.SubElement(node, "detail"), _vs("ServiceFault"))
    etree.SubElement(detail, _vs("code")).text = fault.code
    _localized(detail, "message", fault.message)
    headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else None
    return _xml(envelope, fault.status, headers)


def _success(operation: str, values: dict[str, Any], replayed: bool) -> Response:
    envelope, body = _envelope()
    node = etree.SubElement(body, _vs(f"{operation}Response"))
    etree.SubElement(node, _vs("registration_number")).text = str(values["reference"])
    etree.SubElement(node, _vs("state")).text = str(values["state"])
    _localized(node, "message", values["message"])
    return _xml(envelope, 200, {"Idempotent-Replayed": "true"} if replayed else None)


def _from_json(response: JSONResponse) -> tuple[int, dict[str, Any], str | None]:
    """Status, body and Retry-After of an answer the REST core produced."""
    body = json.loads(bytes(response.body))
    return response.status_code, body, response.headers.get("Retry-After")


def _fault_from_rest(status: int, body: dict[str, Any], retry_after: str | None) -> SoapFaultError:
    """The SOAP fault of an error answer of the shared REST core (injected fault or business rule)."""
    code = str(body.get("code") or "error")
    message = LocalizedText.model_validate(body.get("message"))
    retry_after_s = int(retry_after) if retry_after and retry_after.isdigit() else None
    kinds = {
        422: (500, "Client.Rejected"),
        409: (500, "Client.NeedsReview"),
        429: (429, "Server.Busy"),
        503: (503, "Server.Closed" if code == "closed_for_maintenance" else "Server.Unavailable"),
    }
    http_status, faultcode = kinds.get(status, (500, "Server.Error"))
    return SoapFaultError(http_status, faultcode, code, message, retry_after_s=retry_after_s)


def fields_of(element: Any) -> dict[str, Any]:
    """What a body element carried, as a nested dict keyed by local names (text values)."""
    fields: dict[str, Any] = {}
    for child in element:
        name = etree.QName(child).localname
        fields[name] = fields_of(child) if len(child) else (child.text or "")
    return fields


def _request_id(header: Any) -> str | None:
    from infra.sandbox.app import checked_key  # noqa: PLC0415 - app imports this module

    if header is None:
        return None
    found = header.find(_vs("RequestId"))
    # Taken exactly as sent (xs:string keeps whitespace): two keys that differ are two requests.
    return checked_key(found.text if found is not None else None)


def _invalid(code: str, message: LocalizedText) -> SoapFaultError:
    return SoapFaultError(500, "Client.InvalidRequest", code, message)


def parse_envelope(raw: bytes) -> tuple[Any, Any]:
    """The SOAP header (or None) and the one operation element of a request.

    Raises:
        SoapFaultError: Not well-formed XML, a DTD, or not a SOAP 1.1 envelope with one body element.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise _invalid("request_too_large", TOO_LARGE)
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError:
        raise _invalid("malformed_request", MALFORMED) from None
    if root.getroottree().docinfo.doctype or root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise _invalid("malformed_request", MALFORMED)
    body = root.find(f"{{{SOAP_ENV}}}Body")
    operations = list(body) if body is not None else []
    if len(operations) != 1:
        raise _invalid("malformed_request", MALFORMED)
    return root.find(f"{{{SOAP_ENV}}}Header"), operations[0]


def validate(operation: Any) -> None:
    """Check an operation element against the WSDL's schema.

    Raises:
        SoapFaultError: `invalid_request`, naming the first element at fault (its path, never its value).
    """
    schema = _schema()
    if schema.validate(operation):
        return
    path = schema.error_log[0].path if len(schema.error_log) else ""
    raise _invalid(
        "invalid_request",
        LocalizedText(
            en=f"The request does not match the service's schema at {path}.",
            fr=f"La demande ne respecte pas le schéma du service à {path}.",
        ),
    )


def soap_routes(states: dict[str, SystemState]) -> APIRouter:
    """The SOAP endpoints and WSDLs of the systems that speak SOAP (`states` is read at call time)."""
    router = APIRouter(tags=["soap"])

    @router.get(SERVICE_PATH)
    async def wsdl(request: Request) -> Response:
        """The registrar's WSDL (`?wsdl`), its address pointing at this sandbox."""
        if "wsdl" not in request.query_params:
            return fault_response(_invalid("wsdl_query_required", NO_WSDL_QUERY))
        address = f"{str(request.base_url).rstrip('/')}{SERVICE_PATH}"
        return Response(wsdl_at(address), media_type=CONTENT_TYPE)

    @router.post(SERVICE_PATH)
    async def call(request: Request) -> Response:
        """One SOAP 1.1 call: `RegisterBirth` or `GetRegistration`."""
        # Looked up per call: the admin API's reset replaces the states in place.
        state = states[REGISTRAR]
        declared = request.headers.get("content-length", "")
        try:
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                # Refused before reading: a sandbox that buffers any size is a memory hazard.
                raise _invalid("request_too_large", TOO_LARGE)
            return await handle(state, await request.body())
        except SoapFaultError as fault:
            log.info("sandbox.soap_fault", system=REGISTRAR, faultcode=fault.faultcode, code=fault.code)
            return fault_response(fault)

    return router


async def handle(state: SystemState, raw: bytes) -> Response:
    """Parse, gate, validate and process one call (the REST core's path, in SOAP).

    Raises:
        SoapFaultError: Whatever the call must be answered with instead of a result.
    """
    from infra.sandbox.app import answer, gate  # noqa: PLC0415 - app imports this module

    try:
        header, operation = parse_envelope(raw)
    except SoapFaultError:
        state.counts.requests += 1
        raise
    key = _request_id(header)
    if key is None:
        state.counts.requests += 1
        raise _invalid("request_id_required", REQUEST_ID_REQUIRED)
    if (faulted := gate(state, key)) is not None:
        raise _fault_from_rest(*_from_json(faulted))
    name = etree.QName(operation)
    if name.namespace != VITAL_STATISTICS_NS or name.localname not in {"RegisterBirth", "GetRegistration"}:
        raise _invalid("unknown_operation", UNKNOWN_OPERATION)
    validate(operation)
    if name.localname == "GetRegistration":
        return registration(state, fields_of(operation)["registration_number"])
    replayed = state.replay("submit", key)
    result = replayed or state.submit(key, fields_of(operation))
    status, body, retry_after = _from_json(await answer(state, key, result, replayed=replayed is not None))
    if status >= 300:
        raise _fault_from_rest(status, body, retry_after)
    return _success("RegisterBirth", body, replayed is not None)


def registration(state: SystemState, number: str) -> Response:
    """`GetRegistration`: a registration's state, or a `Client.UnknownRegistration` fault."""
    order = state.orders.get(number)
    if order is None:
        raise SoapFaultError(500, "Client.UnknownRegistration", "unknown_registration", UNKNOWN_REGISTRATION)
    message = CANCELLED if order.state == "cancelled" else state.spec.accepted
    return _success(
        "GetRegistration", {"reference": number, "state": order.state, "message": message.model_dump()}, False
    )
