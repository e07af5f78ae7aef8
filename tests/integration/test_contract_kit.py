"""The integrator's kit against the real sandbox: it passes a good adapter and catches wrong ones.

Each wrong adapter below breaks one rule on purpose, the way adapters go wrong in practice; the
kit must fail it, on that rule, with a message that says what to fix.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from adapters.contract_kit import CheckResult, ContractSpec, applicable_checks, run_check
from adapters.contracts import CONTRACTS
from adapters.on_certificates import OntarioCertificateAdapter
from adapters.sdk import CallContext, RejectedError, StepRequest, SubmitResult, TransientError
from infra.cli import app
from infra.sandbox.client import SandboxAdmin
from tests.conftest import SandboxProcess

pytestmark = pytest.mark.integration

SPEC: ContractSpec = CONTRACTS["on-certificates"]


runner = CliRunner()


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch, sandbox: SandboxProcess) -> Iterator[None]:
    """The CLI in process, against the session's sandbox, with the adapters' logs kept out of its output.

    (The command sends them to stderr at error level; in process it must not reconfigure the tests' logging.)
    """
    monkeypatch.setenv("TELLONCE_SANDBOX_URL", sandbox.url)
    monkeypatch.setenv("TELLONCE_ENVIRONMENT", "test")
    monkeypatch.setattr("infra.logging.configure_logging", lambda *_args, **_kwargs: None)
    with structlog.testing.capture_logs():
        yield


def tellonce(*args: str) -> Result:
    """Run `tellonce` (in process: the same code path as the command, without its start-up time)."""
    return runner.invoke(app, list(args))


def report(result: Result) -> dict[str, Any]:
    """The JSON a `check --json` printed."""
    body: dict[str, Any] = json.loads(result.stdout)
    return body


@pytest.fixture
async def admin(sandbox: SandboxProcess) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox.url) as client:
        yield client


async def run(
    adapter_type: type[OntarioCertificateAdapter], check: str, sandbox: SandboxProcess, admin: SandboxAdmin
) -> CheckResult:
    async with SPEC.case(adapter_type, sandbox.settings(), admin) as case:
        return await run_check(case, check)


# --- deliberately wrong adapters ------------------------------------------------------------------


class NewKeyEveryCall(OntarioCertificateAdapter):
    """Makes up its own idempotency key per call: every retry is a new order (and a new fee)."""

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        own_key = f"{ctx.idempotency_key}-{uuid.uuid4().hex[:8]}"
        return await super().submit(dataclasses.replace(ctx, idempotency_key=own_key), request)


class RateLimitIsFinal(OntarioCertificateAdapter):
    """Treats the system's 429 as a refusal: the resident would be told no for a busy system."""

    async def call(
        self, ctx: CallContext, method: str, url: str, json: dict[str, Any] | None
    ) -> dict[str, Any]:
        try:
            return await super().call(ctx, method, url, json)
        except TransientError as exc:
            if exc.code != "rate_limited":
                raise
            raise RejectedError("rate_limited", exc.message, detail=exc.detail) from None


class SendsTheWholeProjection(OntarioCertificateAdapter):
    """Forwards everything it was given, not just what it maps: fields outside the step reach the system."""

    def to_request(self, ctx: CallContext, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().to_request(ctx, fields), "everything": dict(fields)}


class LeaksTheNameOnRefusal(OntarioCertificateAdapter):
    """Puts the child's name in a refusal's detail: it would land in logs and Temporal's history."""

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        try:
            return await super().submit(ctx, request)
        except RejectedError as exc:
            name = request.fields.get("child", {}).get("surname")
            raise RejectedError(exc.code, exc.message, detail=f"refused for {name}") from None


# --- the tests ------------------------------------------------------------------------------------


def test_a_shipped_rest_adapter_passes_every_check_through_the_cli(sandbox: SandboxProcess) -> None:
    result = tellonce("adapters", "check", "adapters.on_certificates", "--json")
    assert result.exit_code == 0, result.output
    body = report(result)
    assert body["passed"] is True
    assert body["system"] == "on-certificates"
    assert [check["name"] for check in body["checks"]] == applicable_checks(OntarioCertificateAdapter)
    assert all(check["passed"] for check in body["checks"])


async def test_an_adapter_that_makes_up_its_own_keys_fails_idempotency(
    sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    result = await run(NewKeyEveryCall, "idempotent_submit", sandbox, admin)
    assert not result.passed
    assert result.message.startswith("[idempotent_submit]")
    assert "recorded other keys instead" in result.message
    assert "send ctx.idempotency_key unchanged" in result.message


async def test_an_adapter_that_refuses_on_429_fails_the_rate_limit_check(
    sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    result = await run(RateLimitIsFinal, "rate_limit_is_transient", sandbox, admin)
    assert not result.passed
    assert "expected TransientError; got RejectedError('rate_limited')" in result.message
    assert "classify outages, timeouts, 5xx and 429 as TransientError" in result.message


async def test_an_adapter_that_sends_outside_its_projection_fails_minimisation(
    sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    result = await run(SendsTheWholeProjection, "projection_respected", sandbox, admin)
    assert not result.passed
    assert "[projection_respected]" in result.message
    assert "received an extra field's value" in result.message
    assert "FieldMap" in result.message


async def test_an_adapter_that_leaks_a_value_into_an_error_fails_and_the_message_does_not_repeat_it(
    sandbox: SandboxProcess, admin: SandboxAdmin
) -> None:
    result = await run(LeaksTheNameOnRefusal, "no_personal_data_in_errors", sandbox, admin)
    assert not result.passed
    assert "rejected: the error's detail holds 1 submitted value(s)" in result.message
    assert "Tremblay" not in result.message
    # The same adapter classifies every error correctly: only the leak is wrong.
    assert (await run(LeaksTheNameOnRefusal, "errors_are_classified", sandbox, admin)).passed


def test_new_then_check_round_trip(sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A scaffold is checked at once; until its system has a sandbox double it runs against another."""
    created = tellonce("adapters", "new", "demo-system", "--dir", str(tmp_path))
    assert created.exit_code == 0, created.output
    module = tmp_path / "adapters" / "demo_system.py"

    unknown = tellonce("adapters", "check", str(module), "--json")
    assert unknown.exit_code == 1
    (only,) = report(unknown)["checks"]
    assert only["name"] == "sandbox_has_system"
    assert "[unknown_system]" in only["message"]
    assert "--system" in only["message"]

    checked = tellonce("adapters", "check", str(module), "--system", "ottawa-welcome-baby")
    assert checked.exit_code == 0, checked.output
    assert "10 of 10 checks passed" in checked.stdout


def test_a_failed_check_exits_1_with_the_rule_in_the_table(sandbox: SandboxProcess, tmp_path: Path) -> None:
    module = tmp_path / "leaky.py"
    module.write_text(
        "from adapters.contracts import CONTRACTS\n"
        "from tests.integration.test_contract_kit import LeaksTheNameOnRefusal\n\n"
        "class Leaky(LeaksTheNameOnRefusal):\n"
        '    """The wrong adapter of the tests, in a file of its own as an integrator would write it."""\n\n'
        'CONTRACT = CONTRACTS["on-certificates"]\n'
    )
    result = tellonce("adapters", "check", str(module))
    assert result.exit_code == 1, result.output
    assert "no_personal_data_in_errors" in result.stdout
    assert "FAIL" in result.stdout
    assert "of 11 checks passed" in result.stdout
