"""The registrar's SOAP service end to end: the zeep adapter against the sandbox process's endpoint."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
from lxml import etree  # type: ignore[import-untyped]

from adapters.contract_kit import call_context
from adapters.on_registrar_births import REGISTRATION_NUMBER, OntarioBirthRegistrationAdapter
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import ClosedError, NeedsAttentionError, RejectedError, StepRequest, TransientError
from adapters.wsdl import VITAL_STATISTICS_NS as NS
from adapters.wsdl import VITAL_STATISTICS_WSDL
from infra.sandbox.client import SandboxAdmin

pytestmark = pytest.mark.integration

SYSTEM = "on-registrar-births"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SAMPLE = StepRequest(fields=NEWBORN_FIELDS)
MESSAGE = {"en": "The hospital's notice does not match.", "fr": "L'avis de l'hôpital ne correspond pas."}


@pytest.fixture
async def admin(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox_url) as client:
        yield client
        await client.clear_faults(SYSTEM)


@pytest.fixture
async def adapter(sandbox_url: str) -> AsyncIterator[OntarioBirthRegistrationAdapter]:
    registrar = OntarioBirthRegistrationAdapter(sandbox_url)
    yield registrar
    await registrar.aclose()


@pytest.fixture
def prefix() -> str:
    """Keys of one test: faults and ledgers are scoped to them."""
    return f"soap-{uuid.uuid4().hex[:12]}:"


async def test_a_birth_is_registered_and_the_ledger_holds_what_the_body_carried(
    adapter: OntarioBirthRegistrationAdapter, admin: SandboxAdmin, prefix: str
) -> None:
    result = await adapter.submit(call_context(f"{prefix}register:submit"), SAMPLE)

    assert REGISTRATION_NUMBER.match(result.reference)
    assert result.message is not None
    assert result.message.fr == "La naissance est enregistrée."
    (entry,) = await admin.ledger(SYSTEM, key_prefix=prefix)
    assert entry["reference"] == result.reference
    fields = entry["fields"]
    assert fields["child"]["surname"] == "Tremblay"
    assert fields["child"]["birth_date"] == "2026-01-31"
    assert fields["child"]["birth_facility"] == "Hôpital Montfort"
    assert fields["parent_1"]["surname_at_birth"] == "Gagnon"
    assert fields["parent_1"]["birthplace"] == {"municipality": "Gatineau", "province_or_country": "QC"}
    assert fields["informant"]["address"]["postal_code"] == "k1a 0b1"
    assert fields["correspondence_language"] == "fr"
    assert "sin" not in str(fields)
    assert "046" not in str(fields)

    status = await adapter.status(
        call_context(f"{prefix}register:status", operation="status"), result.reference
    )
    assert status is not None
    assert (status.reference, status.state) == (result.reference, "registered")
    unknown = await adapter.status(
        call_context(f"{prefix}unknown:status", operation="status"), "ON-1900-0000000"
    )
    assert unknown is None


async def test_the_same_request_id_twice_registers_once(
    adapter: OntarioBirthRegistrationAdapter, admin: SandboxAdmin, prefix: str
) -> None:
    key = f"{prefix}register:submit"
    first = await adapter.submit(call_context(key), SAMPLE)
    again = await adapter.submit(call_context(key, attempt=2), SAMPLE)

    assert again.reference == first.reference
    (entry,) = await admin.ledger(SYSTEM, key_prefix=prefix)
    assert entry["replays"] == 1


async def test_a_refusal_is_rejected_in_both_languages_and_a_review_needs_attention(
    adapter: OntarioBirthRegistrationAdapter, admin: SandboxAdmin, prefix: str
) -> None:
    rule = {"field": "child.surname", "equals": "Tremblay"}
    await admin.set_faults(
        SYSTEM, key_prefix=prefix, reject_when={**rule, "code": "nolb_mismatch", "message": MESSAGE}
    )
    with pytest.raises(RejectedError) as rejected:
        await adapter.submit(call_context(f"{prefix}refused:submit"), SAMPLE)
    assert rejected.value.code == "nolb_mismatch"
    assert rejected.value.message.model_dump() == MESSAGE

    await admin.set_faults(SYSTEM, reject_when=None, review_when={**rule, "code": "nolb_review"})
    with pytest.raises(NeedsAttentionError) as review:
        await adapter.submit(call_context(f"{prefix}review:submit"), SAMPLE)
    assert review.value.code == "nolb_review"
    assert review.value.message.en
    assert review.value.message.fr
    assert not await admin.ledger(SYSTEM, key_prefix=prefix)


async def test_down_is_transient_and_maintenance_is_closed_until_it_ends(
    adapter: OntarioBirthRegistrationAdapter, admin: SandboxAdmin, prefix: str
) -> None:
    await admin.set_faults(SYSTEM, key_prefix=prefix, down=True)
    with pytest.raises(TransientError) as down:
        await adapter.submit(call_context(f"{prefix}down:submit"), SAMPLE)
    assert type(down.value) is TransientError
    assert down.value.code == "unavailable"

    await admin.set_faults(SYSTEM, down=False, maintenance_for_s=90)
    with pytest.raises(ClosedError) as closed:
        await adapter.submit(call_context(f"{prefix}closed:submit"), SAMPLE)
    assert closed.value.code == "closed_for_maintenance"
    assert closed.value.retry_after is not None
    assert timedelta(seconds=60) <= closed.value.retry_after <= timedelta(seconds=90)
    assert not await admin.ledger(SYSTEM, key_prefix=prefix)


async def test_an_answer_lost_past_the_deadline_is_transient_and_the_retry_finds_the_first(
    adapter: OntarioBirthRegistrationAdapter, admin: SandboxAdmin, prefix: str
) -> None:
    key = f"{prefix}slow:submit"
    await admin.set_faults(SYSTEM, key_prefix=prefix, latency_ms=1_500)
    with pytest.raises(TransientError) as slow:
        await adapter.submit(call_context(key, timeout=timedelta(milliseconds=300)), SAMPLE)
    assert slow.value.code == "timeout"
    await admin.clear_faults(SYSTEM)

    retried = await adapter.submit(call_context(key, attempt=2), SAMPLE)
    (entry,) = await admin.ledger(SYSTEM, key_prefix=prefix)
    assert entry["reference"] == retried.reference
    assert entry["replays"] == 1


def envelope(body: str, key: str | None) -> bytes:
    header = f"<soap:Header><vs:RequestId>{key}</vs:RequestId></soap:Header>" if key is not None else ""
    return (
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:vs="{NS}">{header}<soap:Body>{body}</soap:Body>'
        "</soap:Envelope>"
    ).encode()


VALID_BODY = (
    "<vs:RegisterBirth><vs:child><vs:surname>Tremblay</vs:surname><vs:sex>F</vs:sex>"
    "<vs:birth_date>2026-01-31</vs:birth_date></vs:child>"
    "<vs:parent_1><vs:surname>Tremblay</vs:surname></vs:parent_1></vs:RegisterBirth>"
)


SEX_Q = VALID_BODY.replace("<vs:sex>F</vs:sex>", "<vs:sex>Q</vs:sex>")
EXTRA = VALID_BODY.replace("</vs:child>", "<vs:sin>1</vs:sin></vs:child>")
ENTITY = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'


@pytest.mark.parametrize(
    ("content", "code"),
    [
        pytest.param(b"<soap:Envelope><unclosed>", "malformed_request", id="malformed"),
        pytest.param(b"<RegisterBirth/>", "malformed_request", id="not-soap"),
        pytest.param(ENTITY + envelope(VALID_BODY.replace("Tremblay", "&e;", 1), "k"), "malformed_request",
                     id="entity"),
        pytest.param(envelope(SEX_Q, "k"), "invalid_request", id="schema"),
        pytest.param(envelope(EXTRA, "k"), "invalid_request", id="extra-element"),
        pytest.param(envelope(VALID_BODY, None), "request_id_required", id="no-request-id"),
        pytest.param(envelope("<vs:DeleteBirth/>", "k"), "unknown_operation", id="unknown-operation"),
    ],
)  # fmt: skip
async def test_bad_requests_get_a_client_fault_and_change_nothing(
    sandbox_url: str, admin: SandboxAdmin, prefix: str, content: bytes, code: str
) -> None:
    """SOAP 1.1 answers every fault with HTTP 500; the faultcode says whose fault it is."""
    body = content.replace(b"<vs:RequestId>k<", f"<vs:RequestId>{prefix}bad<".encode())
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/soap/{SYSTEM}", content=body, headers={"Content-Type": "text/xml; charset=utf-8"}
        )

    assert response.status_code == 500
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault.findtext("faultcode") == "soap:Client.InvalidRequest"
    assert fault.findtext(f"detail/{{{NS}}}ServiceFault/{{{NS}}}code") == code
    assert fault.findtext(f"detail/{{{NS}}}ServiceFault/{{{NS}}}message/{{{NS}}}fr")
    assert b"root:" not in response.content, "entities are never expanded"
    assert not await admin.ledger(SYSTEM, key_prefix=prefix)


async def test_the_wsdl_is_served_at_the_sandbox_and_zeep_can_call_it(
    sandbox_url: str, admin: SandboxAdmin, prefix: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{sandbox_url}/soap/{SYSTEM}?wsdl")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    served = etree.fromstring(response.content)
    address = served.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address").get("location")
    assert address == f"{sandbox_url}/soap/{SYSTEM}"
    shipped = etree.parse(str(VITAL_STATISTICS_WSDL)).getroot()
    for document in (served, shipped):
        document.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address").set("location", "-")
    assert etree.tostring(served) == etree.tostring(shipped), "the sandbox serves the adapter's own WSDL"

    # Any zeep user can call the service from the served WSDL alone (a local copy, as integrators keep).
    path = tmp_path / "served.wsdl"
    path.write_bytes(response.content)
    client = zeep.AsyncClient(str(path))  # type: ignore[no-untyped-call]
    try:
        answer: Any = await client.service.RegisterBirth(
            child={"surname": "Tremblay", "sex": "X", "birth_date": "2026-02-01"},
            parent_1={"surname": "Tremblay"},
            _soapheaders={"RequestId": f"{prefix}zeep:submit"},
        )
    finally:
        await client.transport.aclose()
        client.transport.wsdl_client.close()
    assert REGISTRATION_NUMBER.match(answer.registration_number)
    (entry,) = await admin.ledger(SYSTEM, key_prefix=prefix)
    assert entry["fields"]["child"] == {"surname": "Tremblay", "sex": "X", "birth_date": "2026-02-01"}


async def test_injected_outages_keep_their_http_status_and_retry_after(
    sandbox_url: str, admin: SandboxAdmin, prefix: str
) -> None:
    """Outages answer as a front end would (503, 429 with Retry-After), still as SOAP faults."""
    expected = {
        "maintenance_for_s": (503, "soap:Server.Closed", "closed_for_maintenance"),
        "down": (503, "soap:Server.Unavailable", "unavailable"),
        "fail_next": (500, "soap:Server.Error", "internal_error"),
    }
    settings: dict[str, Any] = {"maintenance_for_s": 30, "down": True, "fail_next": 1}
    async with httpx.AsyncClient() as http:
        for fault_name, (status, faultcode, code) in expected.items():
            await admin.clear_faults(SYSTEM)
            await admin.set_faults(SYSTEM, key_prefix=prefix, **{fault_name: settings[fault_name]})
            response = await http.post(
                f"{sandbox_url}/soap/{SYSTEM}", content=envelope(VALID_BODY, f"{prefix}{fault_name}")
            )
            assert response.status_code == status, fault_name
            assert response.headers["content-type"] == "text/xml; charset=utf-8"
            fault = etree.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
            assert fault.findtext("faultcode") == faultcode
            assert fault.findtext(f"detail/{{{NS}}}ServiceFault/{{{NS}}}code") == code
            if fault_name == "maintenance_for_s":
                assert 1 <= int(response.headers["Retry-After"]) <= 30

        await admin.clear_faults(SYSTEM)
        await admin.set_faults(SYSTEM, key_prefix=prefix, rate_limit_per_s=0.01)
        statuses = [
            (
                await http.post(
                    f"{sandbox_url}/soap/{SYSTEM}", content=envelope(VALID_BODY, f"{prefix}rate-{n}")
                )
            )
            for n in range(2)
        ]
    assert [response.status_code for response in statuses] == [200, 429]
    assert int(statuses[1].headers["Retry-After"]) >= 1
    assert b"soap:Server.Busy" in statuses[1].content
    assert len(await admin.ledger(SYSTEM, key_prefix=prefix)) == 1
