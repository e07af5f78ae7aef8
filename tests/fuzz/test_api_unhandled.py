"""An error no route expected: the resident gets a generic bilingual 500, never its text or a traceback.

The intake here fails on purpose with a message quoting a SIN, as an adapter's or a library's
exception might. The answer and the log must both be free of it; the answer and the log share a
correlation id, so support can find what happened.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from structlog.testing import capture_logs
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.api import create_app
from infra.intake import Accepted, Intake
from infra.records import RecordStoreUnavailable
from infra.settings import Settings

SIN = "046 454 286"
ROOT = Path(__file__).resolve().parents[2]


class FailingIntake(Intake):
    """An intake whose every operation fails with the given exception."""

    def __init__(self, error: Exception) -> None:
        # No Temporal client: every call that could reach one fails first.
        catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
        super().__init__(cast("Client", None), catalogue, Settings(environment="test"))
        self.error = error

    async def submit(self, bundle_id: str, raw: Mapping[str, Any], **_: Any) -> Accepted:
        raise self.error

    def check_access(self, tracking_id: str, code: str | None) -> bool:
        raise self.error


@pytest.fixture
def submission() -> bytes:
    data = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())["submission"]
    return json.dumps(data).encode()


async def client_for(intake: Intake) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(intake.settings, intake=intake)
    # The app's own answer is under test: nothing may escape to the transport.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as client:
        yield client


@pytest.fixture
async def failing_api() -> AsyncIterator[httpx.AsyncClient]:
    error = RuntimeError(f"registry refused resident with SIN {SIN}: <script>alert(1)</script>")
    async for client in client_for(FailingIntake(error)):
        yield client


async def test_an_unexpected_error_in_a_route_is_a_generic_problem_with_a_correlation_id(
    failing_api: httpx.AsyncClient, submission: bytes
) -> None:
    with capture_logs() as logs:
        response = await failing_api.post(
            "/api/v1/bundles/newborn-on/submissions",
            content=submission,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["detail"]["en"] and problem["detail"]["fr"]
    assert problem["errors"] == [{"path": "", "code": "internal_error", "message": problem["detail"]}]
    correlation_id = problem["correlation_id"]
    assert response.headers["x-correlation-id"] == correlation_id
    for leak in (SIN, SIN.replace(" ", ""), "RuntimeError", "Traceback", "registry refused", "<script"):
        assert leak not in response.text

    (logged,) = [e for e in logs if e["event"] == "api.unhandled_error"]
    assert logged["correlation_id"] == correlation_id
    assert logged["error"] == "RuntimeError"
    assert logged["route"] == "/api/v1/bundles/{bundle_id}/submissions"
    assert any("infra/api.py" in frame for frame in logged["frames"])
    assert SIN not in json.dumps(logs, default=str)


async def test_the_same_holds_on_another_route(failing_api: httpx.AsyncClient) -> None:
    response = await failing_api.get(
        "/api/v1/submissions/0b7e2f4a-5b8c-4d9e-8f10-111213141516", headers={"X-Access-Code": "AAAA-BBBB"}
    )
    assert response.status_code == 500
    assert SIN not in response.text and response.json()["correlation_id"]


async def test_temporal_out_of_reach_on_submit_is_a_503_to_retry_not_a_500(submission: bytes) -> None:
    error = RPCError(f"connection refused while starting bundle for {SIN}", RPCStatusCode.UNAVAILABLE, b"")
    async for api in client_for(FailingIntake(error)):
        response = await api.post(
            "/api/v1/bundles/newborn-on/submissions",
            content=submission,
            headers={"content-type": "application/json", "Idempotency-Key": "retry-me-1"},
        )
        assert response.status_code == 503
        assert "Idempotency-Key" in response.json()["detail"]["en"]
        assert SIN not in response.text


async def test_unreadable_bundle_records_on_submit_are_a_503_to_retry_not_a_500(submission: bytes) -> None:
    error = RecordStoreUnavailable(f"bundle records at /data/records/bundles.sqlite: locked ({SIN})")
    async for api in client_for(FailingIntake(error)):
        response = await api.post(
            "/api/v1/bundles/newborn-on/submissions",
            content=submission,
            headers={"content-type": "application/json", "Idempotency-Key": "retry-me-2"},
        )
        assert response.status_code == 503
        assert SIN not in response.text and "sqlite" not in response.text
