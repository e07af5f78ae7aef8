"""Ontario's change of address end to end on real servers.

Temporal dev server, the legacy sandbox process, the real adapters and the resident API. What a
system received is read from its ledger; what it holds now from its address book
(`GET /sandbox/systems/{id}`: current address per masked person key, and each change's state).
Each test uses its own synthetic resident (docs/address-change.md), so the shared sandbox's
address books and the identity check's lockout never mix between tests.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.events import KafkaEventPublisher
from adapters.contract_kit import call_context
from adapters.registry import ADAPTER_TYPES, KNOWN_ADAPTERS
from adapters.sdk import RejectedError, StepRequest
from bundles.catalogue import Catalogue
from bundles.plan import resolve_plan
from bundles.submissions import validate_submission
from bundles.validators import toronto_today
from infra.api import create_app
from infra.intake import Intake
from infra.sandbox.client import SandboxAdmin
from infra.worker import build_workers
from tests.conftest import SandboxProcess
from tests.minimisation import leaked_fields
from tests.workflow.support import assert_replays
from workflows.bundle import BundleWorkflow

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples" / "address-change-on"
BUNDLE = "address-change-on"
ADDRESS_SYSTEMS = (
    "cra-address",
    "esdc-address",
    "elections-canada",
    "on-mto",
    "on-health",
    "ottawa-revenue",
    "toronto-revenue",
)
SYSTEMS = ("on-identity", *ADDRESS_SYSTEMS)
FINAL = {"completed", "completed_with_exceptions", "failed", "withdrawn"}


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())["submission"]
    # The examples carry a fixed date; the window is relative to today.
    data["effective_date"] = toronto_today().isoformat()
    return data


def resident(
    label: str, *, old: dict[str, str], new: dict[str, str], effective_in_days: int = 0
) -> dict[str, Any]:
    """A submission for one of the sandbox's synthetic residents, every program consented."""
    people: dict[str, dict[str, Any]] = {
        "future-move": {
            "resident": {
                "given_names": "Jordan",
                "surname": "Whitfield",
                "date_of_birth": "1975-09-30",
                "sin": "271 828 188",
                "health_number": "6123409572",
                "driver_licence_number": "W31056789550930",
            },
            "identity": {
                "document_type": "permanent_resident_card",
                "document_last4": "PA73",
                "old_postal_code": "M4C 1B5",
            },
        },
        "rollback": {
            "resident": {
                "given_names": "Samuel",
                "surname": "Okafor",
                "date_of_birth": "1983-06-05",
                "sin": "161 803 390",
                "health_number": "5088123467",
                "driver_licence_number": "O21004567830605",
            },
            "identity": {
                "document_type": "ontario_photo_card",
                "document_last4": "0356",
                "old_postal_code": "K1Y 4E9",
            },
        },
    }
    return {
        "language": "en",
        "consents": dict.fromkeys(
            (
                "cra_address",
                "service_canada_address",
                "elections_canada",
                "mto_address",
                "ohip_address",
                "municipal_address",
            ),
            True,
        ),
        **people[label],
        "old_address": old,
        "new_address": new,
        "effective_date": (toronto_today() + timedelta(days=effective_in_days)).isoformat(),
    }


