"""The legacy sandbox over real HTTP: systems, ledger, fees, faults and the admin API."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from infra.sandbox import create_app
from infra.sandbox.client import SandboxAdmin
from infra.sandbox.systems import fresh_states

pytestmark = pytest.mark.integration

SYSTEMS = {"on-registrar-births", "on-certificates", "esdc-sin", "cra-aba", "resp-referral"}
CHILD = {"child": {"surname": "Tremblay", "given_names": "Élodie"}}
MESSAGE = {
    "en": "Names differ from the hospital's notice.",
    "fr": "Les noms diffèrent de l'avis de l'hôpital.",
}


@pytest.fixture
async def http(sandbox_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as client:
        yield client


@pytest.fixture
async def admin(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox_url) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test only: the sandbox is shared by the whole session."""
    return f"t-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def clean_faults(admin: SandboxAdmin) -> AsyncIterator[None]:
    """Clear every system's faults after the test, however it ends."""
    yield
    for system in SYSTEMS:
        await admin.clear_faults(system)


async def post(
    http: httpx.AsyncClient, system: str, key: str | None, fields: dict[str, Any] | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await http.post(f"/systems/{system}/requests", json={"fields": fields or CHILD}, headers=headers)


async def cancel(http: httpx.AsyncClient, reference: str, key: str) -> httpx.Response:
    return await http.post(
        f"/systems/on-certificates/requests/{reference}/cancel", headers={"Idempotency-Key": key}
    )


async def fees(admin: SandboxAdmin) -> dict[str, int]:
    found: dict[str, int] = (await admin.system("on-certificates"))["fees"]
    return found


# --- admin API -------------------------------------------------------------------------------


async def test_lists_the_five_systems(admin: SandboxAdmin) -> None:
    systems = {system["id"]: system for system in await admin.systems()}
    # The five newborn systems, and every other the sandbox simulates (configured ones included).
    assert SYSTEMS <= set(systems) == set(fresh_states())
    certificates = systems["on-certificates"]
    assert set(certificates["fees"]) == {"charged_cents", "refunded_cents", "net_cents"}
    assert certificates["reversible"] is True
    assert systems["resp-referral"]["honours_idempotency_keys"] is False
    assert "fees" not in systems["esdc-sin"]
    for system in systems.values():
        assert system["name"]["en"]
        assert system["name"]["fr"]
        assert set(system["faults"]) >= {"down", "error_rate", "latency_ms", "reject_when", "review_when"}
        assert set(system["counts"]) >= {"requests", "effects", "replays", "duplicates", "faulted"}


async def test_unknown_system_is_404(http: httpx.AsyncClient) -> None:
    response = await post(http, "nowhere", "k")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_system"
    assert (await http.get("/sandbox/systems/nowhere/ledger")).status_code == 404


async def test_fault_bodies_are_validated(http: httpx.AsyncClient) -> None:
    for body in (
        {"error_rate": 2},
        {"latency_ms": -1},
        {"dwon": True},
        {"reject_when": {"field": "a", "equals": 1, "code": "Not A Code"}},
        {"reject_when": {"equals": 1}},
        {"rate_limit_per_s": 0},
    ):
        response = await http.put("/sandbox/systems/esdc-sin/faults", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"][0] == "body"


async def test_faults_merge_and_clear(admin: SandboxAdmin, clean_faults: None) -> None:
    rule = {"field": "child.surname", "equals": "X", "code": "x_refused", "message": MESSAGE}
    await admin.set_faults("cra-aba", latency_ms=5, reject_when=rule)
    shown = await admin.set_faults("cra-aba", fail_next=3)
    assert shown["faults"]["latency_ms"] == 5
    assert shown["faults"]["fail_next"] == 3
    assert shown["faults"]["reject_when"] == rule
    shown = await admin.set_faults("cra-aba", reject_when=None)
    assert shown["faults"]["reject_when"] is None
    assert shown["faults"]["latency_ms"] == 5
    cleared = await admin.clear_faults("cra-aba")
    assert cleared["faults"]["latency_ms"] == 0
    assert cleared["faults"]["fail_next"] == 0


async def test_reset_forgets_everything() -> None:
    # In-process, on an app of its own: resetting the shared sandbox would disturb other tests.
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        admin = SandboxAdmin("http://sandbox", http)
        assert (
            await post(http, "on-certificates", "k1", {"certificate": {"form": "short"}})
        ).status_code == 201
        await admin.set_faults("esdc-sin", down=True)
        await admin.reset()
        assert await admin.ledger("on-certificates") == []
        assert (await fees(admin))["charged_cents"] == 0
        assert (await admin.system("esdc-sin"))["faults"]["down"] is False


# --- systems ---------------------------------------------------------------------------------


async def test_idempotency_key_is_required(http: httpx.AsyncClient) -> None:
    response = await post(http, "esdc-sin", None)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"
    assert response.json()["message"]["fr"]


async def test_malformed_body_is_400(http: httpx.AsyncClient, prefix: str, admin: SandboxAdmin) -> None:
    for content in (b"not json", b"[1]", b'{"fields": 3}', b'{"fields": {}, "extra": 1}'):
        response = await http.post(
            "/systems/esdc-sin/requests", content=content, headers={"Idempotency-Key": f"{prefix}bad"}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "malformed_request"
    assert await admin.ledger("esdc-sin", key_prefix=prefix) == []


async def test_registration_is_idempotent(http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str) -> None:
    key = f"{prefix}register"
    first = await post(http, "on-registrar-births", key)
    again = await post(http, "on-registrar-births", key, {"child": {"surname": "Changed"}})

    assert first.status_code == 201
    body = first.json()
    assert re.fullmatch(r"ON-\d{4}-\d{7}", body["reference"])
    assert body["message"]["en"]
    assert body["message"]["fr"]
    assert again.status_code == 201
    assert again.json() == body
    assert again.headers["Idempotent-Replayed"] == "true"
    (entry,) = await admin.ledger("on-registrar-births", key_prefix=prefix)
    assert entry["operation"] == "submit"
    assert entry["idempotency_key"] == key
    assert entry["fields"] == CHILD
    assert entry["reference"] == body["reference"]
    assert entry["replays"] == 1
    assert entry["duplicate_of"] is None
    assert entry["received_at"].endswith("Z") or entry["received_at"].endswith("+00:00")

    status = await http.get(f"/systems/on-registrar-births/requests/{body['reference']}")
    assert status.json()["state"] == "registered"
    assert (await http.get("/systems/on-registrar-births/requests/ON-1900-0000000")).status_code == 404


@pytest.mark.parametrize(
    ("system", "pattern"),
    [("esdc-sin", r"SIN-REQ-[0-9A-Z]{10}"), ("cra-aba", r"CRA-ABA-[0-9A-Z]{10}")],
)
async def test_federal_systems_answer_with_references(
    http: httpx.AsyncClient, prefix: str, system: str, pattern: str
) -> None:
    response = await post(http, system, f"{prefix}{system}")
    assert response.status_code == 201
    assert re.fullmatch(pattern, response.json()["reference"])


async def test_resp_referral_makes_visible_duplicates(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str
) -> None:
    key = f"{prefix}resp"
    first = (await post(http, "resp-referral", key)).json()
    second = (await post(http, "resp-referral", key)).json()
    other = (await post(http, "resp-referral", f"{prefix}other")).json()

    assert first["reference"] != second["reference"]
    entries = await admin.ledger("resp-referral", key_prefix=prefix)
    assert [e["reference"] for e in entries] == [first["reference"], second["reference"], other["reference"]]
    assert entries[0]["duplicate_of"] is None
    assert entries[1]["duplicate_of"] == entries[0]["seq"]
    assert entries[2]["duplicate_of"] is None
    assert all(e["replays"] == 0 for e in entries)


async def test_certificate_fees_are_charged_and_refunded_once(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str
) -> None:
    before = await fees(admin)
    short = await post(
        http, "on-certificates", f"{prefix}short", {"certificate": {"form": "short", "copies": 1}}
    )
    long = await post(
        http, "on-certificates", f"{prefix}long", {"certificate": {"form": "long", "copies": 2}}
    )
    await post(http, "on-certificates", f"{prefix}long", {"certificate": {"form": "long", "copies": 2}})
    assert short.json()["fee_cents"] == 2500
    assert long.json()["fee_cents"] == 7000
    after_orders = await fees(admin)
    assert after_orders["charged_cents"] - before["charged_cents"] == 9500, "a replay charges nothing"

    reference = long.json()["reference"]
    undo = await cancel(http, reference, f"{prefix}undo")
    undo_again = await cancel(http, reference, f"{prefix}undo")
    other_key = await cancel(http, reference, f"{prefix}undo-2")
    assert undo.status_code == 200
    assert undo.json()["state"] == "cancelled"
    assert undo.json()["refunded_cents"] == 7000
    assert undo_again.json() == undo.json()
    assert undo_again.headers["Idempotent-Replayed"] == "true"
    assert other_key.json()["refunded_cents"] == 0, "an order is refunded once, whatever the key"

    after = await fees(admin)
    assert after["refunded_cents"] - before["refunded_cents"] == 7000
    assert after["net_cents"] - before["net_cents"] == 2500
    status = await admin.request("on-certificates", reference)
    assert status["state"] == "cancelled"
    assert status["refunded"] is True
    assert status["refunded_cents"] == status["fee_cents"] == 7000

    entries = await admin.ledger("on-certificates", key_prefix=prefix)
    assert [(e["operation"], e["outcome"], e["amount_cents"]) for e in entries] == [
        ("submit", "accepted", 2500),
        ("submit", "accepted", 7000),
        ("cancel", "cancelled", -7000),
        ("cancel", "already_cancelled", None),
    ]
    assert entries[2]["replays"] == 1


async def test_cancelling_an_unknown_order_is_a_no_op(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str
) -> None:
    before = await fees(admin)
    response = await cancel(http, "SO-CERT-NOSUCH00", f"{prefix}undo")
    assert response.status_code == 200
    assert response.json()["state"] == "not_found"
    assert response.json()["refunded_cents"] == 0
    assert (await cancel(http, "SO-CERT-NOSUCH00", f"{prefix}undo")).json() == response.json()
    assert await fees(admin) == before


async def test_invalid_certificate_orders_are_rejected(http: httpx.AsyncClient, prefix: str) -> None:
    for fields, code in (
        ({}, "certificate_order_incomplete"),
        ({"certificate": {"form": "wallet"}}, "certificate_form_unknown"),
        ({"certificate": {"form": "short", "copies": 0}}, "certificate_copies_invalid"),
        ({"certificate": {"form": "short", "copies": True}}, "certificate_copies_invalid"),
    ):
        response = await post(http, "on-certificates", f"{prefix}{code}", fields)
        assert response.status_code == 422
        assert response.json()["code"] == code


async def test_only_certificates_can_be_cancelled(http: httpx.AsyncClient) -> None:
    response = await http.post("/systems/esdc-sin/requests/X/cancel", headers={"Idempotency-Key": "k"})
    assert response.status_code == 405
    assert response.json()["code"] == "cancel_not_supported"


# --- faults ----------------------------------------------------------------------------------


async def test_down_is_503_and_records_nothing(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    shown = await admin.set_faults("esdc-sin", down=True)
    assert shown["available"] is False
    response = await post(http, "esdc-sin", f"{prefix}a")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert (await http.get("/systems/esdc-sin/requests/SIN-REQ-X")).status_code == 503
    await admin.set_faults("esdc-sin", down=False)
    assert (await post(http, "esdc-sin", f"{prefix}a")).status_code == 201
    assert len(await admin.ledger("esdc-sin", key_prefix=prefix)) == 1


async def test_down_for_recovers_by_itself(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    shown = await admin.set_faults("cra-aba", down_for_s=0.6)
    assert shown["faults"]["down_until"] is not None
    response = await post(http, "cra-aba", f"{prefix}a")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    await asyncio.sleep(0.8)
    assert (await post(http, "cra-aba", f"{prefix}a")).status_code == 201
    assert (await admin.system("cra-aba"))["available"] is True


async def test_fail_next_fails_exactly_n_requests(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    await admin.set_faults("esdc-sin", fail_next=2)
    statuses = [(await post(http, "esdc-sin", f"{prefix}{n}")).status_code for n in range(3)]
    assert statuses == [500, 500, 201]
    assert [e["idempotency_key"] for e in await admin.ledger("esdc-sin", key_prefix=prefix)] == [f"{prefix}2"]


async def test_error_rate_one_always_fails(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    before = (await admin.system("cra-aba"))["counts"]["faulted"]
    await admin.set_faults("cra-aba", error_rate=1.0)
    assert {(await post(http, "cra-aba", f"{prefix}{n}")).status_code for n in range(5)} == {500}
    assert (await admin.system("cra-aba"))["counts"]["faulted"] - before == 5
    assert await admin.ledger("cra-aba", key_prefix=prefix) == []


async def test_latency_records_before_sleeping(
    sandbox_url: str, http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    """A client that gives up and retries with the same key finds the first effect: one record."""
    key = f"{prefix}slow"
    await admin.set_faults("on-registrar-births", latency_ms=1500)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await post(impatient, "on-registrar-births", key)
    (recorded,) = await admin.ledger("on-registrar-births", key_prefix=prefix)
    await admin.clear_faults("on-registrar-births")

    retried = await post(http, "on-registrar-births", key)
    assert retried.json()["reference"] == recorded["reference"]
    (entry,) = await admin.ledger("on-registrar-births", key_prefix=prefix)
    assert entry["replays"] == 1


async def test_reject_and_review_rules(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    await admin.set_faults(
        "on-registrar-births",
        reject_when={
            "field": "child.surname",
            "equals": "Rejected",
            "code": "name_invalid",
            "message": MESSAGE,
        },
        review_when={"field": "child.surname", "equals": "Review"},
    )
    rejected = await post(http, "on-registrar-births", f"{prefix}r", {"child": {"surname": "Rejected"}})
    review = await post(http, "on-registrar-births", f"{prefix}v", {"child": {"surname": "Review"}})
    fine = await post(http, "on-registrar-births", f"{prefix}f", {"child": {"surname": "Other"}})
    number = await post(http, "on-registrar-births", f"{prefix}n", {"child": {"surname": 1}})

    assert rejected.status_code == 422
    assert rejected.json() == {"code": "name_invalid", "message": MESSAGE}
    assert review.status_code == 409
    assert review.json()["code"] == "needs_review"
    assert review.json()["message"]["fr"]
    assert fine.status_code == 201
    assert number.status_code == 201
    keys = [e["idempotency_key"] for e in await admin.ledger("on-registrar-births", key_prefix=prefix)]
    assert keys == [f"{prefix}f", f"{prefix}n"], "refused requests record nothing"


async def test_rate_limit_answers_429_with_retry_after(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    await admin.set_faults("esdc-sin", rate_limit_per_s=0.5)
    first = await post(http, "esdc-sin", f"{prefix}1")
    second = await post(http, "esdc-sin", f"{prefix}2")
    assert first.status_code == 201
    assert second.status_code == 429
    assert second.json()["code"] == "rate_limited"
    assert second.headers["Retry-After"] == "2"


async def test_key_prefix_scopes_faults(
    http: httpx.AsyncClient, admin: SandboxAdmin, prefix: str, clean_faults: None
) -> None:
    await admin.set_faults("cra-aba", down=True, key_prefix=f"{prefix}mine")
    assert (await post(http, "cra-aba", f"{prefix}mine-1")).status_code == 503
    assert (await post(http, "cra-aba", f"{prefix}theirs-1")).status_code == 201
    assert [e["idempotency_key"] for e in await admin.ledger("cra-aba", key_prefix=prefix)] == [
        f"{prefix}theirs-1"
    ]


async def test_no_field_values_in_the_sandbox_log(
    http: httpx.AsyncClient, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    marker = f"Zyx{uuid.uuid4().hex[:8]}"
    await post(http, "cra-aba", f"{prefix}log", {"child": {"surname": marker}})
    logs = list(tmp_path_factory.getbasetemp().glob("sandbox*/sandbox.log"))
    assert logs, "the sandbox fixture writes its log under the session's temporary directory"
    await asyncio.sleep(0.2)
    assert marker not in logs[0].read_text()
    assert "sandbox.submitted" in logs[0].read_text()
