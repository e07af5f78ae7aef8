"""schemathesis against the public API's own OpenAPI document (`/api/v1/openapi.json`).

The real app (`create_app(settings, intake)`) with a real intake on the session's Temporal dev
server. For every operation, generated requests, valid and invalid by the document, must never
get a server error, and every answer must be documented: its status, its media type
(`application/problem+json` for problems) and its body's schema.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.api import SUBMISSIONS_PATH, create_app
from infra.intake import Intake
from infra.settings import Settings
from tests.fuzz.conftest import FuzzApi, end_bundles

pytestmark = pytest.mark.integration

# schemathesis reads the document when the module is collected (its fixture-based loader does
# not work with this pytest), before the dev server runs: the intake gets the server's client
# from the `connected` fixture, before any request is made.
SETTINGS = Settings(environment="test", task_queue_prefix=f"fuzz-{uuid.uuid4().hex[:8]}")
INTAKE = Intake(cast("Client", None), Catalogue.load(known_adapters=KNOWN_ADAPTERS), SETTINGS)
API = FuzzApi(create_app(SETTINGS, intake=INTAKE), INTAKE, SETTINGS)
SUBMIT = f"POST {SUBMISSIONS_PATH}"
ANSWERS: list[tuple[str, int]] = []
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", API.app)


@pytest.fixture(scope="module", autouse=True)
async def connected(dev_env: WorkflowEnvironment) -> AsyncIterator[None]:
    """The intake on the session's dev server; afterwards, every bundle the fuzzer started is ended."""
    INTAKE.client = dev_env.client
    yield
    assert API.started <= await end_bundles(dev_env.client, API)
    if ANSWERS:
        # The document names the catalogue's bundles, so generated submissions reach validation
        # instead of stopping at an unknown bundle id.
        assert (SUBMIT, 422) in ANSWERS, sorted(set(ANSWERS))


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_answer_documented(case: schemathesis.Case[Any]) -> None:
    response = case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
    ANSWERS.append((case.operation.label, response.status_code))
    if response.status_code == 202 and case.operation.label == SUBMIT:
        API.started.add(response.json()["tracking_id"])