@dataclass
class Stack:
    """One test's view of the servers: its own task queues, the intake, the API and the sandbox admin."""

    intake: Intake
    api: httpx.AsyncClient
    sandbox: SandboxAdmin

    async def submit(self, submission: dict[str, Any], submission_id: str | None = None) -> str:
        """Start a bundle; with a chosen id, faults scoped to it can be set before it starts."""
        accepted = await self.intake.submit(
            BUNDLE, submission, channel="api", submission_id=submission_id or str(uuid.uuid4())
        )
        return accepted.tracking_id

    async def status(self, tracking_id: str) -> dict[str, Any]:
        response = await self.api.get(
            f"/api/v1/submissions/{tracking_id}",
            headers={"X-Access-Code": self.intake.access_code(tracking_id)},
        )
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    async def wait(
        self, tracking_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.status(tracking_id)
            if predicate(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"condition not met in {timeout}s: {json.dumps(status, indent=1)}")
            await asyncio.sleep(0.2)

    async def final(self, tracking_id: str) -> dict[str, Any]:
        return await self.wait(tracking_id, lambda s: s["state"] in FINAL)

    async def withdraw(self, tracking_id: str) -> None:
        response = await self.api.post(
            f"/api/v1/submissions/{tracking_id}/withdraw",
            headers={"X-Access-Code": self.intake.access_code(tracking_id)},
        )
        assert response.status_code == 202, response.text

    async def ledgers(self, tracking_id: str) -> dict[str, list[dict[str, Any]]]:
        return {s: await self.sandbox.ledger(s, key_prefix=f"{tracking_id}:") for s in SYSTEMS}

    async def error_codes(self, tracking_id: str) -> dict[str, str | None]:
        """Each step's last error code, as operators see it (the resident API shows messages only)."""
        status = await self.intake.handle(tracking_id).query(BundleWorkflow.status)
        return {s.id: s.last_error.code if s.last_error else None for s in status.steps}


def states(status: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["state"] for s in status["steps"]}


def same_place(held: dict[str, str], submitted: dict[str, str]) -> bool:
    """A system's record of an address names the submitted place (systems differ in case and spacing)."""
    return (
        held["postal_code"] == submitted["postal_code"].replace(" ", "").upper()
        and held["street"].casefold() == submitted["street"].casefold()
    )


async def address_held(sandbox: SandboxAdmin, system: str, reference: str) -> tuple[str, dict[str, str]]:
    """The state of a change and the address the system now holds for its person."""
    book = await sandbox.system(system)
    change = book["changes"][reference]
    return change["state"], book["addresses"][change["person"]]


def no_duplicates(ledgers: dict[str, list[dict[str, Any]]]) -> None:
    for system, entries in ledgers.items():
        keys = [(e["operation"], e["idempotency_key"]) for e in entries]
        assert len(keys) == len(set(keys)), system
        assert all(e["duplicate_of"] is None for e in entries), system


@asynccontextmanager
async def stack_for(env: WorkflowEnvironment, sandbox: SandboxProcess) -> AsyncIterator[Stack]:
    prefix = f"addr-{uuid.uuid4().hex[:8]}"
    settings = sandbox.settings(
        temporal_namespace=env.client.namespace, task_queue_prefix=prefix, correlation_secret=prefix
    )
    intake = Intake(env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    async with AsyncExitStack() as stack:
        # Workers for this bundle's systems only: the newborn's batch and queue systems are not needed.
        adapters = {system: ADAPTER_TYPES[system].from_settings(settings) for system in SYSTEMS}
        for adapter in adapters.values():
            stack.push_async_callback(adapter.aclose)
        publisher = KafkaEventPublisher(settings, idempotent=False)
        stack.push_async_callback(publisher.close)
        for worker in build_workers(
            env.client,
            adapters,
            task_queue_prefix=prefix,
            event_publisher=publisher,
            correlation_secret=prefix.encode(),
        ):
            await stack.enter_async_context(worker)
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(settings, intake=intake)),
                base_url="http://tellonce.test",
            )
        )
        admin = await stack.enter_async_context(SandboxAdmin(sandbox.url))
        yield Stack(intake, api, admin)


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, sandbox: SandboxProcess) -> AsyncIterator[Stack]:
    async with stack_for(dev_env, sandbox) as s:
        yield s


