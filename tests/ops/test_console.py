"""The ops console's pages over HTTP, on a real Temporal dev server with the local issuer.

One bundle waits for an operator (the SIN system asked about a name). Signing in needs the CSRF
token and a valid token, and leaves only a sealed cookie; a viewer reads the list and timeline
without the steps' data and is refused data and actions, each refusal in the audit trail; an
operator's view of the data and their retry are audited like the API's; an operator may preview
a bulk action, a supervisor runs it on the previewed targets only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
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
    ScriptedAdapter,
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
TARGET = re.compile(r'name="target" value="([^"]+)"')


class Console:
    """A browser-like client of the console: cookies kept, CSRF token read from each page."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        tracking_id: str,
        handle: Any,
        *,
        client: Client,
        adapters: dict[str, ScriptedAdapter],
    ) -> None:
        self.http = http
        self.settings = settings
        self.tracking_id = tracking_id
        self.handle = handle
        self.client = client
        self.adapters = adapters
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
            yield Console(http, settings, handle.id, handle, client=dev_env.client, adapters=adapters)


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


SHARED_FIELDS = (
    "subject",
    "role",
    "action",
    "outcome",
    "bundle",
    "step",
    "system",
    "reason",
    "before",
    "after",
)
"""What an audit entry says, without its time and its place in the chain."""


