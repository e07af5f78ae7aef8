"""Ontario's 5-in-1 newborn bundle end to end on real servers.

Temporal dev server, the legacy sandbox as its own process, the real adapters and the HTTP API.
Every assertion about what a legacy system received reads the sandbox's ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.events import KafkaEventPublisher, decode_event
from activities.notices import deliver_notice
from adapters.registry import KNOWN_ADAPTERS, build_adapters
from bundles.catalogue import Catalogue
from bundles.notices import BirthNotice
from infra.api import create_app
from infra.intake import Intake
from infra.notices_cli import hospital_notice
from infra.sandbox.client import SandboxAdmin
from infra.settings import Settings
from infra.worker import build_workers, start_reply_collectors
from tests.conftest import SandboxProcess
from tests.integration.streams_support import reply_streams
from tests.workflow.support import assert_replays
from workflows.bundle import BundleWorkflow
from workflows.models import BundleEvent, DecisionAction, StepDecision
from workflows.names import reply_collector_id

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples" / "newborn-on"
SYSTEMS = ("on-registrar-births", "on-certificates", "esdc-sin", "cra-aba", "resp-referral")
FINAL = {"completed", "completed_with_exceptions", "failed", "withdrawn"}
BATCH_POLL = timedelta(milliseconds=500)
"""How often the test stack's collector reads ESDC's reply files (the sandbox answers every second)."""


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())["submission"]
    return data


@dataclass
class Stack:
    """One test's view of the running servers: its own task queues, API client and sandbox admin."""

    client: Client
    api: httpx.AsyncClient
    sandbox: SandboxAdmin
    prefix: str
    settings: Settings

    async def submit(
        self,
        submission: dict[str, Any],
        *,
        hospital_notice: bool = True,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Submit through the API; the hospital's matching notice follows unless told otherwise."""
        response = await self.api.post(
            "/api/v1/bundles/newborn-on/submissions", json=submission, headers=headers
        )
        assert response.status_code == 202, response.text
        answer: dict[str, Any] = response.json()
        if hospital_notice:
            await deliver_notice(
                self.client, notice_for(submission, answer["tracking_id"]), settings=self.settings
            )
        return answer

    async def status(self, accepted: dict[str, Any]) -> dict[str, Any]:
        status = await self.poll(accepted)
        assert status is not None, "status unavailable"
        return status

    async def poll(self, accepted: dict[str, Any]) -> dict[str, Any] | None:
        """The status, or None while no worker answers its query (the API's honest 503)."""
        response = await self.api.get(
            accepted["status_url"], headers={"X-Access-Code": accepted["access_code"]}
        )
        if response.status_code == 503:
            return None
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    async def wait(
        self, accepted: dict[str, Any], predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        status: dict[str, Any] | None = None
        while True:
            # While a killed worker's successor starts, the status query times out: poll on.
            status = await self.poll(accepted) or status
            if status is not None and predicate(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"condition not met in {timeout}s: {json.dumps(status, indent=1)}")
            await asyncio.sleep(0.2)

    async def final(self, accepted: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        return await self.wait(accepted, lambda s: s["state"] in FINAL, timeout)

    async def ledgers(self, tracking_id: str) -> dict[str, list[dict[str, Any]]]:
        return {s: await self.sandbox.ledger(s, key_prefix=f"{tracking_id}:") for s in SYSTEMS}


async def wait_visible(client: Client, query: str, budget: float = 20) -> None:
    """Visibility lags the workflow: poll the list query until it finds exactly one bundle."""
    deadline = asyncio.get_running_loop().time() + budget
    while (await client.count_workflows(query)).count != 1:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"no bundle matched {query!r} within {budget}s")
        await asyncio.sleep(0.25)


def notice_for(submission: dict[str, Any], tracking_id: str) -> BirthNotice:
    """The Notice of Live Birth a hospital would send for this statement's birth."""
    return BirthNotice.model_validate(hospital_notice(submission, notice_id=f"NLB-{tracking_id[:8].upper()}"))


def steps(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in status["steps"]}


def step_states(status: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["state"] for s in status["steps"]}


@asynccontextmanager
async def stack_for(
    env: WorkflowEnvironment, sandbox_process: SandboxProcess | str, kafka_port: int, *, workers: bool = True
) -> AsyncIterator[Stack]:
    """A stack on the sandbox; given only its URL, batch systems (ESDC's SIN intake) are out of reach."""
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    process = sandbox_process if isinstance(sandbox_process, SandboxProcess) else None
    sandbox_url = process.url if process is not None else str(sandbox_process)
    settings = Settings(
        environment="test",
        temporal_namespace=env.client.namespace,
        task_queue_prefix=prefix,
        sandbox_url=sandbox_url,
        # ESDC's SIN intake exchanges batch files over the sandbox's SFTP server.
        sftp_host="127.0.0.1",
        sftp_port=process.sftp_port if process is not None else None,
        batch_poll_interval=BATCH_POLL,
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        kafka_idempotent_producer=False,
        # Matchers are found by a digest of the facts; every test reuses the examples' facts.
        correlation_secret=prefix,
    )
    intake = Intake(env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    app = create_app(settings, intake=intake)
    async with AsyncExitStack() as stack:
        if workers:
            adapters = build_adapters(settings.model_copy(update={"legacy_systems": {}}))
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
            await start_reply_collectors(env.client, adapters, task_queue_prefix=prefix, interval=BATCH_POLL)
        # Started here, or by the worker processes a test runs: stopped with the stack either way.
        stack.push_async_callback(stop_reply_collector, env.client, prefix)
        api = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tellonce.test")
        )
        sandbox = await stack.enter_async_context(SandboxAdmin(sandbox_url))
        try:
            yield Stack(env.client, api, sandbox, prefix, settings)
        finally:
            for system in SYSTEMS:
                await sandbox.clear_faults(system)


async def stop_reply_collector(client: Client, prefix: str) -> None:
    """End the stack's batch reply collector, if one was started, so it does not poll after the test."""
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(reply_collector_id(prefix, "esdc-sin")).terminate("test over")


@pytest.fixture(scope="module")
async def streams(dev_env: WorkflowEnvironment, kafka_port: int) -> AsyncIterator[None]:
    """`tellonce streams` for CRA's replies: its ABA answers over a message queue, later."""
    async with reply_streams(dev_env.client, f"127.0.0.1:{kafka_port}", ["cra-aba"]):
        yield


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess, kafka_port: int, streams: None
) -> AsyncIterator[Stack]:
    async with stack_for(dev_env, sandbox, kafka_port) as s:
        yield s


async def test_happy_path_five_references_and_one_record_per_system(stack: Stack) -> None:
    accepted = await stack.submit(example("complete"))
    status = await stack.final(accepted)

    assert status["state"] == "completed"
    assert all(s["state"] == "done" and s["reference"] for s in status["steps"])
    assert len({s["reference"] for s in status["steps"]}) == 5
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert {system: len(entries) for system, entries in ledgers.items()} == dict.fromkeys(SYSTEMS, 1)
    # Data minimisation reaches the wire: CRA never receives marital status, and only the
    # health program-free steps... none but registration receives the health number.
    assert "marital" not in json.dumps(ledgers["cra-aba"][0]["fields"])
    for system in ("on-certificates", "esdc-sin", "cra-aba", "resp-referral"):
        assert "health_number" not in json.dumps(ledgers[system][0]["fields"])
    await assert_replays(stack.client.get_workflow_handle(accepted["tracking_id"]))


async def test_transient_faults_then_an_outage_are_retried_to_one_record(stack: Stack) -> None:
    submission = example("complete")
    submission["child"]["given_names"] = "Outage"
    accepted = await stack.submit(submission)
    # The promoter's intake answers at once over REST: its 500s and 503s reach the step directly
    # (ESDC's batch intake would only hold the file until it is up again).
    await stack.sandbox.set_faults("resp-referral", fail_next=3, key_prefix=accepted["tracking_id"])
    resp = (await stack.wait(accepted, lambda s: steps(s)["education_savings_referral"]["attempts"] >= 3))[
        "steps"
    ]
    assert resp
    await stack.sandbox.set_faults("resp-referral", down_for_s=30, key_prefix=accepted["tracking_id"])
    retrying = await stack.wait(
        accepted, lambda s: steps(s)["education_savings_referral"]["state"] == "retrying"
    )
    assert steps(retrying)["education_savings_referral"]["message"]["fr"]

    status = await stack.final(accepted, timeout=120)
    assert status["state"] == "completed"
    assert steps(status)["education_savings_referral"]["attempts"] >= 5
    ledger = await stack.sandbox.ledger("resp-referral", key_prefix=f"{accepted['tracking_id']}:")
    assert len(ledger) == 1


async def test_refused_registration_cancels_the_certificate_and_refunds_it(stack: Stack) -> None:
    submission = example("complete")
    submission["child"]["given_names"] = "Refusé"
    accepted = await stack.submit(submission)
    await stack.sandbox.set_faults(
        "on-registrar-births",
        key_prefix=accepted["tracking_id"],
        reject_when={
            "field": "child.given_names",
            "equals": "Refusé",
            "code": "nolb_mismatch",
            "message": {
                "en": "The hospital's notice does not match.",
                "fr": "L'avis de l'hôpital ne correspond pas.",
            },
        },
    )
    status = await stack.final(accepted)

    assert status["state"] == "failed"
    assert step_states(status) == {
        "birth_registration": "rejected",
        "birth_certificate": "compensated",
        "social_insurance_number": "skipped",
        "canada_child_benefit": "skipped",
        "education_savings_referral": "skipped",
    }
    assert steps(status)["birth_registration"]["message"]["fr"] == "L'avis de l'hôpital ne correspond pas."
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert [e["operation"] for e in ledgers["on-certificates"]] == ["submit", "cancel"]
    assert not ledgers["esdc-sin"] and not ledgers["cra-aba"] and not ledgers["resp-referral"]
    # Two long-form copies at $35: charged once, refunded once.
    assert [e["amount_cents"] for e in ledgers["on-certificates"]] == [7000, -7000]


async def test_refusal_after_the_pivot_parks_and_earlier_steps_stand(stack: Stack) -> None:
    submission = example("complete")
    submission["child"]["given_names"] = "Parked"
    accepted = await stack.submit(submission)
    await stack.sandbox.set_faults(
        "cra-aba",
        key_prefix=accepted["tracking_id"],
        reject_when={
            "field": "child_given_name",
            "equals": "PARKED",
            "code": "aba_refused",
            "message": {"en": "CRA refused.", "fr": "L'ARC a refusé."},
        },
    )
    status = await stack.wait(
        accepted,
        lambda s: s["state"] == "needs_attention" and steps(s)["social_insurance_number"]["state"] == "done",
    )
    assert steps(status)["canada_child_benefit"]["state"] == "needs_attention"
    assert steps(status)["birth_registration"]["state"] == "done"
    # Operators (and `temporal workflow list`) find it through search attributes.
    await wait_visible(
        stack.client,
        f"WorkflowId = '{accepted['tracking_id']}' AND TellonceState = 'needs_attention' "
        "AND TellonceAttentionSteps = 'canada_child_benefit' AND TellonceBundleId = 'newborn-on' "
        "AND TellonceJurisdiction = 'CA-ON'",
    )

    handle = stack.client.get_workflow_handle(accepted["tracking_id"])
    await handle.execute_update(
        BundleWorkflow.decide,
        StepDecision(
            step_id="canada_child_benefit", action=DecisionAction.SKIP, actor="ops", reason="RC66 instead"
        ),
    )
    final = await stack.final(accepted)
    assert final["state"] == "completed_with_exceptions"
    await wait_visible(
        stack.client,
        f"WorkflowId = '{accepted['tracking_id']}' AND TellonceState = 'completed_with_exceptions'",
    )
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert not ledgers["cra-aba"]
    assert len(ledgers["on-registrar-births"]) == len(ledgers["esdc-sin"]) == 1
    assert all(e["operation"] == "submit" for e in ledgers["on-certificates"])


async def test_no_ccb_consent_sends_nothing_to_cra(stack: Stack) -> None:
    accepted = await stack.submit(example("no-consents"))
    status = await stack.final(accepted)

    ccb = steps(status)["canada_child_benefit"]
    assert ccb["state"] == "skipped"
    assert "RC66" in ccb["message"]["en"] or "My Account" in ccb["message"]["en"]
    assert status["state"] == "completed"
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert len(ledgers["on-registrar-births"]) == 1
    assert not ledgers["cra-aba"] and not ledgers["esdc-sin"] and not ledgers["resp-referral"]


async def test_withdrawal_mid_flight(stack: Stack) -> None:
    submission = example("complete")
    submission["child"]["given_names"] = "Withdrawn"
    accepted = await stack.submit(submission)
    await stack.sandbox.set_faults(
        "on-registrar-births",
        key_prefix=accepted["tracking_id"],
        review_when={
            "field": "child.given_names",
            "equals": "Withdrawn",
            "code": "nolb_review",
            "message": {"en": "Under review.", "fr": "En cours d'examen."},
        },
    )
    await stack.wait(
        accepted,
        lambda s: (
            steps(s)["birth_registration"]["state"] == "needs_attention"
            and steps(s)["birth_certificate"]["state"] == "done"
        ),
    )
    headers = {"X-Access-Code": accepted["access_code"]}
    wrong = await stack.api.post(
        f"{accepted['status_url']}/withdraw", headers={"X-Access-Code": "AAAA-AAAA-AAAA-AAAA"}
    )
    assert wrong.status_code == 404
    response = await stack.api.post(f"{accepted['status_url']}/withdraw", headers=headers)
    assert response.status_code == 202, response.text
    status = await stack.final(accepted)

    assert status["state"] == "withdrawn"
    assert steps(status)["birth_certificate"]["state"] == "compensated"
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert [e["operation"] for e in ledgers["on-certificates"]] == ["submit", "cancel"]
    assert not ledgers["on-registrar-births"] and not ledgers["esdc-sin"] and not ledgers["cra-aba"]
    # A withdrawal retried after a lost answer gets the same answer, not an error.
    again = await stack.api.post(f"{accepted['status_url']}/withdraw", headers=headers)
    assert again.status_code == 202
    assert again.json() == response.json()


async def test_attention_resolved_by_amend_and_by_skip(stack: Stack) -> None:
    submission = example("complete")
    submission["child"]["given_names"] = "Amelie"
    accepted = await stack.submit(submission)
    review = {"code": "name_mismatch", "message": {"en": "Name differs.", "fr": "Le nom diffère."}}
    await stack.sandbox.set_faults(
        "esdc-sin",
        key_prefix=accepted["tracking_id"],
        review_when={"field": "child.first_name", "equals": "Amelie", **review},
    )
    await stack.sandbox.set_faults(
        "resp-referral",
        key_prefix=accepted["tracking_id"],
        review_when={"field": "contact.email", "equals": submission["birth_parent"]["email"], **review},
    )
    await stack.wait(
        accepted,
        lambda s: (
            steps(s)["social_insurance_number"]["state"] == "needs_attention"
            and steps(s)["education_savings_referral"]["state"] == "needs_attention"
        ),
    )
    handle = stack.client.get_workflow_handle(accepted["tracking_id"])
    await handle.execute_update(
        BundleWorkflow.decide,
        StepDecision(
            step_id="social_insurance_number",
            action=DecisionAction.AMEND,
            actor="ops",
            reason="registry spells it Amélie",
            amended_fields={"child": {"given_names": "Amélie"}},
        ),
    )
    await handle.execute_update(
        BundleWorkflow.decide,
        StepDecision(
            step_id="education_savings_referral",
            action=DecisionAction.SKIP,
            actor="ops",
            reason="promoter closed",
        ),
    )
    status = await stack.final(accepted)

    assert status["state"] == "completed_with_exceptions"
    assert steps(status)["social_insurance_number"]["state"] == "done"
    assert steps(status)["education_savings_referral"]["state"] == "skipped"
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert len(ledgers["esdc-sin"]) == 1
    assert "Amélie" in json.dumps(ledgers["esdc-sin"][0]["fields"], ensure_ascii=False)
    assert not ledgers["resp-referral"]
    await assert_replays(handle)


async def test_same_submission_twice_is_one_bundle(stack: Stack) -> None:
    submission = example("complete")
    key = f"test-{uuid.uuid4()}"
    first, second = await asyncio.gather(
        stack.submit(submission, headers={"Idempotency-Key": key}),
        stack.submit(submission, headers={"Idempotency-Key": key}),
    )
    assert first == second
    await stack.final(first)
    after_completion = await stack.submit(submission, headers={"Idempotency-Key": key})
    assert after_completion == first

    other = copy.deepcopy(submission)
    other["child"]["given_names"] = "Someone"
    conflict = await stack.api.post(
        "/api/v1/bundles/newborn-on/submissions", json=other, headers={"Idempotency-Key": key}
    )
    assert conflict.status_code == 409
    ledgers = await stack.ledgers(first["tracking_id"])
    assert all(len(entries) == 1 for entries in ledgers.values())


async def test_status_needs_the_access_code(stack: Stack) -> None:
    accepted = await stack.submit(example("no-consents"))
    url = accepted["status_url"]
    for headers in ({}, {"X-Access-Code": "WRONG-CODE"}):
        response = await stack.api.get(url, headers=headers)
        assert response.status_code == 404
    unknown = await stack.api.get(
        f"/api/v1/submissions/{uuid.uuid4()}", headers={"X-Access-Code": accepted["access_code"]}
    )
    assert unknown.status_code == 404
    assert response.json() == unknown.json()
    await stack.final(accepted)
    late = await stack.api.post(f"{url}/withdraw", headers={"X-Access-Code": accepted["access_code"]})
    assert late.status_code == 409
    assert late.headers["content-type"].startswith("application/problem+json")


async def test_invalid_submission_is_refused_with_bilingual_field_errors(stack: Stack) -> None:
    response = await stack.api.post("/api/v1/bundles/newborn-on/submissions", json=example("bad-data"))
    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422
    assert problem["errors"]
    assert all(e["path"] and e["message"]["en"] and e["message"]["fr"] for e in problem["errors"])
    assert "123 456 789" not in response.text


def personal_values(submission: dict[str, Any]) -> set[str]:
    """Every personal value of a newborn submission, and the digit-only form of the numbers."""
    parent, child = submission["birth_parent"], submission["child"]
    address = parent["mailing_address"]
    values = {
        parent["sin"],
        parent["sin"].replace(" ", ""),
        parent["health_number"],
        parent["health_number"].replace("-", "")[:10],
        parent["given_names"],
        parent["surname"],
        parent["date_of_birth"],
        parent["email"],
        address["street"],
        address["postal_code"],
        child["given_names"],
        child["surname"],
        child["date_of_birth"],
    }
    return {v for v in values if v}


def assert_logs_free_of_personal_data(logs: list[Path], submission: dict[str, Any], tracking_id: str) -> None:
    lines = [line for log in logs for line in log.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    step_events = [e for e in events if e.get("bundle") == tracking_id]
    assert step_events, "the worker logged nothing about the bundle"
    assert all(
        {"step", "attempt", "system"} <= e.keys() for e in step_events if e["event"].startswith("step.")
    )
    text = "\n".join(lines)
    leaked = sorted(v for v in personal_values(submission) if v in text)
    assert not leaked, f"personal data in worker logs: {leaked}"


async def test_worker_killed_mid_bundle_completes_without_duplicates(
    dev_env: WorkflowEnvironment, sandbox: SandboxProcess, kafka_port: int, tmp_path: Path, streams: None
) -> None:
    sandbox_url = sandbox.url
    async with stack_for(dev_env, sandbox, kafka_port, workers=False) as stack:
        env = {
            **os.environ,
            "TELLONCE_ENVIRONMENT": "test",
            "TELLONCE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "TELLONCE_TEMPORAL_NAMESPACE": dev_env.client.namespace,
            "TELLONCE_TASK_QUEUE_PREFIX": stack.prefix,
            "TELLONCE_SANDBOX_URL": sandbox_url,
            "TELLONCE_SFTP_HOST": "127.0.0.1",
            "TELLONCE_SFTP_PORT": str(sandbox.sftp_port),
            "TELLONCE_BATCH_POLL_INTERVAL": "PT0.5S",
            "TELLONCE_KAFKA_BOOTSTRAP": stack.settings.kafka_target,
            "TELLONCE_KAFKA_IDEMPOTENT_PRODUCER": "false",
            "TELLONCE_CORRELATION_SECRET": stack.prefix,
            "TELLONCE_LOG_FORMAT": "json",
        }

        def start_worker(name: str) -> subprocess.Popen[bytes]:
            log = (tmp_path / f"{name}.log").open("wb")
            return subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )

        submission = example("complete")
        submission["child"]["given_names"] = "Crash"
        worker = start_worker("worker-1")
        try:
            accepted = await stack.submit(submission)
            # The registry records the request, then takes 3 s to answer: the worker dies in between.
            await stack.sandbox.set_faults(
                "on-registrar-births", latency_ms=3000, key_prefix=accepted["tracking_id"]
            )
            # Up to a minute: a worker process can take over ten seconds to start on a busy machine.
            for _ in range(600):
                if await stack.sandbox.ledger(
                    "on-registrar-births", key_prefix=f"{accepted['tracking_id']}:"
                ):
                    break
                await asyncio.sleep(0.1)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            await stack.sandbox.clear_faults("on-registrar-births")
            worker = start_worker("worker-2")
            status = await stack.final(accepted, timeout=120)
        finally:
            worker.terminate()
            worker.wait(timeout=15)

        assert status["state"] == "completed"
        ledgers = await stack.ledgers(accepted["tracking_id"])
        assert {system: len(entries) for system, entries in ledgers.items()} == dict.fromkeys(SYSTEMS, 1)
        assert ledgers["on-registrar-births"][0]["replays"] >= 1
        assert_logs_free_of_personal_data(
            [tmp_path / "worker-1.log", tmp_path / "worker-2.log"], submission, accepted["tracking_id"]
        )
        assert steps(status)["birth_registration"]["attempts"] == 2
        await assert_replays(stack.client.get_workflow_handle(accepted["tracking_id"]))


async def test_malformed_and_oversized_bodies_are_refused(stack: Stack) -> None:
    url = "/api/v1/bundles/newborn-on/submissions"
    deep = await stack.api.post(url, content=b"[" * 5000, headers={"content-type": "application/json"})
    assert deep.status_code == 400

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b" " * 1024

    # Streamed without a Content-Length: the limit must hold anyway.
    big = await stack.api.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert big.status_code == 413
    assert big.json()["detail"]["fr"]


async def bundle_events(settings: Settings, tracking_id: str, until_state: str) -> list[BundleEvent]:
    """This bundle's events from the topic, as a consumer sees them (read from the beginning)."""
    consumer = AIOKafkaConsumer(
        settings.kafka_topic_bundle_events,
        bootstrap_servers=settings.kafka_target,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[BundleEvent] = []
    try:
        async with asyncio.timeout(30):
            while not any(
                e.data.bundle_state.value == until_state and e.data.step_id is None for e in events
            ):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    events += [decode_event(r) for r in records if r.key == tracking_id.encode()]
    finally:
        await consumer.stop()
    return events


async def test_status_events_arrive_in_order_and_agree_with_the_final_status(stack: Stack) -> None:
    accepted = await stack.submit(example("complete"))
    status = await stack.final(accepted)
    events = await bundle_events(stack.settings, accepted["tracking_id"], status["state"])

    # At-least-once: a consumer drops repeats by id; what is left is numbered 1..n without gaps.
    unique = list({e.id: e for e in events}.values())
    assert [e.data.sequence for e in unique] == list(range(1, len(unique) + 1))
    assert unique[-1].data.bundle_state.value == status["state"] == "completed"
    last_per_step = {e.data.step_id: e for e in unique if e.data.step_id}
    for step_status in status["steps"]:
        event = last_per_step[step_status["id"]]
        assert event.data.step_state is not None
        assert (event.data.step_state.value, event.data.reference) == (
            step_status["state"],
            step_status["reference"],
        )
    registration = [e.data.step_state for e in unique if e.data.step_id == "birth_registration"]
    assert [s.value for s in registration if s is not None] == ["pending", "waiting_reply", "running", "done"]
    published = json.dumps([e.data.model_dump(mode="json") for e in unique], ensure_ascii=False)
    assert not [v for v in personal_values(example("complete")) if v in published]