async def test_identity_first_then_every_consented_program_once(stack: Stack) -> None:
    submission = example("complete")
    tracking_id = await stack.submit(submission)
    status = await stack.final(tracking_id)

    assert status["state"] == "completed", status
    assert set(states(status).values()) == {"done"}
    municipality = next(s for s in status["steps"] if s["id"] == "municipality")
    assert "Ottawa" in municipality["organization"]["en"]

    ledgers = await stack.ledgers(tracking_id)
    no_duplicates(ledgers)
    # The new address is Ottawa's: Toronto's revenue services never hear of it.
    assert {system: len(entries) for system, entries in ledgers.items()} == {
        **dict.fromkeys(SYSTEMS, 1),
        "toronto-revenue": 0,
    }
    identity = ledgers["on-identity"][0]
    assert identity["outcome"] == "accepted"
    for system in ADDRESS_SYSTEMS:
        for entry in ledgers[system]:
            # Nothing reached any program before ServiceOntario confirmed who is moving.
            assert entry["received_at"] > identity["received_at"], system
            state, held = await address_held(stack.sandbox, system, entry["reference"])
            assert state == "applied", system
            assert same_place(held, submission["new_address"]), system

    # Data minimisation on the wire: identity answers go to ServiceOntario only, no SIN to the
    # register or the municipality, no birth date to the municipality.
    assert "postal_code" in identity["fields"]
    assert "sin" not in json.dumps(identity["fields"])
    assert not any(identity["fields"].get(k) for k in ("new_address", "previous_address"))
    for system in ADDRESS_SYSTEMS:
        assert "document" not in json.dumps(ledgers[system] and ledgers[system][0]["fields"]), system
    assert "sin" not in ledgers["elections-canada"][0]["fields"]
    municipal = json.dumps(ledgers["ottawa-revenue"][0]["fields"])
    assert "1988-04-12" not in municipal
    assert "135792463" not in municipal
    # And the general proof: no program received a value of a field outside its projection.
    definition = stack.intake.catalogue.get(BUNDLE)
    validated = validate_submission(definition, submission)
    plan = resolve_plan(definition, validated.data, validated.consents)
    assert leaked_fields(plan, validated.data, ledgers) == {}
    await assert_replays(stack.intake.handle(tracking_id))


async def test_a_later_move_waits_where_it_must_and_a_withdrawal_restores_every_address(
    stack: Stack,
) -> None:
    old = {
        "street": "18 Placeholder Avenue",
        "municipality": "Toronto",
        "province": "ON",
        "postal_code": "M4C 1B5",
    }
    new = {
        "street": "400 Fictional Road",
        "unit": "1208",
        "municipality": "Toronto",
        "province": "ON",
        "postal_code": "M5V 2T6",
    }
    submission = resident("future-move", old=old, new=new, effective_in_days=10)
    tracking_id = await stack.submit(submission)
    now_sent = ("cra", "service_canada", "municipality")
    held_back = ("driver_licence", "health_card", "elections_canada")
    status = await stack.wait(tracking_id, lambda s: all(states(s)[step] == "done" for step in now_sent))

    day = submission["effective_date"]
    steps = {s["id"]: s for s in status["steps"]}
    for step in held_back:
        assert steps[step]["state"] == "pending", step
        assert day in steps[step]["message"]["en"], step
        assert day in steps[step]["message"]["fr"], step
    query = await stack.intake.handle(tracking_id).query(BundleWorkflow.status)
    for waiting in query.steps:
        if waiting.id in held_back:
            assert waiting.waiting_for is not None
            assert day in waiting.waiting_for
    assert "Toronto" in steps["municipality"]["organization"]["en"]

    await stack.withdraw(tracking_id)
    status = await stack.final(tracking_id)

    assert status["state"] == "withdrawn"
    assert {step: states(status)[step] for step in (*now_sent, *held_back)} == {
        **dict.fromkeys(now_sent, "compensated"),
        **dict.fromkeys(held_back, "skipped"),
    }
    ledgers = await stack.ledgers(tracking_id)
    no_duplicates(ledgers)
    # The waiting steps never sent anything.
    for system in ("on-mto", "on-health", "elections-canada", "ottawa-revenue"):
        assert ledgers[system] == [], system
    for system in ("cra-address", "esdc-address", "toronto-revenue"):
        submitted, cancelled = ledgers[system]
        assert (submitted["operation"], cancelled["operation"]) == ("submit", "cancel"), system
        assert cancelled["outcome"] == "restored", system
        assert cancelled["reference"] == submitted["reference"], system
        state, held = await address_held(stack.sandbox, system, submitted["reference"])
        assert state == "restored", system
        assert same_place(held, old), system
        # The system's own status of the change says so too.
        request = await stack.sandbox.request(system, submitted["reference"])
        assert request["state"] == "restored", system
        assert "previous address" in request["message"]["en"], system
    await assert_replays(stack.intake.handle(tracking_id))


