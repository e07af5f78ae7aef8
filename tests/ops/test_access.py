"""The operations API and `tellonce ops` on a real Temporal dev server, with the local issuer.

One bundle waits for an operator (the SIN system asked about a name). Viewers list and read it
without its data and are refused actions (each refusal audited); operators view its data
(audited) and retry it; supervisors export and verify the audit trail, which a new app on the
same data directory still holds. The Temporal UI's codec endpoint decodes the bundle's real
encrypted input for an operator only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

import infra.cli
from adapters.registry import KNOWN_ADAPTERS
from adapters.sdk import NeedsAttentionError
from bundles.catalogue import Catalogue
from infra.api import create_app
from infra.cli import app as cli_app
from infra.intake import Intake
from infra.ops.auth import LocalIssuer, Role
from infra.settings import Settings
from tests.encryption import TEST_KEYRING_JSON
from tests.workflow.support import (
    REFUSED,
    SYSTEMS,
    Handle,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    step,
    wait_for,
)
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, StepState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

API = "http://tellonce.test"


@dataclass
class OpsStack:
    handle: Handle
    tracking_id: str
    settings: Settings
    app: FastAPI
    api: httpx.AsyncClient
    issuer: LocalIssuer

    def token(self, role: Role, subject: str | None = None) -> str:
        return self.issuer.mint(subject or f"{role.value}-1", role, timedelta(minutes=10))

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    async def audit(self) -> list[dict[str, Any]]:
        answer = await self.api.get("/api/v1/ops/audit", headers=self.auth(Role.SUPERVISOR))
        assert answer.status_code == 200, answer.text
        return [json.loads(line) for line in answer.text.splitlines()]


def make_app(settings: Settings, env: WorkflowEnvironment) -> FastAPI:
    intake = Intake(env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    return create_app(settings, intake=intake)


@pytest.fixture
async def ops(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[OpsStack]:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["sin"].script["submit"] = [NeedsAttentionError("name_mismatch", REFUSED)]
    settings = Settings(
        environment="test",
        data_dir=tmp_path / "data",
        api_url=API,
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=prefix,
        encryption_keys=TEST_KEYRING_JSON,
        # The scripted systems of the workflow tests' bundle, known to the API by configuration.
        legacy_systems={system: {} for system in SYSTEMS},
    )
    async with running_workers(dev_env.client, adapters, prefix, search_attributes=True):
        handle = await start_bundle(dev_env.client, plan(), prefix, search_attributes=True)
        await wait_for(handle, lambda s: step(s, "sin").state is StepState.NEEDS_ATTENTION)
        app = make_app(settings, dev_env)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as api:
            yield OpsStack(handle, handle.id, settings, app, api, LocalIssuer.for_settings(settings))


async def poll(fetch: Callable[[], Any], predicate: Callable[[Any], bool], budget: float = 20) -> Any:
    """Visibility lags the workflow by up to seconds: ask again until the answer holds."""
    deadline = asyncio.get_running_loop().time() + budget
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"never true; last answer: {value}")
        await asyncio.sleep(0.25)


async def test_viewer_reads_without_personal_data_and_is_refused_actions_on_the_record(ops: OpsStack) -> None:
    viewer = ops.auth(Role.VIEWER)

    async def stuck() -> list[dict[str, Any]]:
        answer = await ops.api.get("/api/v1/ops/stuck", params={"reason": "needs_attention"}, headers=viewer)
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    listed = await poll(stuck, lambda found: any(b["tracking_id"] == ops.tracking_id for b in found))
    assert next(b for b in listed if b["tracking_id"] == ops.tracking_id)["attention_steps"] == ["sin"]

    timeline = (await ops.api.get(f"/api/v1/ops/bundles/{ops.tracking_id}", headers=viewer)).json()
    assert timeline["state"] == "needs_attention"
    assert all(s["payload"] is None for s in timeline["steps"])
    assert "Bélanger" not in json.dumps(timeline)

    personal = await ops.api.get(
        f"/api/v1/ops/bundles/{ops.tracking_id}", params={"include_personal": True}, headers=viewer
    )
    retry = await ops.api.post(
        f"/api/v1/ops/bundles/{ops.tracking_id}/actions",
        json={"action": "retry", "step_id": "sin", "reason": "name fixed at ESDC"},
        headers=viewer,
    )
    pause = await ops.api.post(
        "/api/v1/ops/systems/esdc-sin/pause", json={"reason": "outage"}, headers=viewer
    )
    anonymous = await ops.api.get("/api/v1/ops/stuck")
    assert [personal.status_code, retry.status_code, pause.status_code, anonymous.status_code] == [
        403,
        403,
        403,
        401,
    ]
    assert retry.json()["detail"]["en"] == "your role viewer cannot retry; an operator can"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await ops.handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION

    denied = [e for e in await ops.audit() if e["outcome"] == "denied"]
    assert [(e["subject"], e["role"], e["action"], e["bundle"], e["step"], e["reason"]) for e in denied] == [
        ("viewer-1", "viewer", "view.personal_data", ops.tracking_id, None, None),
        ("viewer-1", "viewer", "retry", ops.tracking_id, "sin", "name fixed at ESDC"),
        ("viewer-1", "viewer", "pause", None, None, "outage"),
    ]


async def test_operator_views_data_audited_but_bulk_and_pause_need_a_supervisor(ops: OpsStack) -> None:
    operator = ops.auth(Role.OPERATOR)
    personal = await ops.api.get(
        f"/api/v1/ops/bundles/{ops.tracking_id}", params={"include_personal": True}, headers=operator
    )
    assert personal.status_code == 200
    assert step_payload(personal.json(), "sin")["child"]["name"] == "Zoë-Chloé O'Neil"

    body = {"action": "retry", "filter": {"system": "sin"}, "reason": "after the outage"}
    bulk = await ops.api.post("/api/v1/ops/bulk", json={**body, "dry_run": False}, headers=operator)
    pause = await ops.api.post("/api/v1/ops/systems/sin/pause", json={"reason": "x"}, headers=operator)
    assert (bulk.status_code, pause.status_code) == (403, 403)

    async def dry_run() -> dict[str, Any]:
        answer = await ops.api.post("/api/v1/ops/bulk", json={**body, "dry_run": True}, headers=operator)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    report = await poll(dry_run, lambda r: len(r["targets"]) >= 1)
    assert [(t["tracking_id"], t["step_id"]) for t in report["targets"]] == [(ops.tracking_id, "sin")]
    assert (await ops.handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION

    entries = await ops.audit()
    views = [e for e in entries if e["action"] == "view.personal_data" and e["outcome"] == "accepted"]
    assert [(e["subject"], e["bundle"]) for e in views] == [("operator-1", ops.tracking_id)]
    assert "Zoë" not in json.dumps(entries)
    assert {e["action"] for e in entries if e["outcome"] == "denied"} == {"bulk.retry", "pause"}


async def test_a_sin_typed_into_a_reason_reaches_neither_the_workflow_nor_a_viewer(ops: OpsStack) -> None:
    typed = "caller read out SIN 046 454 286, name fixed at ESDC"
    answer = await ops.api.post(
        f"/api/v1/ops/bundles/{ops.tracking_id}/actions",
        json={"action": "retry", "step_id": "sin", "reason": typed},
        headers=ops.auth(Role.OPERATOR),
    )
    assert answer.status_code == 200 and answer.json()["accepted"] is True, answer.text

    (decision,) = (await ops.handle.query(BundleWorkflow.status)).actions
    assert decision.reason == "caller read out SIN [redacted:sin], name fixed at ESDC"
    timeline = await ops.api.get(f"/api/v1/ops/bundles/{ops.tracking_id}", headers=ops.auth(Role.VIEWER))
    assert [d["reason"] for d in timeline.json()["decisions"]] == [decision.reason]
    assert "454" not in timeline.text


def step_payload(timeline: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in timeline["steps"] if s["status"]["id"] == step_id)["payload"]
    return found


class SameLoopTransport(httpx.BaseTransport):
    """Lets the synchronous CLI, run in a thread, call the app on the test's event loop (where its
    Temporal client lives)."""

    def __init__(self, app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def forward() -> httpx.Response:
            copied = httpx.Request(
                request.method, request.url, headers=request.headers, content=request.read()
            )
            answer = await self.inner.handle_async_request(copied)
            return httpx.Response(answer.status_code, headers=answer.headers, content=await answer.aread())

        return asyncio.run_coroutine_threadsafe(forward(), self.loop).result(timeout=60)


async def test_the_cli_lists_shows_and_retries_then_the_trail_survives_a_new_app(
    ops: OpsStack, dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(
        infra.cli,
        "http_client",
        lambda url: httpx.Client(base_url=url, transport=SameLoopTransport(ops.app, loop)),
    )
    runner = CliRunner()

    async def ops_cli(*args: str, role: Role = Role.OPERATOR) -> Any:
        env = {"TELLONCE_TOKEN": ops.token(role, "ops-cli"), "TELLONCE_API_URL": API, "COLUMNS": "200"}
        return await asyncio.to_thread(runner.invoke, cli_app, ["ops", *args], env=env)

    async def stuck() -> Any:
        return await ops_cli("stuck", "--system", "sin", "--json", role=Role.VIEWER)

    listed = await poll(stuck, lambda r: r.exit_code == 0 and ops.tracking_id in r.stdout)
    assert [b["tracking_id"] for b in json.loads(listed.stdout)] == [ops.tracking_id]

    shown = await ops_cli("show", ops.tracking_id, role=Role.VIEWER)
    assert shown.exit_code == 0, shown.output
    assert "needs_attention" in shown.stdout
    assert "name_mismatch" in shown.stdout

    refused = await ops_cli("retry", ops.tracking_id, "--step", "sin", "--reason", "try", role=Role.VIEWER)
    assert refused.exit_code == 1
    assert "your role viewer cannot retry; an operator can" in refused.output

    retried = await ops_cli("retry", ops.tracking_id, "--step", "sin", "--reason", "ESDC corrected the name")
    assert retried.exit_code == 0, retried.output
    assert "retry accepted" in retried.stdout
    final = await ops.handle.result()
    assert final.state is BundleState.COMPLETED

    # A new app (as after a restart) on the same data directory: same trail, same issuer key.
    later = make_app(ops.settings, dev_env)
    monkeypatch.setattr(
        infra.cli,
        "http_client",
        lambda url: httpx.Client(base_url=url, transport=SameLoopTransport(later, loop)),
    )
    exported = await ops_cli("audit", "export", role=Role.SUPERVISOR)
    assert exported.exit_code == 0, exported.output
    entries = [json.loads(line) for line in exported.stdout.splitlines()]
    acted = [
        (e["subject"], e["action"], e["outcome"], e["step"])
        for e in entries
        if e["bundle"] == ops.tracking_id
    ]
    assert ("ops-cli", "retry", "denied", "sin") in acted
    assert ("ops-cli", "retry", "accepted", "sin") in acted
    accepted = next(e for e in entries if e["action"] == "retry" and e["outcome"] == "accepted")
    assert (accepted["before"], accepted["reason"]) == (
        {"state": "needs_attention"},
        "ESDC corrected the name",
    )
    verified = await ops_cli("audit", "verify", role=Role.SUPERVISOR)
    assert verified.exit_code == 0, verified.output
    assert f"{len(entries)} entries" in verified.stdout or "intact" in verified.stdout


async def test_the_codec_endpoint_decodes_a_real_history_payload_for_operators_only(ops: OpsStack) -> None:
    history = await ops.handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == b"binary/encrypted"
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in started.metadata.items()},
                "data": base64.b64encode(started.data).decode(),
            }
        ]
    }
    headers = {"X-Namespace": ops.settings.temporal_namespace, "Content-Type": "application/json"}

    anonymous = await ops.api.post("/api/v1/ops/codec/decode", json=body, headers=headers)
    viewer = await ops.api.post(
        "/api/v1/ops/codec/decode", json=body, headers={**headers, **ops.auth(Role.VIEWER)}
    )
    assert (anonymous.status_code, viewer.status_code) == (401, 403)

    decoded = await ops.api.post(
        "/api/v1/ops/codec/decode", json=body, headers={**headers, **ops.auth(Role.OPERATOR)}
    )
    assert decoded.status_code == 200, decoded.text
    (payload,) = decoded.json()["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(payload["data"]))["submission_id"] == ops.tracking_id
    assert decoded.headers["Cache-Control"] == "no-store"

    # The cookie a pasted token becomes serves the Temporal UI, which sends no Authorization.
    form = await ops.api.get("/api/v1/ops/codec/session")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf, form.text
    session = await ops.api.post(
        "/api/v1/ops/codec/session",
        data={"token": ops.token(Role.OPERATOR, "ui-user"), "csrf_token": csrf.group(1)},
    )
    assert session.status_code == 200
    assert "HttpOnly" in session.headers["set-cookie"]
    assert "SameSite=strict" in session.headers["set-cookie"]
    by_cookie = await ops.api.post("/api/v1/ops/codec/decode", json=body, headers=headers)
    assert by_cookie.status_code == 200

    ui = f"http://127.0.0.1:{ops.settings.port('temporal-ui')}"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-namespace,content-type",
    }
    allowed = await ops.api.options("/api/v1/ops/codec/decode", headers={"Origin": ui, **preflight})
    foreign = await ops.api.options(
        "/api/v1/ops/codec/decode", headers={"Origin": "https://evil.example", **preflight}
    )
    assert allowed.headers.get("access-control-allow-origin") == ui
    assert allowed.headers.get("access-control-allow-credentials") == "true"
    assert "access-control-allow-origin" not in foreign.headers

    entries = await ops.audit()
    codec = [
        (e["subject"], e["action"], e["outcome"])
        for e in entries
        if e["action"].startswith(("codec", "view"))
    ]
    assert codec == [
        ("viewer-1", "codec.decode", "denied"),
        ("operator-1", "view.personal_data", "accepted"),
        ("ui-user", "codec.session", "accepted"),
        ("ui-user", "view.personal_data", "accepted"),
    ]


async def test_supervisor_pauses_and_resumes_a_known_system_only(ops: OpsStack) -> None:
    supervisor = ops.auth(Role.SUPERVISOR)
    paused = await ops.api.post(
        "/api/v1/ops/systems/sin/pause", json={"reason": "planned outage"}, headers=supervisor
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    again = await ops.api.post("/api/v1/ops/systems/sin/pause", json={"reason": "twice"}, headers=supervisor)
    assert again.status_code == 409
    resumed = await ops.api.post("/api/v1/ops/systems/sin/resume", json={"rate_per_s": 2}, headers=supervisor)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False
    unknown = await ops.api.post(
        "/api/v1/ops/systems/no-such-system/pause", json={"reason": "x"}, headers=supervisor
    )
    assert unknown.status_code == 404

    control = [(e["action"], e["outcome"], e["system"]) for e in await ops.audit() if e["system"]]
    assert control == [
        ("pause", "accepted", "sin"),
        ("pause", "failed", "sin"),
        ("resume", "accepted", "sin"),
    ]
