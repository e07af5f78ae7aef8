"""The contract kit run against each of the five adapters and the real sandbox process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.contract_kit import CHECKS, ContractCase, applicable_checks, call_context, run_contract
from adapters.registry import ADAPTER_TYPES, build_adapters
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import StepRequest
from infra.sandbox.client import SandboxAdmin
from infra.settings import Settings

pytestmark = pytest.mark.integration

SAMPLE = StepRequest(fields=NEWBORN_FIELDS)

PROBE_FIELDS = {
    "on-registrar-births": "child.surname",
    "on-certificates": "subject.surname",
    "esdc-sin": "child.last_name",
    "cra-aba": "child_surname",
    "resp-referral": "contact.last_name",
    "ottawa-welcome-baby": "parent.first_name",
}
"""A field of each system's own request format that the sample sets."""

CASES = [(system, check) for system, cls in ADAPTER_TYPES.items() for check in applicable_checks(cls)]


@pytest.fixture
async def admin(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox_url) as client:
        yield client


def case_for(system: str, sandbox_url: str, admin: SandboxAdmin) -> ContractCase:
    adapter = ADAPTER_TYPES[system](sandbox_url)  # type: ignore[call-arg]  # every shipped adapter takes a URL
    return ContractCase(
        adapter=adapter,
        admin=admin,
        sample=SAMPLE,
        probe_field=PROBE_FIELDS[system],
        key_prefix=f"contract-{uuid.uuid4().hex[:12]}:",
        dedupes=system != "resp-referral",
    )


@pytest.mark.parametrize(("system", "check"), CASES)
async def test_contract(system: str, check: str, sandbox_url: str, admin: SandboxAdmin) -> None:
    case = case_for(system, sandbox_url, admin)
    try:
        await CHECKS[check](case)
    finally:
        await admin.clear_faults(system)
        await case.adapter.aclose()


async def test_run_contract_runs_every_applicable_check(sandbox_url: str, admin: SandboxAdmin) -> None:
    case = case_for("on-certificates", sandbox_url, admin)
    try:
        assert await run_contract(case) == list(CHECKS)
    finally:
        await admin.clear_faults("on-certificates")
        await case.adapter.aclose()
    assert "compensation_is_idempotent" not in applicable_checks(ADAPTER_TYPES["cra-aba"])


async def test_a_newborn_fans_out_through_every_adapter(sandbox_url: str, admin: SandboxAdmin) -> None:
    """Registration first, then its number reaches the programs that need it; fees are charged once."""
    bundle = f"fanout-{uuid.uuid4().hex[:12]}"
    adapters = build_adapters(Settings(environment="test", sandbox_url=sandbox_url, legacy_systems={}))
    try:
        fields: dict[str, Any] = {k: v for k, v in SAMPLE.fields.items() if k != "references"}
        registered = await adapters["on-registrar-births"].submit(
            call_context(f"{bundle}:register:submit"), StepRequest(fields=fields)
        )
        fields["references"] = {"register": registered.reference}
        for system in ("on-certificates", "esdc-sin", "cra-aba", "resp-referral"):
            await adapters[system].submit(
                call_context(f"{bundle}:{system}:submit"), StepRequest(fields=fields)
            )

        (cra,) = await admin.ledger("cra-aba", key_prefix=bundle)
        assert cra["fields"]["registration_number"] == registered.reference
        assert "marital_status" not in str(cra["fields"])
        (sin,) = await admin.ledger("esdc-sin", key_prefix=bundle)
        assert sin["fields"]["province_registration_number"] == registered.reference
        (order,) = await admin.ledger("on-certificates", key_prefix=bundle)
        assert order["amount_cents"] == 7000
        (referral,) = await admin.ledger("resp-referral", key_prefix=bundle)
        assert "sin" not in str(referral["fields"])
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