async def test_wrong_identity_fails_alone_and_three_wrong_tries_lock_the_check(stack: Stack) -> None:
    wrong = example("wrong-identity")
    codes: list[str | None] = []
    for attempt in range(3):
        tracking_id = await stack.submit(wrong)
        status = await stack.final(tracking_id)
        assert status["state"] == "failed"
        identity = next(s for s in status["steps"] if s["id"] == "identity_check")
        assert identity["state"] == "rejected"
        if attempt == 0:
            # ServiceOntario's own words, in both languages: how many tries are left, nothing personal.
            assert "2 attempts left" in identity["message"]["en"]
            assert "il vous reste 2 essais" in identity["message"]["fr"]
            assert "Raman" not in json.dumps(identity["message"])
        codes.append((await stack.error_codes(tracking_id))["identity_check"])
        ledgers = await stack.ledgers(tracking_id)
        assert len(ledgers["on-identity"]) == 1
        # Nothing went anywhere else.
        assert all(ledgers[system] == [] for system in ADDRESS_SYSTEMS)
        assert {s["state"] for s in status["steps"] if s["id"] != "identity_check"} <= {"skipped"}
    assert codes == ["identity_mismatch", "identity_mismatch", "identity_locked"]

    right = example("wrong-identity")
    right["identity"]["document_last4"] = "RK19"
    tracking_id = await stack.submit(right)
    status = await stack.final(tracking_id)
    assert status["state"] == "failed"
    identity = next(s for s in status["steps"] if s["id"] == "identity_check")
    assert "ServiceOntario" in identity["message"]["en"]
    assert "ServiceOntario" in identity["message"]["fr"]
    assert (await stack.error_codes(tracking_id))["identity_check"] == "identity_locked"
    assert all(
        entries == []
        for system, entries in (await stack.ledgers(tracking_id)).items()
        if system != "on-identity"
    )


async def test_a_program_refusing_after_the_identity_check_rolls_every_address_back(stack: Stack) -> None:
    old = {"street": "31 Sample Road", "municipality": "Ottawa", "province": "ON", "postal_code": "K1Y 4E9"}
    new = {"street": "5 Fictive Court", "municipality": "Nepean", "province": "ON", "postal_code": "K2G 1V8"}
    submission = resident("rollback", old=old, new=new)
    tracking_id = str(uuid.uuid4())
    refusal = {"en": "No health card is on file for this number.", "fr": "Aucune carte Santé à ce numéro."}
    await stack.sandbox.set_faults(
        "on-health",
        key_prefix=f"{tracking_id}:",
        # The refusal comes back late, as a slow system's would: the other programs have changed
        # the address by then, so there is something to roll back.
        latency_ms=1500,
        reject_when={
            "field": "health_number",
            "equals": "5088123467",
            "code": "health_card_not_found",
            "message": refusal,
        },
    )
    try:
        await stack.submit(submission, submission_id=tracking_id)
        status = await stack.final(tracking_id)
    finally:
        await stack.sandbox.clear_faults("on-health")

    assert status["state"] == "failed", status
    steps = {s["id"]: s for s in status["steps"]}
    assert steps["identity_check"]["state"] == "done"
    assert steps["health_card"]["state"] == "rejected"
    assert steps["health_card"]["message"] == refusal
    assert "Ottawa" in steps["municipality"]["organization"]["en"]
    ledgers = await stack.ledgers(tracking_id)
    no_duplicates(ledgers)
    assert ledgers["on-health"] == []
    assert ledgers["toronto-revenue"] == []
    restored = 0
    for system in ("cra-address", "esdc-address", "elections-canada", "on-mto", "ottawa-revenue"):
        submitted = [e for e in ledgers[system] if e["operation"] == "submit"]
        cancelled = [e for e in ledgers[system] if e["operation"] == "cancel"]
        # Every change that was made is undone once; a step stopped before it sent made none.
        assert [e["reference"] for e in cancelled] == [e["reference"] for e in submitted], system
        assert all(e["outcome"] == "restored" for e in cancelled), system
        if submitted:
            restored += 1
            assert steps[_step_of(system)]["state"] == "compensated", system
            state, held = await address_held(stack.sandbox, system, submitted[0]["reference"])
            assert state == "restored", system
            assert same_place(held, old), system
        else:
            assert steps[_step_of(system)]["state"] == "skipped", system
    assert restored >= 1, "no address step finished before the refusal: nothing was rolled back"
    await assert_replays(stack.intake.handle(tracking_id))