def said(entry: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(entry[name] for name in SHARED_FIELDS)


async def listed(console: Console, path: str, tracking_id: str | None = None) -> httpx.Response:
    """The stuck list once the bundle shows in it (search attributes lag by a second or two)."""
    tracking_id = tracking_id or console.tracking_id
    for _ in range(60):
        page = await console.http.get(path)
        if f"bundle-{tracking_id}" in page.text:
            return page
        await asyncio.sleep(0.25)
    pytest.fail(f"{tracking_id} never appeared in {path}")


async def test_operator_previews_a_bulk_action_but_only_a_supervisor_runs_it_or_pauses(
    console: Console,
) -> None:
    await console.sign_in(Role.OPERATOR)
    stuck = await listed(console, "/ops/en/?system=sin")
    assert 'id="bulk-link"' in stuck.text  # an operator may preview, as the API's dry run allows
    assert 'href="/ops/en/systems"' in stuck.text  # every role reads the systems' health
    assert (await console.http.get("/ops/en/bulk", params={"system": "sin"})).status_code == 200

    token = await console.csrf("/ops/en/")
    form = {"action": "retry", "filter_system": "sin", "reason": "after the outage", "csrf_token": token}
    preview = await console.http.post("/ops/en/bulk/preview", data=form)
    assert preview.status_code == 200, preview.text
    assert 'id="bulk-supervisor-only"' in preview.text or 'id="bulk-nothing"' in preview.text
    assert "bulk-confirm" not in preview.text and 'name="target"' not in preview.text
    run = await console.http.post("/ops/en/bulk/run", data={**form, "target": f"{console.tracking_id}/sin"})
    systems = await console.http.get("/ops/en/systems")
    assert systems.status_code == 200 and 'id="system-esdc-sin"' in systems.text
    assert "/systems/pause" not in systems.text and "/systems/resume" not in systems.text
    pause = await console.http.post(
        "/ops/en/systems/pause", data={"system": "esdc-sin", "reason": "planned", "csrf_token": token}
    )
    resume = await console.http.post(
        "/ops/en/systems/resume", data={"system": "esdc-sin", "csrf_token": token}
    )
    assert [run.status_code, pause.status_code, resume.status_code] == [403] * 3
    assert "a supervisor can" in pause.text and "a supervisor can" in run.text

    decided = [
        (e["action"], e["outcome"], e["role"], e["system"], e["reason"], e["detail"])
        for e in console.audit()
        if e["action"] != "console.sign_in"
    ]
    assert decided == [
        ("bulk.retry.dry_run", "accepted", "operator", "sin", "after the outage", None),
        ("bulk.retry", "denied", "operator", "sin", "after the outage", "role_too_low"),
        ("pause", "denied", "operator", "esdc-sin", "planned", "role_too_low"),
        ("resume", "denied", "operator", "esdc-sin", "resumed", "role_too_low"),
    ]
    assert (await console.handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION


async def test_supervisor_previews_then_runs_a_bulk_retry_audited_like_the_api(console: Console) -> None:
    await console.sign_in(Role.SUPERVISOR)
    stuck = await listed(console, "/ops/en/?system=sin&reason=needs_attention")
    assert 'href="/ops/en/bulk?system=sin&amp;reason=needs_attention"' in stuck.text
    form_page = await console.http.get("/ops/en/bulk", params={"system": "sin", "reason": "needs_attention"})
    assert form_page.status_code == 200
    assert 'name="filter_system" value="sin"' in form_page.text  # the filter goes back in the body
    token = CSRF.search(form_page.text).group(1)  # type: ignore[union-attr]
    form = {
        "action": "retry",
        "filter_system": "sin",
        "filter_reason": "needs_attention",
        "reason": "SIN system back after the outage",
        "csrf_token": token,
    }

    forged = await console.http.post("/ops/en/bulk/preview", data={**form, "csrf_token": "x" * 43})
    blank = await console.http.post("/ops/en/bulk/preview", data={**form, "reason": ""})
    slow = await console.http.post("/ops/en/bulk/preview", data={**form, "rate": "0"})
    assert [forged.status_code, blank.status_code, slow.status_code] == [403, 422, 422]
    assert "#reason-bulk" in blank.text and "#rate" in slow.text

    preview = await console.http.post("/ops/en/bulk/preview", data=form)
    assert preview.status_code == 200, preview.text
    assert f'id="target-{console.tracking_id}-sin"' in preview.text and 'data-count="1"' in preview.text
    assert "Nothing has been done yet" in preview.text
    assert (await console.handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION

    # The API's dry run of the same selection, for the audit entries to be compared.
    bearer = console.issuer.mint("supervisor-1", Role.SUPERVISOR, timedelta(minutes=10))
    api = await console.http.post(
        "/api/v1/ops/bulk",
        headers={"Authorization": f"Bearer {bearer}"},
        json={
            "action": "retry",
            "filter": {"system": "sin", "reason": "needs_attention"},
            "reason": form["reason"],
            "dry_run": True,
        },
    )
    assert api.status_code == 200 and len(api.json()["targets"]) == 1

    pinned = TARGET.findall(preview.text)
    assert pinned == [f"{console.tracking_id}/sin"]
    run = await console.http.post("/ops/en/bulk/run", data={**form, "rate": "20", "target": pinned})
    assert run.status_code == 200, run.text
    assert f'id="outcome-{console.tracking_id}-sin" data-accepted="true"' in run.text
    assert '<dd id="bulk-accepted">1</dd>' in run.text and '<dd id="bulk-refused">0</dd>' in run.text
    await wait_for(console.handle, lambda s: step(s, "sin").state is StepState.DONE)

    entries = [e for e in console.audit() if e["action"] != "console.sign_in"]
    # Each bundle's entry is written as it is acted on; the run's own entry comes last.
    console_preview, api_preview, retry, bulk_run = entries
    assert said(console_preview) == said(api_preview)
    assert console_preview["action"] == "bulk.retry.dry_run" and console_preview["outcome"] == "accepted"
    assert console_preview["before"] == {
        "filter": {"system": "sin", "reason": "needs_attention", "limit": 100}
    }
    assert console_preview["after"] == {"targets": 1, "accepted": 0, "refused": 0}
    assert (bulk_run["action"], bulk_run["system"], bulk_run["after"]) == (
        "bulk.retry",
        "sin",
        {"targets": 1, "accepted": 1, "refused": 0},
    )
    assert (retry["action"], retry["outcome"], retry["bundle"], retry["step"], retry["detail"]) == (
        "retry",
        "accepted",
        console.tracking_id,
        "sin",
        "part of bulk.retry",
    )
    assert retry["before"] == {"state": "needs_attention"}


async def test_a_confirmed_run_acts_only_on_the_previewed_targets(console: Console) -> None:
    """A bundle stuck between the preview and the confirmation is left alone; a pinned target the
    filter no longer selects is reported refused and not touched (the API's explicit targets)."""
    await console.sign_in(Role.SUPERVISOR)
    await listed(console, "/ops/en/?system=sin")
    token = await console.csrf("/ops/en/")
    form = {"action": "retry", "filter_system": "sin", "reason": "SIN back", "csrf_token": token}
    preview = await console.http.post("/ops/en/bulk/preview", data=form)
    pinned = TARGET.findall(preview.text)
    assert pinned == [f"{console.tracking_id}/sin"]

    # After the preview, a second bundle gets stuck on the same system and shows in the list.
    console.adapters["sin"].script["submit"].append(NeedsAttentionError("name_mismatch", REFUSED))
    late = await start_bundle(
        console.client, plan(), console.settings.task_queue_prefix, search_attributes=True
    )
    await wait_for(late, lambda s: step(s, "sin").state is StepState.NEEDS_ATTENTION)
    await listed(console, "/ops/en/?system=sin", late.id)

    forged = await console.http.post("/ops/en/bulk/run", data={**form, "target": "not-an-id/sin"})
    assert forged.status_code == 404
    run = await console.http.post("/ops/en/bulk/run", data={**form, "target": pinned})
    assert run.status_code == 200, run.text
    assert f'id="outcome-{console.tracking_id}-sin" data-accepted="true"' in run.text
    assert late.id not in run.text
    await wait_for(console.handle, lambda s: step(s, "sin").state is StepState.DONE)

    # The API pinned to the first bundle, now done: refused as no longer selected; neither touched.
    bearer = console.issuer.mint("supervisor-1", Role.SUPERVISOR, timedelta(minutes=10))
    api = await console.http.post(
        "/api/v1/ops/bulk",
        headers={"Authorization": f"Bearer {bearer}"},
        json={
            "action": "retry",
            "filter": {"system": "sin"},
            "reason": "again",
            "dry_run": False,
            "targets": [{"tracking_id": console.tracking_id, "step_id": "sin"}],
        },
    )
    assert api.status_code == 200, api.text
    report = api.json()
    assert (len(report["targets"]), report["accepted"], report["refused"]) == (0, 0, 1)
    assert report["outcomes"][0]["message"].startswith("not selected any more")
    late_status = await late.query(BundleWorkflow.status)
    assert step(late_status, "sin").state is StepState.NEEDS_ATTENTION and late_status.actions == []

    runs = [(e["action"], e["after"]) for e in console.audit() if e["action"] == "bulk.retry"]
    assert runs == [
        ("bulk.retry", {"targets": 1, "accepted": 1, "refused": 0}),
        ("bulk.retry", {"targets": 0, "accepted": 0, "refused": 1}),
    ]
    touched = [(e["bundle"], e["outcome"]) for e in console.audit() if e["action"] == "retry"]
    assert touched == [(console.tracking_id, "accepted"), (console.tracking_id, "failed")]


async def test_supervisor_pauses_and_resumes_a_system_audited_like_the_api(console: Console) -> None:
    await console.sign_in(Role.SUPERVISOR)
    page = await console.http.get("/ops/fr/systems")
    assert page.status_code == 200
    assert 'id="system-esdc-sin" data-paused="false"' in page.text
    assert "aucune tentative n'est comptée" in page.text  # what pausing does, in French
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]

    blank = await console.http.post("/ops/fr/systems/pause", data={"system": "esdc-sin", "csrf_token": token})
    unknown = await console.http.post(
        "/ops/fr/systems/pause", data={"system": "no-such-system", "reason": "x", "csrf_token": token}
    )
    assert [blank.status_code, unknown.status_code] == [422, 404]
    assert "#pause-reason" in blank.text

    paused = await console.http.post(
        "/ops/fr/systems/pause",
        data={"system": "esdc-sin", "reason": "maintenance planifiée", "csrf_token": token},
    )
    assert paused.status_code == 303
    assert paused.headers["location"] == "/ops/fr/systems?done=pause&system=esdc-sin"
    shown = await console.http.get(paused.headers["location"])
    assert 'id="system-esdc-sin" data-paused="true"' in shown.text
    assert 'id="resume-esdc-sin-rate"' in shown.text and "Les appels à esdc-sin sont suspendus" in shown.text
    again = await console.http.post(
        "/ops/fr/systems/pause", data={"system": "esdc-sin", "reason": "encore", "csrf_token": token}
    )
    assert again.status_code == 409 and "already paused" in again.text

    bad_rate = await console.http.post(
        "/ops/fr/systems/resume", data={"system": "esdc-sin", "rate": "vite", "csrf_token": token}
    )
    assert bad_rate.status_code == 422 and "#resume-esdc-sin-rate" in bad_rate.text
    resumed = await console.http.post(
        "/ops/fr/systems/resume",
        data={"system": "esdc-sin", "rate": "2,5", "reason": "de retour", "csrf_token": token},
    )
    assert resumed.status_code == 303
    after = await console.http.get(resumed.headers["location"])
    assert 'id="system-esdc-sin" data-paused="false"' in after.text

    # The API's pause of another system, for the audit entries to be compared.
    bearer = console.issuer.mint("supervisor-1", Role.SUPERVISOR, timedelta(minutes=10))
    api = await console.http.post(
        "/api/v1/ops/systems/on-mto/pause",
        headers={"Authorization": f"Bearer {bearer}"},
        json={"reason": "maintenance planifiée"},
    )
    assert api.status_code == 200

    entries = [e for e in console.audit() if e["action"] in {"pause", "resume"}]
    assert [(e["action"], e["outcome"], e["system"], e["reason"]) for e in entries] == [
        ("pause", "accepted", "esdc-sin", "maintenance planifiée"),
        ("pause", "failed", "esdc-sin", "encore"),
        ("resume", "accepted", "esdc-sin", "de retour"),
        ("pause", "accepted", "on-mto", "maintenance planifiée"),
    ]
    console_pause, conflict, resume, api_pause = entries
    assert console_pause["after"]["paused"] is True and console_pause["after"]["paused_by"] == "supervisor-1"
    assert console_pause.keys() == api_pause.keys()
    same = {"subject", "role", "action", "outcome", "reason", "before", "detail"}
    assert {k: console_pause[k] for k in same} == {k: api_pause[k] for k in same}
    assert "already paused" in conflict["detail"]
    assert resume["after"]["paused"] is False and resume["after"]["release_per_s"] == 2.5


async def test_an_amend_refused_for_want_of_a_reason_is_a_view_of_the_data_and_audited(
    console: Console,
) -> None:
    await console.sign_in(Role.OPERATOR)
    page = f"/ops/en/bundles/{console.tracking_id}"
    token = await console.csrf(page)  # the timeline without data: no view yet
    # Posted straight to the action (a stale form, a script): the page that comes back is filled
    # with the step's data, so it is a view of it like the amend page itself.
    answer = await console.http.post(f"{page}/steps/sin/amend", data={"reason": " ", "csrf_token": token})
    assert answer.status_code == 422 and "#reason-amend" in answer.text
    assert "Zoë-Chloé O&#39;Neil" in answer.text  # the stored data, which the browser did not post
    views = [
        (e["action"], e["outcome"], e["subject"], e["bundle"])
        for e in console.audit()
        if e["action"] == "view.personal_data"
    ]
    assert views == [("view.personal_data", "accepted", "operator-1", console.tracking_id)]
    assert (await console.handle.query(BundleWorkflow.status)).state is BundleState.NEEDS_ATTENTION


async def test_a_refusal_in_the_engines_words_is_marked_english_on_a_french_page(console: Console) -> None:
    await console.sign_in(Role.OPERATOR)
    page = f"/ops/fr/bundles/{console.tracking_id}"
    token = await console.csrf(page)
    answer = await console.http.post(
        f"{page}/actions",
        data={"action": "skip", "step_id": "nosuch", "reason": "tidy up", "csrf_token": token},
    )
    assert answer.status_code == 422
    # The summary and the field say it in French; the engine's own words follow, marked English.
    assert "Le dossier ne peut pas recevoir cette action maintenant." in answer.text
    assert '<span lang="en">no step &#39;nosuch&#39; in this bundle</span>' in answer.text
    assert answer.text.count("no step &#39;nosuch&#39;") == 1
