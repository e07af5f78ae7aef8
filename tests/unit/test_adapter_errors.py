"""How the REST adapters turn HTTP outcomes into the error taxonomy, and what they send (no server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from adapters.batch import BatchFileAdapter
from adapters.esdc_sin import EsdcSinAdapter as EsdcSinBatchAdapter
from adapters.http import JsonRestAdapter
from adapters.mapping import FieldMap, Rename, upper
from adapters.message_queue import MessageQueueAdapter
from adapters.on_certificates import OntarioCertificateAdapter
from adapters.on_registrar_births import registration_number
from adapters.registry import ADAPTER_TYPES, CONFIGURED_SYSTEMS, KNOWN_ADAPTERS, build_adapters
from adapters.resp_referral import RespReferralAdapter
from adapters.samples import NEWBORN_FIELDS as NEWBORN
from adapters.sdk import (
    CallContext,
    CompensationRequest,
    NeedsAttentionError,
    RejectedError,
    StepRequest,
    TransientError,
)
from adapters.soap import SoapAdapter
from infra.settings import Settings

BASE = "http://legacy.test"
SIN = "046454286"  # the CRA's published sample SIN: synthetic, but treated as personal data here
MESSAGE = {"en": "Name does not match.", "fr": "Le nom ne correspond pas."}

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


class EsdcSinAdapter(JsonRestAdapter):
    """ESDC's intake as a REST system would take it: the HTTP base class on a real field map.

    (The shipped ESDC adapter exchanges batch files: `tests/unit/test_batch_adapter.py`.)
    """

    system = "esdc-sin"
    field_map = EsdcSinBatchAdapter.field_map


def context(timeout: timedelta = timedelta(seconds=5), key: str = "bundle-1:register:submit") -> CallContext:
    return CallContext(
        idempotency_key=key,
        bundle_ref="bundle-1",
        step_id="register",
        operation="submit",
        attempt=1,
        deadline=datetime.now(UTC) + timeout,
    )


def adapter_with(handler: Handler, cls: type[JsonRestAdapter] = EsdcSinAdapter) -> JsonRestAdapter:
    return cls(BASE, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handle(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handle


REQUEST = StepRequest(fields={"child": {"surname": "Tremblay"}, "birth_parent": {"sin": SIN}})


async def submit_error(handler: Handler) -> Exception:
    adapter = adapter_with(handler)
    with pytest.raises((TransientError, RejectedError, NeedsAttentionError)) as caught:
        await adapter.submit(context(), REQUEST)
    return caught.value


async def test_created_answer_is_a_result_and_the_key_is_sent() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"reference": "ON-2026-0000001", "message": MESSAGE, "extra": 1})

    result = await adapter_with(handle).submit(context(timeout=timedelta(seconds=3)), REQUEST)

    assert result.reference == "ON-2026-0000001"
    assert result.message is not None
    assert result.message.fr == MESSAGE["fr"]
    (request,) = seen
    assert request.url == f"{BASE}/systems/esdc-sin/requests"
    assert request.headers["Idempotency-Key"] == "bundle-1:register:submit"
    timeouts = request.extensions["timeout"]
    assert all(0 < value <= 3 for value in timeouts.values()), "timeouts are finite and within the deadline"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, "server_error"),
        (502, "server_error"),
        (503, "unavailable"),
        (504, "server_error"),
        (408, "request_timeout"),
    ],
)
async def test_server_failures_are_transient(status: int, code: str) -> None:
    error = await submit_error(answer(status, {"code": "boom", "message": MESSAGE}))
    assert isinstance(error, TransientError)
    assert error.code == code
    assert error.detail == f"HTTP {status} from esdc-sin"


async def test_429_keeps_retry_after_seconds() -> None:
    error = await submit_error(answer(429, {"code": "rate_limited"}, {"Retry-After": "7"}))
    assert isinstance(error, TransientError)
    assert error.code == "rate_limited"
    assert error.retry_after == timedelta(seconds=7)


async def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    error = await submit_error(answer(503, None, {"Retry-After": when}))
    assert isinstance(error, TransientError)
    assert error.retry_after is not None
    assert timedelta(seconds=100) < error.retry_after <= timedelta(seconds=120)


async def test_unusable_retry_after_is_ignored() -> None:
    error = await submit_error(answer(429, None, {"Retry-After": "soon"}))
    assert isinstance(error, TransientError)
    assert error.retry_after is None


async def test_422_with_code_and_message_is_rejected_in_both_languages() -> None:
    error = await submit_error(answer(422, {"code": "name_mismatch", "message": MESSAGE}))
    assert isinstance(error, RejectedError)
    assert error.code == "name_mismatch"
    assert error.message.model_dump() == MESSAGE


@pytest.mark.parametrize(
    "body",
    [
        {"detail": [{"loc": ["body"], "msg": "bad", "input": SIN}]},
        {"code": "name_mismatch", "message": {"en": "English only"}},
        {"code": f"sin {SIN} invalid", "message": MESSAGE},
        "not an object",
    ],
)
async def test_422_without_a_usable_error_is_our_bug(body: Any) -> None:
    error = await submit_error(answer(422, body))
    assert isinstance(error, RejectedError)
    assert error.code == "bad_request_422"
    assert error.message.en
    assert error.message.fr
    assert SIN not in str(error)
    assert SIN not in error.detail
    assert SIN not in error.code


async def test_409_needs_attention_with_the_systems_code() -> None:
    error = await submit_error(answer(409, {"code": "needs_review", "message": MESSAGE}))
    assert isinstance(error, NeedsAttentionError)
    assert error.code == "needs_review"
    assert error.message.model_dump() == MESSAGE


async def test_409_without_a_body_still_needs_attention() -> None:
    error = await submit_error(answer(409))
    assert isinstance(error, NeedsAttentionError)
    assert error.code == "needs_review"
    assert error.message.fr


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413])
async def test_other_4xx_are_rejected_generically_without_the_body(status: int) -> None:
    error = await submit_error(answer(status, {"code": "x", "message": MESSAGE, "echo": {"sin": SIN}}))
    assert isinstance(error, RejectedError)
    assert error.code == f"bad_request_{status}"
    assert "problem on our side" in error.message.en
    assert error.detail == f"HTTP {status} from esdc-sin"
    assert SIN not in str(error)


async def test_unexpected_status_needs_attention() -> None:
    error = await submit_error(answer(302, None, {"Location": "/elsewhere"}))
    assert isinstance(error, NeedsAttentionError)
    assert error.code == "unexpected_status_302"


@pytest.mark.parametrize(
    "respond",
    [
        lambda: httpx.Response(201, text="<html>ok</html>"),
        lambda: httpx.Response(201, json=["ON-2026-0000001"]),
        lambda: httpx.Response(201, json={"reference": ""}),
        lambda: httpx.Response(200, json={"message": MESSAGE}),
    ],
)
async def test_unreadable_success_needs_attention(respond: Callable[[], httpx.Response]) -> None:
    error = await submit_error(lambda _request: respond())
    assert isinstance(error, NeedsAttentionError)
    assert error.code == "unreadable_answer"


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (httpx.ConnectError("refused"), "connection_failed"),
        (httpx.RemoteProtocolError("closed"), "connection_failed"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
    ],
)
async def test_transport_failures_are_transient(raised: Exception, code: str) -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        raise raised

    error = await submit_error(handle)
    assert isinstance(error, TransientError)
    assert error.code == code
    assert "esdc-sin" in error.detail


async def test_a_slow_system_is_cut_off_at_the_deadline() -> None:
    async def handle(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(201, json={"reference": "late"})

    adapter = adapter_with(handle)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TransientError) as caught:
        await adapter.submit(context(timeout=timedelta(milliseconds=200)), REQUEST)
    assert caught.value.code == "timeout"
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_a_passed_deadline_makes_no_call() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(201, json={"reference": "x"})

    with pytest.raises(TransientError) as caught:
        await adapter_with(handle).submit(context(timeout=timedelta(seconds=-1)), REQUEST)
    assert caught.value.code == "deadline_passed"
    assert not calls


async def test_timeout_never_exceeds_the_adapters_bound() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"reference": "x"})

    adapter = EsdcSinAdapter(
        BASE, httpx.AsyncClient(transport=httpx.MockTransport(handle)), max_timeout=timedelta(seconds=2)
    )
    await adapter.submit(context(timeout=timedelta(hours=24)), REQUEST)
    assert max(seen[0].extensions["timeout"].values()) == 2


async def test_status_of_an_unknown_reference_is_none_and_reads_carry_no_key() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/ON-2026-0000001"):
            return httpx.Response(200, json={"reference": "ON-2026-0000001", "state": "registered"})
        return httpx.Response(404, json={"code": "unknown_reference"})

    adapter = adapter_with(handle)
    known = await adapter.status(context(), "ON-2026-0000001")
    assert known is not None
    assert known.state == "registered"
    assert await adapter.status(context(), "ON/../2026") is None
    assert "Idempotency-Key" not in seen[0].headers
    assert seen[1].url.raw_path.endswith(b"/requests/ON%2F..%2F2026"), "references are URL-encoded"


async def test_certificate_compensation_cancels_without_personal_data() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"reference": "SO-CERT-1", "message": MESSAGE, "refunded_cents": 2500}
        )

    adapter = adapter_with(handle, OntarioCertificateAdapter)
    result = await adapter.compensate(
        context(key="b:cert:compensate"), CompensationRequest(reference="SO-CERT-1", fields=REQUEST.fields)
    )
    assert result.reference == "SO-CERT-1"
    assert seen[0].url.path == "/systems/on-certificates/requests/SO-CERT-1/cancel"
    assert seen[0].headers["Idempotency-Key"] == "b:cert:compensate"
    assert seen[0].content == b""


async def test_other_systems_cannot_compensate() -> None:
    adapter = adapter_with(answer(200, {}), EsdcSinAdapter)
    with pytest.raises(RejectedError) as caught:
        await adapter.compensate(context(), CompensationRequest(reference="x", fields={}))
    assert caught.value.code == "compensation_unsupported"


async def test_an_injected_client_is_left_open_and_an_own_client_is_closed() -> None:
    shared = httpx.AsyncClient(transport=httpx.MockTransport(answer(201, {"reference": "x"})))
    adapters = build_adapters(Settings(sandbox_url=BASE), shared)
    for adapter in adapters.values():
        await adapter.aclose()
    assert not shared.is_closed
    await shared.aclose()

    own = EsdcSinAdapter(BASE)
    await own.aclose()
    assert own._client.is_closed


def test_registry_names_the_five_systems() -> None:
    assert {
        "on-registrar-births",
        "on-certificates",
        "esdc-sin",
        "cra-aba",
        "resp-referral",
        # The change-of-address bundle.
        "on-identity",
        "cra-address",
        "esdc-address",
        "elections-canada",
        "on-mto",
        "on-health",
        "ottawa-revenue",
        "toronto-revenue",
    } | {system.id for system in CONFIGURED_SYSTEMS} == KNOWN_ADAPTERS
    assert all(ADAPTER_TYPES[system].system == system for system in KNOWN_ADAPTERS)
    assert set(build_adapters(Settings(sandbox_url=BASE))) == KNOWN_ADAPTERS


# --- field mapping ---------------------------------------------------------------------------


async def sent_fields(cls: type[JsonRestAdapter], fields: dict[str, Any]) -> dict[str, Any]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"reference": "R-1"})

    await adapter_with(handle, cls).submit(context(), StepRequest(fields=fields))
    sent: dict[str, Any] = json.loads(seen[0].content)["fields"]
    return sent


async def test_absent_fields_are_not_invented() -> None:
    sent = await sent_fields(EsdcSinAdapter, {"child": {"surname": "Tremblay", "given_names": None}})
    assert sent == {"child": {"last_name": "Tremblay"}}


async def test_registration_number_is_found_by_its_format() -> None:
    assert registration_number({"register_birth": "ON-2026-1234567"}) == "ON-2026-1234567"
    assert registration_number({"certificate": "SO-CERT-1"}) is None
    assert registration_number("ON-2026-1234567") is None
    sent = await sent_fields(OntarioCertificateAdapter, {"references": {"x": "not a number"}})
    assert "registration_number" not in sent


async def test_each_system_names_fields_its_own_way() -> None:
    resp = await sent_fields(RespReferralAdapter, NEWBORN)
    assert resp["contact"] == {
        "first_name": "Marie",
        "last_name": "Tremblay",
        "mailing_address": NEWBORN["birth_parent"]["mailing_address"],
        "preferred_language": "fr",
    }
    assert "sin" not in json.dumps(resp)


def test_field_map_reports_unused_paths_by_name_only() -> None:
    field_map = FieldMap(Rename("a.b", "x", upper), Rename("c", "y"))
    mapped, unused = field_map.apply({"a": {"b": "v", "z": SIN}, "c": {"d": 1}, "e": 2})
    assert mapped == {"x": "V", "y": {"d": 1}}
    assert unused == ["a.z", "e"]


async def test_unused_projected_fields_are_logged_without_values() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await sent_fields(RespReferralAdapter, NEWBORN)
    unused = [entry for entry in logs if entry["event"] == "adapter.fields_unused"]
    assert unused
    assert "birth_parent.sin" in unused[0]["paths"]
    assert SIN not in json.dumps(logs, default=str)
    assert "046 454 286" not in json.dumps(logs, default=str)


KNOWN_UNUSED = {("education_savings_referral", "references.birth_registration")}
"""Sent by the definition but not taken by the system (a promoter has no use for the number)."""


def test_every_field_the_newborn_definition_sends_is_taken_by_its_adapter() -> None:
    """A definition that sends more than a system takes breaks data minimisation: catch the drift."""
    from bundles.catalogue import DEFAULT_DIRECTORY, load_definition
    from bundles.plan import project

    full: dict[str, Any] = json.loads(json.dumps(NEWBORN))
    full["child"].update(time_of_birth="10:00", plurality=2, birth_order=1)
    full["birth_parent"].update(
        health_number="1234567890AB",
        email="parent@example.ca",
        phone="6135550100",
        status_in_canada="citizen",
    )
    full["birth_parent"]["mailing_address"]["unit"] = "2"
    full["other_parent"] = {
        "given_names": "Luc",
        "surname": "Tremblay",
        "surname_at_birth": "Tremblay",
        "date_of_birth": "1990-01-01",
        "place_of_birth": {"municipality": "Laval", "province_or_country": "QC"},
    }
    definition = load_definition(DEFAULT_DIRECTORY / "newborn-on.yaml", known_adapters=KNOWN_ADAPTERS)
    for step in definition.steps:
        payload = project(full, step.fields)
        if step.references:
            payload["references"] = dict.fromkeys(step.references, "ON-2026-0000001")
        adapter = ADAPTER_TYPES[step.adapter]
        assert issubclass(adapter, (JsonRestAdapter, SoapAdapter, MessageQueueAdapter, BatchFileAdapter)), (
            step.adapter
        )
        mapped, unused = adapter.field_map.apply(payload)
        assert {(step.id, path) for path in unused} <= KNOWN_UNUSED, step.id
        if issubclass(adapter, BatchFileAdapter):
            # A batch record has a column for everything the map produces.
            assert adapter.request_layout.to_values(mapped)[1] == [], step.id