def _step_of(system: str) -> str:
    return {
        "cra-address": "cra",
        "esdc-address": "service_canada",
        "elections-canada": "elections_canada",
        "on-mto": "driver_licence",
        "on-health": "health_card",
        "ottawa-revenue": "municipality",
        "toronto-revenue": "municipality",
    }[system]


# --- the adapters against the sandbox, without a bundle ----------------------------------------------


async def test_a_retried_identity_request_is_not_another_attempt(sandbox: SandboxProcess) -> None:
    """The same key sent again is answered from the first record: three retries are one attempt."""
    adapter = ADAPTER_TYPES["on-identity"](sandbox.url)  # type: ignore[call-arg]  # a REST adapter takes a URL
    fields = {
        "resident": {"date_of_birth": "1999-12-01", "health_number": "7012456393"},
        "identity": {
            "document_type": "citizenship_certificate",
            "document_last4": "0000",
            "old_postal_code": "K1N 6N5",
        },
    }
    run = uuid.uuid4().hex[:8]
    try:
        for attempt in (1, 2, 3):
            with pytest.raises(RejectedError) as refused:
                await adapter.submit(
                    call_context(f"retry-{run}:identity_check:submit", attempt=attempt),
                    StepRequest(fields=fields),
                )
            assert refused.value.code == "identity_mismatch"
            assert "2 attempts left" in refused.value.message.en
        fields["identity"]["document_last4"] = "9904"
        verified = await adapter.submit(
            call_context(f"retry-{run}:identity_check:r1:submit"), StepRequest(fields=fields)
        )
        assert verified.reference.startswith("ID-")
    finally:
        await adapter.aclose()
    async with SandboxAdmin(sandbox.url) as admin:
        entries = await admin.ledger("on-identity", key_prefix=f"retry-{run}:")
    assert [(e["outcome"], e["replays"]) for e in entries] == [("identity_mismatch", 2), ("accepted", 0)]


async def test_serviceontario_refuses_a_move_that_has_not_happened_yet(sandbox: SandboxProcess) -> None:
    """Why the engine holds the licence and health card steps: their systems refuse a future date."""
    adapters = {system: ADAPTER_TYPES[system].from_settings(sandbox.settings()) for system in ADDRESS_SYSTEMS}
    fields: dict[str, Any] = {
        "language": "en",
        "resident": {
            "given_names": "Test",
            "surname": "Future",
            "date_of_birth": "1970-01-01",
            "health_number": "7012456393",
            "driver_licence_number": "F00000000000001",
        },
        "old_address": {
            "street": "1 Old Way",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "K1A 0A1",
        },
        "new_address": {
            "street": "2 New Way",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "K1A 0A2",
        },
        "effective_date": (toronto_today() + timedelta(days=1)).isoformat(),
    }
    run = uuid.uuid4().hex[:8]
    try:
        for system in ("on-mto", "on-health", "elections-canada"):
            with pytest.raises(RejectedError) as refused:
                await adapters[system].submit(
                    call_context(f"future-{run}:{system}:submit"), StepRequest(fields=fields)
                )
            assert refused.value.code == "future_date_not_accepted", system
            assert refused.value.message.en != refused.value.message.fr
        # CRA takes it up to 6 months ahead; not 7.
        fields["resident"]["sin"] = "046 454 286"
        accepted = await adapters["cra-address"].submit(
            call_context(f"future-{run}:cra:submit"), StepRequest(fields=fields)
        )
        assert accepted.reference.startswith("CRA-ADDR-")
        fields["effective_date"] = (toronto_today() + timedelta(days=215)).isoformat()
        with pytest.raises(RejectedError) as refused:
            await adapters["cra-address"].submit(
                call_context(f"future-{run}:cra-late:submit"), StepRequest(fields=fields)
            )
        assert refused.value.code == "effective_date_out_of_range"
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
