"""The ops console's pages over HTTP, on a real Temporal dev server with the local issuer.

One bundle waits for an operator (the SIN system asked about a name). Signing in needs the CSRF
token and a valid token, and leaves only a sealed cookie; a viewer reads the list and timeline
without the steps' data and is refused data and actions, each refusal in the audit trail; an
operator's view of the data and their retry are audited like the API's.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from adapters.registry import KNOWN_ADAPTERS
from adapters.sdk import NeedsAttentionError
from bundles.catalogue import Catalogue
from infra.api import create_app
from infra.intake import Intake
from infra.ops.audit import AuditTrail
from infra.ops.auth import LocalIssuer, Role
from infra.ops.console import SESSION_COOKIE
from infra.settings import Settings
from tests.encryption import TEST_KEYRING_JSON
from tests.workflow.support import (
    REFUSED,
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
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Console:
    """A browser-like client of the console: cookies kept, CSRF token read from each page."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, tracking_id: str, handle: Any) -> None:
        self.http = http
        self.settings = settings
        self.tracking_id = tracking_id
        self.handle = handle
        self.issuer = LocalIssuer.for_settings(settings)

    async def csrf(self, path: str = "/ops/en/sign-in") -> str:
        page = await self.http.get(path)
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    async def sign_in(self, role: Role) -> httpx.Response:
        token = self.issuer.mint(f"{role.value}-1", role, timedelta(minutes=10))
        answer = await self.http.post(
            "/ops/en/sign-in", data={"token": token, "csrf_token": await self.csrf()}
        )
        assert answer.status_code == 303, answer.text
        return answer

    def audit(self) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in AuditTrail(self.settings.audit_path).entries()]


@pytest.fixture
async def console(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Console]:
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["sin"].script["submit"] = [NeedsAttentionError("name_mismatch", REFUSED)]
    settings = Settings(
        environment="test",
        data_dir=tmp_path / "data",
        api_url=API,
        temporal_namespace=dev_env.client.namespace,
        task_queue_prefix=prefix,
        encryption_keys=TEST_KEYRING_JSON,
        legacy_systems={},
    )
    async with running_workers(dev_env.client, adapters, prefix, search_attributes=True):
        handle = await start_bundle(dev_env.client, plan(), prefix, search_attributes=True)
        await wait_for(handle, lambda s: step(s, "sin").state is StepState.NEEDS_ATTENTION)
        intake = Intake(dev_env.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
        app = create_app(settings, intake=intake)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
            yield Console(http, settings, handle.id, handle)


async def test_sign_in_needs_csrf_and_a_valid_token_and_keeps_only_a_sealed_cookie(console: Console) -> None:
    assert (await console.http.get("/ops/en/")).headers["location"] == "/ops/en/sign-in"
    token = console.issuer.mint("operator-1", Role.OPERATOR, timedelta(minutes=10))
    forged = await console.http.post("/ops/en/sign-in", data={"token": token, "csrf_token": "x" * 43})
    assert forged.status_code == 403
    assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")

    refused = await console.http.post(
        "/ops/en/sign-in", data={"token": "not-a-jwt", "csrf_token": await console.csrf()}
    )
    assert refused.status_code == 401
    assert "This token was refused" in refused.text
    # As with the API: a refusal without an identity is logged, not audited (no one can grow the trail).
    assert console.audit() == []

    answer = await console.sign_in(Role.OPERATOR)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ops" in cookie
    assert token.split(".")[1] not in cookie and "operator-1" not in cookie  # sealed, not signed
    assert (await console.http.get("/ops/en/")).status_code == 200
    assert [(e["action"], e["subject"], e["outcome"]) for e in console.audit()] == [
        ("console.sign_in", "operator-1", "accepted")
    ]

    out = await console.http.post("/ops/en/sign-out", data={"csrf_token": await console.csrf("/ops/en/")})
    assert out.status_code == 303
    assert (await console.http.get("/ops/en/")).status_code == 303


async def test_viewer_sees_no_personal_data_and_refusals_are_audited(console: Console) -> None:
    await console.sign_in(Role.VIEWER)
    page = f"/ops/fr/bundles/{console.tracking_id}"
    timeline = await console.http.get(page)
    assert timeline.status_code == 200
    assert "Données que cette étape envoie" not in timeline.text
    assert "Bélanger" not in timeline.text and "?personal=1" not in timeline.text
    assert 'name="action"' not in timeline.text  # no action forms for a viewer

    personal = await console.http.get(page, params={"personal": "1"})
    token = await console.csrf(page)
    retry = await console.http.post(
        f"{page}/actions",
        data={"action": "retry", "step_id": "sin", "reason": "name fixed", "csrf_token": token},
    )
    amend = await console.http.get(f"{page}/steps/sin/amend")
    assert [personal.status_code, retry.status_code, amend.status_code] == [403, 403, 403]
    assert "Non permis" in personal.text

    denied = [
        (e["action"], e["subject"], e["role"], e["bundle"], e["reason"])
        for e in console.audit()
        if e["outcome"] == "denied"
    ]
    assert denied == [
        ("view.personal_data", "viewer-1", "viewer", console.tracking_id, None),
        ("retry", "viewer-1", "viewer", console.tracking_id, "name fixed"),
        ("view.personal_data", "viewer-1", "viewer", console.tracking_id, None),
    ]
    assert (await console.handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION


async def test_operator_views_data_and_retries_audited_like_the_api(console: Console) -> None:
    await console.sign_in(Role.OPERATOR)
    page = f"/ops/en/bundles/{console.tracking_id}"
    shown = await console.http.get(page, params={"personal": "1"})
    assert shown.status_code == 200 and "Data this step sends" in shown.text

    token = await console.csrf(page)
    blank = await console.http.post(
        f"{page}/actions", data={"action": "retry", "step_id": "sin", "reason": " ", "csrf_token": token}
    )
    assert blank.status_code == 422
    assert "gcds-error-summary" in blank.text and "#reason-sin" in blank.text

    retried = await console.http.post(
        f"{page}/actions",
        data={"action": "retry", "step_id": "sin", "reason": "name fixed at ESDC", "csrf_token": token},
    )
    assert retried.status_code == 303
    assert retried.headers["location"] == f"{page}?done=retry"
    await wait_for(console.handle, lambda s: step(s, "sin").state is StepState.DONE)

    entries = [e for e in console.audit() if e["bundle"] == console.tracking_id]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("view.personal_data", "accepted"),
        ("retry", "accepted"),
    ]
    retry = entries[1]
    assert (retry["subject"], retry["role"], retry["step"], retry["reason"]) == (
        "operator-1",
        "operator",
        "sin",
        "name fixed at ESDC",
    )
    assert retry["before"] == {"state": "needs_attention"} and retry["after"]["state"]
